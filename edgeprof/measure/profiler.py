"""The profiling loop: load each configuration in its own worker, warm it up until the timings
settle, then measure all configurations in interleaved rounds (A B A B ...) so that drift of the
machine hits them alike. Produces ``latency`` records (raw samples + derived statistics)."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from ..data import Dataset
from ..errors import EdgeprofError, WorkerError
from ..inputspec import InputSpec, worker_spec
from ..models import ModelRef
from ..results import ResultStore, new_record
from ..targets.client import WorkerClient
from .diagnose import diagnose
from .stats import summarize
from .warmup import is_settled, window_for

Progress = Callable[[str, float], None]
MIN_ROUNDS = 5


class Target(Protocol):
    name: str

    def start_worker(self, label: str) -> WorkerClient: ...
    def stage(self, path: Path) -> str: ...


@dataclass(frozen=True)
class Settings:
    threads: tuple[int, ...] = (1,)
    batches: tuple[int, ...] | None = (1,)   # None: each model at its own batch (1 if dynamic)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    min_time_s: float = 2.0
    min_runs: int = 50
    max_runs: int = 10_000
    warmup_max_s: float = 10.0
    round_s: float = 0.2
    seed: int = 0
    op_profile: bool = False
    op_profile_runs: int = 50
    cold_starts: int = 3
    runtime: str | None = None


@dataclass
class _Run:
    """One configuration being measured (model x threads x batch) and its worker."""
    model: ModelRef
    threads: int
    batch: int
    worker: WorkerClient | None = None
    load: dict[str, Any] = field(default_factory=dict)
    warmup: list[float] = field(default_factory=list)
    settled: bool = False
    samples: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    io_samples: list[float] = field(default_factory=list)
    series: list[list[Any]] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    peak_rss: int | None = None
    ops: dict[str, Any] | None = None
    cold: dict[str, list[float]] | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.model.name} t={self.threads} b={self.batch}"

    def done(self, s: Settings) -> bool:
        n = len(self.samples)
        return n >= s.max_runs or (n >= s.min_runs and sum(self.samples) >= s.min_time_s)


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
                 progress: Progress | None = None):
        self.target, self.s = target, settings
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
        return (model.id, self.target.name, threads, batch, "latency",
                self.data.sha256 if self.data else None)

    def run(self, models: list[ModelRef]) -> tuple[list[dict[str, Any]], list[str]]:
        """Measure every configuration not already in the store. Returns (records, skipped)."""
        runs, skipped = [], []
        for m in models:
            for t in self.s.threads:
                for b in self.batches_for(m):
                    r = _Run(m, t, b)
                    (skipped.append(r.label) if self.store.has(self.key(m, t, b)) else runs.append(r))
        records: list[dict[str, Any]] = []
        self._n_total = max(1, len(runs))
        try:
            self._spawn(runs)
            for i, r in enumerate(runs):
                self.progress(f"loading {r.label}", i / self._n_total * 0.1)
                self._start(r, records)
            live = [r for r in runs if r.error is None]
            for i, r in enumerate(live):
                self._warm_up(r, i, len(live))
                if r.error:
                    records.append(self._error_record(r))
            self._measure([r for r in live if r.error is None], records)
        finally:
            for r in runs:
                if r.worker is not None:
                    r.worker.close()
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

    def _spawn(self, runs: list[_Run]) -> None:
        """Start the worker processes two at a time (interpreter and numpy start-up, nothing
        measured yet); loading stays sequential because session and first-inference times are
        measured during the load."""
        from concurrent.futures import ThreadPoolExecutor

        def spawn(r: _Run) -> None:
            try:
                r.worker = self.target.start_worker(r.label)
            except EdgeprofError:
                r.worker = None  # _start tries again and records the error
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(spawn, runs))

    def _start(self, r: _Run, records: list[dict[str, Any]]) -> None:
        try:
            if r.worker is None:
                r.worker = self.target.start_worker(r.label)
            if self.env is None:
                self.env = r.worker.request("env")["env"]
            r.load = r.worker.request("load", **self._load_args(r))
            r.peak_rss = r.load.get("peak_rss_bytes")
            if self.s.op_profile:
                self.progress(f"operator profile {r.label}", 0.1)
                self._op_profile(r)
            if self.s.cold_starts:
                self.progress(f"cold start {r.label}", 0.1)
                self._cold_start(r)
        except EdgeprofError as exc:
            r.error = str(exc)
            records.append(self._error_record(r))

    def _round(self, r: _Run, n: int, io_runs: int = 0) -> list[float]:
        assert r.worker is not None
        reply = r.worker.request("round", n=n, io_runs=io_runs)
        _keep_snapshot(r, reply["before"])
        _keep_snapshot(r, reply["after"])
        r.io_samples.extend(reply.get("io_samples_s", []))
        r.peak_rss = reply.get("peak_rss_bytes") or r.peak_rss
        return reply["samples_s"]

    def _warm_up(self, r: _Run, i: int, n_live: int) -> None:
        first = r.load.get("first_inference_s") or 1e-3
        spent = 0.0
        try:
            probe = self._round(r, 1)
            r.warmup.extend(probe)
            window = window_for(probe[0] or first)
            while not is_settled(r.warmup, window=window):
                if spent >= self.s.warmup_max_s:
                    return
                chunk = self._round(r, window)
                r.warmup.extend(chunk)
                spent += sum(chunk)
                self.progress(f"warming up {r.label}",
                              0.1 + 0.1 * (i + min(1.0, spent / self.s.warmup_max_s)) / n_live)
            r.settled = True
        except WorkerError as exc:
            r.error = str(exc)

    def _measure(self, live: list[_Run], records: list[dict[str, Any]]) -> None:
        s = self.s
        target_s = max(s.min_time_s, 1e-9)
        pending = list(live)
        while pending:
            for r in list(pending):
                recent = r.samples[-r.rounds[-1]:] if r.rounds else r.warmup[-5:]
                est = sorted(recent)[len(recent) // 2] if recent else 1e-3
                n = self._round_size(r, est)
                io = min(50, max(5, n)) if not r.rounds and r.load.get("runtime") != "onnxruntime" else 0
                try:
                    got = self._round(r, n, io_runs=io)
                except WorkerError as exc:
                    r.error = str(exc)
                    records.append(self._error_record(r))
                    pending.remove(r)
                    continue
                r.samples.extend(got)
                r.rounds.append(len(got))
                if r.done(s):
                    pending.remove(r)
                    rec = self._latency_record(r)
                    self.store.append(rec)
                    records.append(rec)
            done = sum(1.0 if r not in pending else
                       min(0.99, max(sum(r.samples) / target_s, len(r.samples) / s.max_runs))
                       for r in live)
            label = pending[0].label if pending else "finishing"
            self.progress(f"measuring {label}", 0.2 + 0.75 * done / max(1, len(live)))

    def _round_size(self, r: _Run, est_s: float) -> int:
        """Runs in the next round: about ``round_s`` of work (less when ``min_time`` is short),
        never more than 1/MIN_ROUNDS of ``max_runs``, so every configuration is measured over
        several interleaved rounds."""
        s = self.s
        per_round_s = min(s.round_s, max(s.min_time_s / MIN_ROUNDS, 1e-3))
        cap = min(max(1, -(-s.max_runs // MIN_ROUNDS)), s.max_runs - len(r.samples))
        return max(1, min(int(per_round_s / max(est_s, 1e-9)), cap))

    def _cold_start(self, r: _Run) -> None:
        """Fresh processes, each importing the runtime, loading the model and running one
        inference: what a user meets at start-up, apart from warm latency."""
        cold: dict[str, list[float]] = {}
        args = dict(path=self.target.stage(r.model.path), runtime=self.s.runtime,
                    threads=r.threads, batch=r.batch, shapes=self.s.shapes)
        for _ in range(self.s.cold_starts):
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
        stats = summarize(r.samples)
        stats["throughput_per_s"] = r.batch / stats["p50_s"] if stats["p50_s"] > 0 else None
        warnings = diagnose(stats, r.samples, r.load.get("first_inference_s"), r.snapshots,
                            warmup_settled=r.settled, warmup_runs=len(r.warmup))
        base_rss = r.load.get("rss_before_load_bytes")
        src = ({"synthetic_seed": self.s.seed} if self.data is None
               else {"data": str(self.data.path), "rows": [0, r.batch]})
        rec = new_record(
            "latency", **self._base(r),
            runtime=r.load.get("runtime"), runtime_version=r.load.get("runtime_version"),
            inputs={k: v for k, v in r.load.get("feed_shapes", {}).items()},
            input_source=src, batch_loop=r.load.get("batch_loop", 1),
            samples_s=r.samples, warmup_samples_s=r.warmup, rounds=r.rounds,
            io_samples_s=r.io_samples or None,
            session_s=r.load.get("session_s"), first_inference_s=r.load.get("first_inference_s"),
            baseline_rss_bytes=base_rss, peak_rss_bytes=r.peak_rss,
            model_rss_bytes=(r.peak_rss - base_rss) if r.peak_rss and base_rss else None,
            stats=stats, warnings=[w.to_dict() for w in warnings], env=self.env,
            state_series=r.series)
        if r.ops is not None:
            rec["op_profile"] = r.ops
        if r.cold is not None:
            rec["cold_start"] = r.cold
        return rec
