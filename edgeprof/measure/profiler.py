"""The profiling loop: load each configuration in several fresh worker processes, warm each up
until the timings settle, then measure all processes of all configurations in interleaved rounds
(A1 B1 A2 B2 ... A1 B1 ...) so that drift of the machine hits them alike, until each
configuration's p50 is known to the precision asked (the stop rule). Produces ``latency``
records (raw samples + derived statistics)."""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from ..data import Dataset
from ..errors import EdgeprofError, WorkerError
from ..inputspec import InputSpec, worker_spec
from ..models import ModelRef
from ..results import RecordKey, ResultStore, new_record
from ..targets.client import WorkerClient
from .diagnose import diagnose
from .stats import StopRule, StopState, summarize
from .warmup import is_settled, window_for

Progress = Callable[[str, float], None]
MIN_ROUNDS = 5
GROWTH = 0.25  # each pass adds this share of what a configuration has measured


def cold_in_worker(cold_starts: int, processes: int) -> int:
    """How many of a configuration's latency processes are also its cold starts, on a target
    whose workers are local processes (``cold_start_in_worker``): a process started fresh at its
    configuration's turn, nothing else running, times exactly what a cold start times, from
    spawn to its first result, and then goes on measuring. Separate processes time the rest."""
    return min(cold_starts, max(1, processes))


class Target(Protocol):
    name: str

    def start_worker(self, label: str) -> WorkerClient: ...
    def stage(self, path: Path) -> str: ...


@dataclass(frozen=True)
class Settings:
    threads: tuple[int, ...] = (1,)
    batches: tuple[int, ...] | None = (1,)   # None: each model at its own batch (1 if dynamic)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    min_time_s: float = 0.2      # lower bound of measured time per configuration
    min_runs: int = 50
    max_runs: int = 10_000
    max_time_s: float = 10.0     # upper bound of measured time per configuration
    rel_ci: float = 0.01         # stop when the p50 CI half-width is this share of p50 (0: off)
    processes: int = 3           # fresh worker processes per configuration
    warmup_max_s: float = 10.0
    round_s: float = 0.2
    seed: int = 0
    op_profile: bool = False
    op_profile_runs: int = 50
    cold_starts: int = 3
    runtime: str | None = None
    # {"below_c": 55} or {"wait_s": 30} (measure.sustained.parse_cooldown): configurations are
    # then measured one at a time, each after its cool-down, instead of interleaved
    cooldown: dict[str, Any] | None = None

    @property
    def stop_rule(self) -> StopRule:
        return StopRule(rel_ci=self.rel_ci, min_time_s=self.min_time_s,
                        max_time_s=max(self.max_time_s, self.min_time_s),
                        min_runs=self.min_runs, max_runs=self.max_runs)


@dataclass
class _Proc:
    """One worker process of a configuration: started fresh (a new interpreter, never a fork)."""
    index: int
    worker: WorkerClient | None = None
    load: dict[str, Any] = field(default_factory=dict)
    warmup: list[float] = field(default_factory=list)
    settled: bool = False
    samples: list[float] = field(default_factory=list)
    last_round: int = 0
    peak_rss: int | None = None
    cold: bool = False   # started at its configuration's turn, on a quiet machine: a cold start


@dataclass
class _Run:
    """One configuration being measured (model x threads x batch) and its worker processes."""
    model: ModelRef
    threads: int
    batch: int
    procs: list[_Proc] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)     # every process's, in round order
    rounds: list[int] = field(default_factory=list)
    process_of_round: list[int] = field(default_factory=list)
    io_samples: list[float] = field(default_factory=list)
    series: list[list[Any]] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    ops: dict[str, Any] | None = None
    cold: dict[str, list[float]] | None = None
    cooldown: dict[str, Any] | None = None
    error: str | None = None
    stop: StopState = field(default_factory=lambda: StopState(False))

    @property
    def label(self) -> str:
        return f"{self.model.name} t={self.threads} b={self.batch}"

    @property
    def load(self) -> dict[str, Any]:
        return self.procs[0].load if self.procs else {}

    def groups(self) -> list[list[float]]:
        return [p.samples for p in self.procs]


def _compact(snap: dict[str, Any]) -> list[Any]:
    """[t_unix_s, max temperature C, mean frequency Hz, throttled value] for plots over time."""
    temps = list((snap.get("temp_c") or {}).values())
    freqs = [f for f in (snap.get("cur_hz") or {}).values() if f]
    thr = (snap.get("throttled") or {}).get("value")
    return [snap.get("t_unix_s"), max(temps) if temps else None,
            sum(freqs) / len(freqs) if freqs else None, thr]


def _keep_snapshot(run: _Run, snap: dict[str, Any]) -> None:
    run.series.append(_compact(snap))
    if not run.snapshots or snap.get("throttled") or snap.get("cur_hz"):
        run.snapshots.append(snap)


class Profiler:
    def __init__(self, target: Target, settings: Settings, store: ResultStore | None = None,
                 data: Dataset | None = None, spec: InputSpec | None = None,
                 progress: Progress | None = None, keep_workers: int = 0):
        self.target, self.s = target, settings
        # up to this many workers of configurations measured without error are left running in
        # ``kept`` for the caller (an untimed phase next, e.g. accuracy), instead of closed
        self.keep_workers, self.kept = keep_workers, []
        self.store = store or ResultStore(None)
        self.data, self.spec = data, spec
        self.progress = progress or (lambda desc, frac: None)
        self.env: dict[str, Any] | None = None
        self._scratch = tempfile.TemporaryDirectory(prefix="edgeprof-")

    # -- public -------------------------------------------------------------------------------
    def batches_for(self, model: ModelRef) -> tuple[int, ...]:
        """The batches given, else the model's own: a fixed-batch model measured as it is."""
        if self.s.batches:
            return self.s.batches
        from ..modelinfo import model_batch
        return (model_batch(model.path) or 1,)

    def key(self, model: ModelRef, threads: int, batch: int) -> tuple:
        return RecordKey.latency(model.id, self.target.name, threads, batch,
                                 self.data.sha256 if self.data else None)

    def run(self, models: list[ModelRef]) -> tuple[list[dict[str, Any]], list[str]]:
        """Measure every configuration not already in the store. Returns (records, skipped)."""
        runs, skipped = [], []
        n_cold = self._cold_in_worker()
        for m in models:
            batches = self.batches_for(m)  # reads the model file once, not per thread count
            for t in self.s.threads:
                for b in batches:
                    r = _Run(m, t, b, procs=[_Proc(i, cold=i < n_cold)
                                             for i in range(max(1, self.s.processes))])
                    (skipped.append(r.label) if self.store.has(self.key(m, t, b)) else runs.append(r))
        records: list[dict[str, Any]] = []
        self._n_total = max(1, len(runs))
        completed = False
        try:
            self._spawn(runs)
            first = next((p.worker for r in runs for p in r.procs if p.worker is not None), None)
            if first is not None and self.s.cooldown:  # a temperature needs a sensor: ask now
                from .sustained import check_cooldown
                check_cooldown(first, self.s.cooldown, self.target.name)
            for i, r in enumerate(runs):
                self.progress(f"loading {r.label}", i / self._n_total * 0.1)
                self._start(r, records)
            live = [r for r in runs if r.error is None]
            if self.s.cooldown:  # heat from one configuration must not penalise the next
                for i, r in enumerate(live):
                    r.cooldown = self._cool_down(r)
                    self._warm_all(r, i, len(live), records)
                    if r.error is None:
                        self._measure([r], records)
            else:
                for i, r in enumerate(live):
                    self._warm_all(r, i, len(live), records)
                self._measure([r for r in live if r.error is None], records)
            completed = True
        finally:
            for r in runs:
                for p in r.procs:
                    if p.worker is None:
                        continue
                    if (completed and r.error is None and not p.worker.closed
                            and len(self.kept) < self.keep_workers):
                        self.kept.append(p.worker)
                    else:
                        p.worker.close()
            self._scratch.cleanup()
        self.progress("done", 1.0)
        return records, skipped

    # -- phases -------------------------------------------------------------------------------
    def _inputs(self) -> dict[str, Any]:
        if self.data is None:
            return {"synthetic": {"seed": self.s.seed}}
        path = self.data.npz_path(Path(self._scratch.name))
        return {"npz": self.target.stage(path), "start": 0}

    def _load_args(self, r: _Run) -> dict[str, Any]:
        raw_dtype = next(iter(self.data.x.values())).dtype.name if self.data else "float32"
        spec = self.spec
        if spec is None and r.model.input_spec is not None and self.data is not None:
            spec = InputSpec.from_dict(r.model.input_spec)  # the variant's own (e.g. NHWC TFLite)
        return dict(path=self.target.stage(r.model.path), runtime=self.s.runtime,
                    threads=r.threads, batch=r.batch, shapes=self.s.shapes,
                    inputs=self._inputs(), spec=worker_spec(spec, raw_dtype))

    def _cold_in_worker(self) -> int:
        if not getattr(self.target, "cold_start_in_worker", False):
            return 0
        return cold_in_worker(self.s.cold_starts, self.s.processes)

    def _spawn(self, runs: list[_Run]) -> None:
        """Start the worker processes two at a time (interpreter and numpy start-up, nothing
        measured yet); loading stays sequential because session and first-inference times are
        measured during the load. Every process is a new interpreter from the target's client,
        never a fork, so each gets its own memory layout as a deployed process would."""
        from concurrent.futures import ThreadPoolExecutor

        def spawn(rp: tuple[_Run, _Proc]) -> None:
            try:
                rp[1].worker = self.target.start_worker(self._proc_label(*rp))
                # the runtime's import too (nothing is timed yet; load counts memory from
                # before it): loading, which runs one process at a time, is left with the session
                rp[1].worker.request("import", runtime=self.s.runtime or (
                    "litert" if rp[0].model.format == "tflite" else "onnxruntime"))
            except EdgeprofError:
                if rp[1].worker is not None:
                    rp[1].worker.close()
                rp[1].worker = None  # _start tries again and records the error
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(spawn, [(r, p) for r in runs for p in r.procs if not p.cold]))

    @staticmethod
    def _proc_label(r: _Run, p: _Proc) -> str:
        return r.label if p.index == 0 else f"{r.label} #{p.index + 1}"   # the first keeps the name

    def _start(self, r: _Run, records: list[dict[str, Any]]) -> None:
        try:
            for p in r.procs:
                if p.cold:
                    self.progress(f"cold start {r.label}", 0.1)
                    self._start_cold(r, p)
                else:
                    if p.worker is None:
                        p.worker = self.target.start_worker(self._proc_label(r, p))
                    p.load = p.worker.request("load", **self._load_args(r))
                if self.env is None:
                    self.env = p.worker.request("env")["env"]
                p.peak_rss = p.load.get("peak_rss_bytes")
            if self.s.op_profile:
                self.progress(f"operator profile {r.label}", 0.1)
                self._op_profile(r)
            if self.s.cold_starts > sum(p.cold for p in r.procs):
                self.progress(f"cold start {r.label}", 0.1)
                self._cold_start(r)
        except EdgeprofError as exc:
            r.error = str(exc)
            records.append(self._error_record(r))

    def _round(self, r: _Run, p: _Proc, n: int, io_runs: int = 0) -> list[float]:
        assert p.worker is not None
        reply = p.worker.request("round", n=n, io_runs=io_runs)
        _keep_snapshot(r, reply["before"])
        _keep_snapshot(r, reply["after"])
        r.io_samples.extend(reply.get("io_samples_s", []))
        p.peak_rss = reply.get("peak_rss_bytes") or p.peak_rss
        return reply["samples_s"]

    def _warm_all(self, r: _Run, i: int, n_live: int, records: list[dict[str, Any]]) -> None:
        for p in r.procs:
            if r.error is None:
                self._warm_up(r, p, i, n_live)
        if r.error:
            records.append(self._error_record(r))

    def _cool_down(self, r: _Run) -> dict[str, Any] | None:
        """Wait until the target is under the temperature (or for the time) before measuring
        this configuration; a temperature on a target without a sensor is refused."""
        from .sustained import cool_down
        self.progress(f"cooling down before {r.label}", 0.2)
        return cool_down(r.procs[0].worker, self.s.cooldown, self.target.name)

    def _warm_up(self, r: _Run, p: _Proc, i: int, n_live: int) -> None:
        first = p.load.get("first_inference_s") or 1e-3
        spent = 0.0
        try:
            probe = self._round(r, p, 1)
            p.warmup.extend(probe)
            window = window_for(probe[0] or first)
            while not is_settled(p.warmup, window=window):
                if spent >= self.s.warmup_max_s:
                    return
                chunk = self._round(r, p, window)
                p.warmup.extend(chunk)
                spent += sum(chunk)
                frac = (p.index + min(1.0, spent / max(self.s.warmup_max_s, 1e-9))) / len(r.procs)
                self.progress(f"warming up {self._proc_label(r, p)}", 0.1 + 0.1 * (i + frac) / n_live)
            p.settled = True
        except WorkerError as exc:
            r.error = str(exc)

    def _measure(self, live: list[_Run], records: list[dict[str, Any]]) -> None:
        """Rounds interleave processes and configurations (A1 B1 A2 B2 ...); after each pass
        over its processes, a configuration's stop rule is checked (a bootstrap of a few ms,
        never per sample)."""
        s = self.s
        rule = s.stop_rule
        pending = list(live)
        while pending:
            for k in range(max(len(r.procs) for r in pending)):
                for r in list(pending):
                    if k >= len(r.procs) or r.error is not None:
                        continue
                    p = r.procs[k]
                    recent = p.samples[-p.last_round:] if p.last_round else p.warmup[-5:]
                    est = sorted(recent)[len(recent) // 2] if recent else 1e-3
                    n = self._round_size(r, est)
                    io = (min(50, max(5, n)) if not r.rounds and r.load.get("runtime") != "onnxruntime"
                          else 0)
                    try:
                        got = self._round(r, p, n, io_runs=io)
                    except WorkerError as exc:
                        r.error = str(exc)
                        records.append(self._error_record(r))
                        pending.remove(r)
                        continue
                    p.samples.extend(got)
                    p.last_round = len(got)
                    r.samples.extend(got)
                    r.rounds.append(len(got))
                    r.process_of_round.append(p.index)
            for r in list(pending):
                r.stop = rule.check(r.groups(), seed=s.seed)
                if r.stop.done:
                    pending.remove(r)
                    rec = self._latency_record(r)
                    self.store.append(rec)
                    records.append(rec)
            done = sum(1.0 if r not in pending else self._fraction(r) for r in live)
            label = pending[0].label if pending else "finishing"
            self.progress(f"measuring {label}", 0.2 + 0.75 * done / max(1, len(live)))

    def _fraction(self, r: _Run) -> float:
        """Progress of a configuration still measured: its lower bounds are half the way, the
        rest is how close its CI is to the target (the end is not known in advance)."""
        s, t, n = self.s, sum(r.samples), len(r.samples)
        lower = min(1.0, t / max(s.min_time_s, 1e-9), n / max(s.min_runs, 1))
        upper = max(t / max(s.max_time_s, 1e-9), n / s.max_runs)
        reached = r.stop.reached_rel_ci
        precision = min(1.0, s.rel_ci / reached) if reached and s.rel_ci > 0 else 0.0
        return min(0.99, max(upper, 0.5 * lower + 0.5 * precision * (lower >= 1.0)))

    def _round_size(self, r: _Run, est_s: float) -> int:
        """Runs in a process's next round: ``min_time / MIN_ROUNDS`` of work at first, then a
        quarter of what the configuration has measured so far (split over its processes), at
        most ``round_s``, never more than 1/MIN_ROUNDS of ``max_runs`` nor past ``max_time``.
        Every configuration is measured over several interleaved rounds, and the stop rule,
        checked after each pass, is checked about log(n) times instead of n times (each check
        is a bootstrap), for at most a quarter more samples than the rule needed."""
        s = self.s
        measured_s = float(sum(r.samples))
        base_s = min(s.round_s, max(s.min_time_s / MIN_ROUNDS, 1e-3))
        grown_s = GROWTH * measured_s / max(1, len(r.procs))
        left_s = (s.max_time_s - measured_s) / max(1, len(r.procs))
        per_round_s = max(base_s, min(s.round_s, grown_s, left_s))
        cap = min(max(1, -(-s.max_runs // MIN_ROUNDS)), s.max_runs - len(r.samples))
        return max(1, min(int(per_round_s / max(est_s, 1e-9)), cap))

    def _start_cold(self, r: _Run, p: _Proc) -> None:
        """Start a latency process now and time it as a cold start: spawn, interpreter and
        numpy, the runtime's import, the session, one batch of data and the first inference,
        ``total_s`` from spawn to the first result as the host sees it."""
        start = getattr(self.target, "start_cold_worker", self.target.start_worker)
        t0 = time.perf_counter()
        p.worker = start(self._proc_label(r, p))
        p.load = p.worker.request("load", **self._load_args(r))
        total_s = time.perf_counter() - t0
        got = {"numpy_import_s": p.worker.hello.get("numpy_import_s"),
               "runtime_import_s": p.load.get("runtime_import_s"),
               "session_s": p.load.get("session_s"),
               "first_inference_s": p.load.get("first_inference_s"),
               "in_process_s": p.load.get("in_process_s"),
               "peak_rss_bytes": p.load.get("peak_rss_bytes"), "total_s": total_s}
        r.cold = r.cold or {}
        for k, v in got.items():
            r.cold.setdefault(k, []).append(v)

    def _cold_start(self, r: _Run) -> None:
        """Fresh processes, each importing the runtime, loading the model and running one
        inference: what a user meets at start-up, apart from warm latency (those that the
        configuration's own latency processes did not time already)."""
        cold: dict[str, list[float]] = r.cold or {}
        args = dict(path=self.target.stage(r.model.path), runtime=self.s.runtime,
                    threads=r.threads, batch=r.batch, shapes=self.s.shapes)
        for _ in range(self.s.cold_starts - sum(p.cold for p in r.procs)):
            for k, v in self.target.cold_start(args).items():
                cold.setdefault(k, []).append(v)
        r.cold = cold

    def _op_profile(self, r: _Run) -> None:
        """Operator times from a separate profiling session, run and closed before measuring,
        so profiling never slows the measured samples."""
        try:
            w = self.target.start_worker(r.label + " (op profile)")
            try:
                w.request("load", op_profile=True, **self._load_args(r))
                w.request("round", n=self.s.op_profile_runs)
                r.ops = dict(w.request("ops")["ops"], runs=self.s.op_profile_runs + 1)
            finally:
                w.close()
        except WorkerError as exc:
            r.ops = {"available": False, "reason": str(exc)}

    # -- records ------------------------------------------------------------------------------
    def _base(self, r: _Run) -> dict[str, Any]:
        return dict(variant_id=r.model.id, root_id=r.model.root_id or r.model.id,
                    target=self.target.name, threads=r.threads,
                    batch=r.batch, data_sha256=self.data.sha256 if self.data else None,
                    model={"name": r.model.name, "path": str(r.model.path), "sha256": r.model.sha256,
                           "format": r.model.format, "model_bytes": r.model.model_bytes,
                           "zlib_bytes": r.model.zlib_bytes})

    def _error_record(self, r: _Run) -> dict[str, Any]:
        rec = new_record("error", **self._base(r), error=r.error, phase="latency")
        self.store.append(rec)
        return rec

    def _latency_record(self, r: _Run) -> dict[str, Any]:
        stats = summarize(r.samples, groups=r.groups() if len(r.procs) > 1 else None,
                          seed=self.s.seed)
        stats["throughput_per_s"] = r.batch / stats["p50_s"] if stats["p50_s"] > 0 else None
        stop_rule = self.s.stop_rule.to_record(r.stop)
        warnings = diagnose(stats, r.samples, r.load.get("first_inference_s"), r.snapshots,
                            warmup_settled=all(p.settled for p in r.procs),
                            warmup_runs=min(len(p.warmup) for p in r.procs), stop_rule=stop_rule)
        # memory: the process that grew most stands for the configuration (peak is a maximum)
        top = max(r.procs, key=lambda p: p.peak_rss or 0)
        base_rss = top.load.get("rss_before_runtime_bytes") or top.load.get("rss_before_load_bytes")
        peak_rss = top.peak_rss
        src = ({"synthetic_seed": self.s.seed} if self.data is None
               else {"data": str(self.data.path), "rows": [0, r.batch]})
        rec = new_record(
            "latency", **self._base(r),
            runtime=r.load.get("runtime"), runtime_version=r.load.get("runtime_version"),
            inputs={k: v for k, v in r.load.get("feed_shapes", {}).items()},
            input_source=src, batch_loop=r.load.get("batch_loop", 1),
            samples_s=r.samples, warmup_samples_s=[v for p in r.procs for v in p.warmup],
            rounds=r.rounds, process_of_round=r.process_of_round,
            processes=[{"warmup_runs": len(p.warmup), "warmup_settled": p.settled,
                        "session_s": p.load.get("session_s"),
                        "first_inference_s": p.load.get("first_inference_s"),
                        "peak_rss_bytes": p.peak_rss} for p in r.procs],
            io_samples_s=r.io_samples or None,
            session_s=r.load.get("session_s"), first_inference_s=r.load.get("first_inference_s"),
            baseline_rss_bytes=base_rss, peak_rss_bytes=peak_rss,
            model_rss_bytes=(peak_rss - base_rss) if peak_rss and base_rss else None,
            stats=stats, stop_rule=stop_rule, warnings=[w.to_dict() for w in warnings],
            env=self.env, state_series=r.series)
        if r.ops is not None:
            rec["op_profile"] = r.ops
        if r.cold is not None:
            rec["cold_start"] = r.cold
        if r.cooldown is not None:
            rec["cooldown"] = r.cooldown
        return rec
