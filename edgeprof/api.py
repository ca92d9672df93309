"""The Python API: what the command line does, as functions that return typed values and print
nothing (progress goes to an optional ``progress(description, fraction)`` callback).

    import edgeprof
    res = edgeprof.profile(["a.onnx", "b.onnx"], threads=[1, 2], data="eval.npz")
    res.to_pandas()                          # one row per latency record (pandas, optional)
    dec = edgeprof.decide(res)               # frontier and recommendation per target
    dec.plot("frontier.png")

Every function takes the same words as the CLI (conventions: Words and flags) and raises
``edgeprof.EdgeprofError`` (one-line message) for anything the user can fix."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

Progress = Callable[[str, float], None]
PathLike = str | Path


def _tuple(x: Any) -> tuple | None:
    return None if x is None else tuple(x)


@dataclass(frozen=True)
class Latency:
    """One latency record: a (variant, target, threads, batch) setting, p50/p99 with 95 % CIs.
    A sustained run (``mode == "sustained"``) adds its steady-state p50 and, where a sensor
    exists, the energy per inference (joules; None with ``energy_unavailable`` saying why)."""
    variant_id: str
    name: str
    target: str
    threads: int
    batch: int
    p50_s: float
    p50_ci_s: tuple[float, float]
    p99_s: float
    p99_ci_s: tuple[float, float] | None
    n: int
    peak_rss_bytes: int | None
    model_bytes: int | None
    runtime: str | None
    warnings: tuple[str, ...] = ()
    mode: str = "burst"
    steady_p50_s: float | None = None
    energy_per_inference_j: float | None = None
    energy_unavailable: str | None = None

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> "Latency":
        s, m = r["stats"], r.get("model") or {}
        sus, energy = r.get("sustained") or {}, r.get("energy") or {}
        return cls(variant_id=r["variant_id"], name=m.get("name", r["variant_id"][:12]),
                   target=r["target"], threads=r["threads"], batch=r["batch"],
                   p50_s=s["p50_s"], p50_ci_s=_tuple(s["p50_ci_s"]), p99_s=s["p99_s"],
                   p99_ci_s=_tuple(s.get("p99_ci_s")), n=s["n"],
                   peak_rss_bytes=r.get("peak_rss_bytes"), model_bytes=m.get("model_bytes"),
                   runtime=r.get("runtime"),
                   warnings=tuple(w["code"] for w in r.get("warnings", [])),
                   mode=r.get("mode", "burst"), steady_p50_s=sus.get("steady_p50_s"),
                   energy_per_inference_j=energy.get("joules_per_inference"),
                   energy_unavailable=None if energy.get("available", True) else energy.get("reason"))

    @property
    def throughput_per_s(self) -> float:
        return self.batch / self.p50_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Latency":
        d = dict(d)
        for k in ("p50_ci_s", "p99_ci_s", "warnings"):
            d[k] = _tuple(d.get(k)) if d.get(k) is not None else (() if k == "warnings" else None)
        return cls(**d)


@dataclass(frozen=True)
class Accuracy:
    """The task metric of a variant on a target with its 95 % CI: top-1 accuracy (Wilson) by
    default, else ``metric`` (``accuracy`` then holds that metric's figure)."""
    variant_id: str
    name: str
    target: str
    accuracy: float
    accuracy_ci: tuple[float, float]
    n: int
    correct: int | None
    metric: str = "top1"
    higher_is_better: bool = True

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> "Accuracy":
        other = "score" in r
        return cls(variant_id=r["variant_id"], name=(r.get("model") or {}).get("name", ""),
                   target=r["target"], accuracy=r["score"] if other else r["accuracy"],
                   accuracy_ci=_tuple(r["score_ci"] if other else r["accuracy_ci"]), n=r["n"],
                   correct=r.get("correct"), metric=r.get("metric", "top1"),
                   higher_is_better=r.get("higher_is_better", True))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Accuracy":
        return cls(**{**d, "accuracy_ci": _tuple(d["accuracy_ci"])})


@dataclass(frozen=True)
class Results:
    """Result records (as written to a results file) with typed views."""
    records: tuple[dict[str, Any], ...]
    path: Path | None = None
    skipped: tuple[str, ...] = ()   # settings already in the results file (a resumed run)

    @property
    def latency(self) -> list[Latency]:
        return [Latency.from_record(r) for r in self.records if r["kind"] == "latency"]

    @property
    def accuracy(self) -> list[Accuracy]:
        return [Accuracy.from_record(r) for r in self.records if r["kind"] == "accuracy"]

    @property
    def errors(self) -> list[str]:
        return [r.get("error", "") for r in self.records if r["kind"] == "error"]

    def __len__(self) -> int:
        return len(self.records)

    def to_pandas(self, kind: str = "latency"):
        """A DataFrame of the typed view (``latency`` or ``accuracy``); needs pandas
        (``pip install 'edgeprof[pandas]'``)."""
        try:
            import pandas as pd
        except ImportError:
            from .errors import InputError
            raise InputError("to_pandas needs pandas: pip install 'edgeprof[pandas]'") from None
        items = {"latency": self.latency, "accuracy": self.accuracy}.get(kind)
        if items is None:
            from .errors import InputError
            raise InputError(f"to_pandas(kind={kind!r}): latency or accuracy")
        return pd.DataFrame([x.to_dict() for x in items])

    def to_dict(self) -> dict[str, Any]:
        from .results import SCHEMA
        return {"schema": SCHEMA, "records": list(self.records)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Results":
        return cls(records=tuple(d["records"]))


@dataclass(frozen=True)
class Decision:
    """Frontier, recommendation per target and int8 diagnoses, as ``decision.json`` holds them.
    From a sweep also what it did (``counts``: variants, passes run, records measured, skipped,
    errors) and where its report is (``report``: the index.html)."""
    raw: dict[str, Any] = field(repr=False)
    counts: dict[str, int] = field(default_factory=dict, repr=False)
    report: Path | None = None

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.raw["rows"]

    def frontier(self, target: str | None = None) -> list[str]:
        """Variant ids on the frontier of ``target`` (the only target when there is one)."""
        front = self.raw["frontier"]
        t = target or next(iter(front), None)
        return list((front.get(t) or {}).get("frontier", []))

    def recommendation(self, target: str | None = None) -> dict[str, Any]:
        recs = self.raw["recommendations"]
        return recs[target] if target else next(iter(recs.values()))

    @property
    def diagnoses(self) -> list[dict[str, Any]]:
        return self.raw.get("diagnoses", [])

    def plot(self, path: PathLike) -> Path:
        """Latency against accuracy with the frontier (PNG or SVG by the file's suffix)."""
        import shutil
        import tempfile

        from .report import charts
        out = Path(path)
        with tempfile.TemporaryDirectory(prefix="edgeprof-plot-") as tmp:
            made = charts.latency_vs_accuracy(self.rows, Path(tmp))
            if not made:
                from .errors import InputError
                raise InputError("nothing to plot: the rows need latency and accuracy")
            src = Path(tmp) / ("latency_vs_accuracy" + (out.suffix or ".png"))
            if not src.exists():
                from .errors import InputError
                raise InputError(f"{out}: plots are written as .png or .svg")
            shutil.copyfile(src, out)
        return out

    def to_dict(self) -> dict[str, Any]:
        return self.raw


@dataclass(frozen=True)
class Variant:
    """A cached model variant: its identity, lineage (root first), file and what the pass
    measured (fidelity against its parent and root, pass facts in ``extra``). ``reused``: it
    came from the cache instead of being built by this call."""
    id: str
    name: str
    pass_name: str
    config: dict[str, Any]
    format: str
    path: Path
    model_bytes: int | None
    parent: str | None
    root: str
    lineage: tuple[str, ...]
    fidelity: dict[str, Any] = field(default_factory=dict, repr=False)
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    reused: bool = False

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @classmethod
    def from_cached(cls, v: Any, reused: bool = False, lineage: Sequence[Any] = ()) -> "Variant":
        return cls(id=v.id, name=v.label, pass_name=v.pass_name, config=dict(v.config),
                   format=v.format, path=v.path, model_bytes=v.model_bytes, parent=v.parent,
                   root=v.root, lineage=tuple(x.id for x in lineage) or (v.id,),
                   fidelity=dict(v.fidelity or {}), notes=tuple(v.notes),
                   extra=dict(v.extra or {}), reused=reused)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Variant":
        return cls(**{**d, "path": Path(d["path"]), "lineage": tuple(d["lineage"]),
                      "notes": tuple(d.get("notes", ()))})


# -- functions -------------------------------------------------------------------------------

def _ints(x: int | Iterable[int]) -> tuple[int, ...]:
    return (int(x),) if isinstance(x, int) else tuple(int(v) for v in x)


def profile(models: PathLike | Sequence[PathLike], *, targets: str | Sequence[str] = "local",
            threads: int | str | Iterable[int] | None = None,
            batch: int | str | Iterable[int] | None = None, shapes: Sequence[str] = (),
            data: PathLike | None = None, spec: PathLike | None = None,
            results: PathLike | None = None, min_time: str | float = "0.2s",
            max_time: str | float = "10s", min_runs: int = 50, max_runs: int = 10_000,
            processes: int = 3, rel_ci: str | float = "1%",
            warmup_max_time: str | float = "10s", runtime: str = "auto",
            cold_starts: int = 0, op_profile: bool = False, cooldown: str | None = None,
            sustained: str | float | None = None, window: str | float = "10s",
            inventory: PathLike | None = None, group: str | None = None,
            max_boards: int | None = None, accept_new_host_key: bool = False,
            affinity: str | None = None, seed: int = 0, wait: bool = False,
            cache_dir: PathLike | None = None, targets_dir: PathLike | None = None,
            progress: Progress | None = None) -> Results:
    """Latency, memory (and cold start) of ``models`` (paths or variant id prefixes) on each
    target, interleaved (what `edgeprof profile` runs). ``results``: append to (and resume
    from) this JSON Lines file; ``Results.skipped`` names the settings already there. A
    target's own threads apply unless ``threads`` is given; ``batch`` None: each model's own.
    Each configuration runs in ``processes`` fresh workers until its p50 CI half-width is
    ``rel_ci`` of p50 (between ``min_time`` and ``max_time``). ``cooldown`` ("55C" or "30s"):
    wait before each configuration. ``sustained`` ("10m"): continuous load per configuration
    instead, p50 per ``window`` with temperature, frequency, throttling and energy where a
    sensor exists (records with ``mode = "sustained"``). ``inventory`` (+ ``group``): every
    host of the group is a target, at most ``max_boards`` at once; the records name the group
    (``target_group``) for its spread and one recommendation. Different boards run at once,
    targets on one host one after another; a board that fails gives error records, the others
    carry on. ``cold_starts``: fresh processes timed from spawn to the first result (0 here by
    default, each costs a process start; the CLI's default is 3). Records are written as each
    setting finishes; a disk that filled up raises StorageFull at the end, naming where the
    records that did not fit were spilled."""
    from .data import load_npz
    from .errors import InputError
    from .inputspec import load_spec
    from .measure.profiler import Settings
    from .measure.sustained import parse_cooldown
    from .targets import get_target
    from .targets.config import parse_cpus
    from .units import parse_duration_s, parse_fraction, parse_int_list, parse_shape
    from .variants.family import resolve_models

    def seconds(x: str | float, flag: str, lo: float, hi: float) -> float:
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            if not lo <= float(x) <= hi:  # numbers get the same bounds as "10s" would
                raise InputError(f"{flag} {x!r}: must be from {lo:g} s to {hi:g} s")
            return float(x)
        return parse_duration_s(str(x), flag, lo, hi)

    def ints(x: Any, flag: str, hi: int) -> tuple[int, ...]:
        if isinstance(x, int):
            return (x,)
        if isinstance(x, str):
            return tuple(parse_int_list(x, flag, 1, hi))
        return tuple(int(v) for v in x)

    if not 1 <= processes <= 64:
        raise InputError(f"--processes {processes} is out of range (1 to 64)")
    if not 0 <= cold_starts <= 100:
        raise InputError(f"--cold-starts {cold_starts} is out of range (0 to 100)")
    s = Settings(
        threads=ints(threads if threads is not None else 1, "--threads", 256),
        batches=ints(batch, "--batch", 65536) if batch is not None else None,
        shapes=dict(parse_shape(t) for t in shapes),
        min_time_s=seconds(min_time, "--min-time", 0.0, 3600.0),
        max_time_s=seconds(max_time, "--max-time", 0.0, 36000.0),
        rel_ci=rel_ci if isinstance(rel_ci, float) else parse_fraction(str(rel_ci), "--rel-ci"),
        processes=processes, min_runs=min_runs, max_runs=max_runs,
        warmup_max_s=seconds(warmup_max_time, "--warmup-max-time", 0.0, 600.0),
        seed=seed, op_profile=op_profile, cold_starts=cold_starts,
        runtime=None if runtime == "auto" else runtime, cooldown=parse_cooldown(cooldown))
    if not 1 <= min_runs <= 10_000_000:
        raise InputError(f"--min-runs {min_runs} is out of range (1 to 10000000)")
    if not 1 <= max_runs <= 10_000_000 or max_runs < min_runs:
        raise InputError(f"--max-runs {max_runs} must be at least --min-runs ({min_runs}) "
                         "and at most 10000000")
    if not 0.0 <= s.rel_ci < 1.0:
        raise InputError(f"--rel-ci {rel_ci} is out of range (0, off, to below 100%)")
    if s.max_time_s < s.min_time_s:
        raise InputError(f"--max-time {max_time} must be at least --min-time ({min_time})")
    if spec and not data:
        raise InputError("--preprocess applies to --data; give --data too")
    names = [models] if isinstance(models, (str, Path)) else list(models)
    refs = resolve_models([str(m) for m in names], Path(cache_dir) if cache_dir else None)
    ds = load_npz(data) if data else None
    sp = load_spec(spec) if spec else None
    if group and not inventory:
        raise InputError("--group names a group of --inventory; give --inventory too")
    sus = None if not sustained else {
        "duration_s": seconds(sustained, "--sustained", 1.0, 24 * 3600.0),
        "window_s": seconds(window, "--window", 0.1, 3600.0), "cooldown": s.cooldown}
    cpus = parse_cpus(affinity, "--affinity") if affinity else None
    tnames = [targets] if isinstance(targets, str) else list(targets)
    tnames = list(dict.fromkeys(tnames or ["local"]))
    if inventory is not None and tnames == ["local"]:
        tnames = []  # an inventory alone: its hosts are the targets
    tgts: list[Any] = []
    try:
        for n in tnames:
            tgts.append(get_target(n, targets_dir=targets_dir, affinity=cpus, wait=wait,
                                   accept_new_host_key=accept_new_host_key))
        return _profile_on(tgts, s, threads is not None, refs, ds, sp, sus, results, wait,
                           inventory, group, accept_new_host_key, cpus, max_boards, progress)
    finally:  # connections, board claims and reservations end with the call
        for t in tgts:
            t.close()


def _profile_on(tgts: list, s: Any, threads_given: bool, refs: list, ds: Any, sp: Any,
                sus: dict[str, Any] | None, results: PathLike | None, wait: bool,
                inventory: PathLike | None, group: str | None, accept_new_host_key: bool,
                cpus: Any, max_boards: int | None, progress: Progress | None) -> Results:
    from .results import ResultStore

    with ResultStore(results, wait=wait) as store:
        target_store = store
        if inventory is not None:
            from .measure.spread import GroupTaggingStore  # records name the group: its spread
            from .targets import targets_from_inventory
            boards = targets_from_inventory(inventory, group or "all",
                                            accept_new_host_key=accept_new_host_key, wait=wait,
                                            affinity=cpus)
            tgts += boards
            target_store = GroupTaggingStore(store, {t.name: group or "all" for t in boards})
        prog = progress or (lambda desc, frac: None)
        if sus is not None:
            from .measure.sustained import profile_sustained
            recs, skipped = profile_sustained(tgts, s, refs, target_store, ds, sp, sus, prog,
                                              side_dir=Path(results).parent if results else None)
        else:
            recs, skipped = _run_targets(tgts, s, threads_given, refs, target_store, ds,
                                         sp, prog, max_boards)
    return Results(records=tuple(recs), path=Path(results) if results else None,
                   skipped=tuple(skipped))


def _run_targets(tgts: list, s: Any, threads_given: bool, refs: list, store: Any, ds: Any,
                 spec: Any, prog: Progress, max_boards: int | None = None) -> tuple[list, list]:
    """One Profiler per target: different boards at once (at most ``max_boards``), targets on
    one host one after another, each appending its records as they finish. A board that fails
    yields error records; the others carry on."""
    from .targets import LockedStore, run_per_target

    if len(tgts) == 1:
        return _profile_one(tgts[0], s, threads_given, refs, store, ds, spec, prog)
    shared = LockedStore(store)
    fracs = {t.name: 0.0 for t in tgts}

    def progress_for(name: str) -> Progress:
        def update(desc: str, frac: float) -> None:
            fracs[name] = frac
            prog(f"{name}: {desc}", sum(fracs.values()) / len(fracs))
        return update

    outs = run_per_target(tgts, lambda t: _profile_one(
        t, s, threads_given, refs, shared, ds, spec, progress_for(t.name)), max_boards)
    records: list = []
    skipped: list = []
    for t, out in zip(tgts, outs):
        if isinstance(out, BaseException):
            raise out
        records += out[0]
        skipped += [f"{t.name}: {label}" for label in out[1]]
    return records, skipped


def _profile_one(tgt: Any, s: Any, threads_given: bool, refs: list, store: Any, ds: Any,
                 spec: Any, prog: Progress) -> tuple[list, list]:
    """A target file's threads apply unless threads were given."""
    import dataclasses

    from .measure.profiler import Profiler

    if getattr(tgt, "threads", None) and not threads_given:
        s = dataclasses.replace(s, threads=tuple(tgt.threads))
    try:
        return Profiler(tgt, s, store=store, data=ds, spec=spec, progress=prog).run(refs)
    finally:
        tgt.close()


def accuracy(models: PathLike | Sequence[PathLike], data: PathLike, *,
             targets: str | Sequence[str] = "local", limit: int | None = None,
             metric: str = "top1",
             results: PathLike | None = None, cache_dir: PathLike | None = None,
             targets_dir: PathLike | None = None, progress: Progress | None = None) -> Results:
    """Top-1 accuracy (95 % Wilson CI), or another task ``metric`` (edgeprof.metrics: topk:K,
    mae, rmse, miou, module:function; its CI from the rows) of ``models`` on the first
    ``limit`` labelled rows of ``data``, computed from the outputs of the runtime on each
    target. Records of another metric hold ``metric``, ``score``, ``score_ci``."""
    from .metrics import get_metric, labels_of
    m = get_metric(metric)
    if m.needs_reference:
        from .errors import InputError
        raise InputError("metric agreement compares with the fp32 root: use it in a sweep")
    import tempfile

    from .data import load_npz
    from .measure.accuracy import metric_key, metric_record, outputs_on
    from .results import RecordKey, ResultStore
    from .targets import get_target
    from .targets.pool import WorkerPool
    from .variants.family import resolve_models, spec_for_worker

    names = [models] if isinstance(models, (str, Path)) else list(models)
    refs = resolve_models([str(m) for m in names], Path(cache_dir) if cache_dir else None)
    ds = load_npz(data)
    n = min(ds.n, limit or ds.n)
    raw_dtype = next(iter(ds.x.values())).dtype.name
    tnames = [targets] if isinstance(targets, str) else list(targets)
    out: list[dict[str, Any]] = []
    with ResultStore(results) as store, tempfile.TemporaryDirectory(prefix="edgeprof-acc-") as tmp:
        for ti, name in enumerate(dict.fromkeys(tnames)):
            t = get_target(name, targets_dir=targets_dir)
            pool = WorkerPool(t)  # one worker loads the models one after another
            try:
                npz = t.stage(ds.npz_path(Path(tmp)))
                for i, ref in enumerate(refs):
                    if progress:
                        progress(f"{name}: accuracy of {ref.name}",
                                 (ti + i / len(refs)) / len(tnames))
                    if store.has(RecordKey.evaluation("accuracy", ref.id, name,
                                                     metric_key(ds, n, m.name), m.name)):
                        continue
                    outs = outputs_on(t, ref.path, npz, n, spec_for_worker(ref.input_spec, raw_dtype),
                                      f"{ref.name} accuracy", pool)
                    rec = metric_record(ref, name, ds, m, outs, labels_of(ds, n))
                    store.append(rec)
                    out.append(rec)
            finally:
                pool.close()
                t.close()
    return Results(records=tuple(out), path=Path(results) if results else None)


def robustness(models: PathLike | Sequence[PathLike], data: PathLike, *,
               corruptions: str | Sequence[str] = "all", severities: Any = (1, 2, 3, 4, 5),
               limit: int | None = None, attacks: dict[str, Any] | None = None,
               target: str = "local", baseline: PathLike | None = None,
               preprocess: PathLike | None = None, results: PathLike | None = None,
               cache_dir: PathLike | None = None, targets_dir: PathLike | None = None,
               seed: int = 0, metric: str = "top1", inventory: PathLike | None = None,
               group: str | None = None, max_boards: int | None = None,
               progress: Progress | None = None) -> Results:
    """Robustness of ``models`` against their fp32 root (or ``baseline``) on one target: clean
    and corrupted accuracy with CIs, CE/mCE, calibration and, with ``attacks`` (as a sweep's
    ``[measure] attacks``, e.g. {"square": {"eps": ["8/255"], "queries": 100}}), robust accuracy.
    ``metric`` (as ``accuracy``'s) drives the scores and mCE instead of top-1; calibration and
    attacks are top-1's and skipped, with the reason in the record, for non-classification
    metrics."""
    from .data import load_npz
    from .results import ResultStore
    from .robust import metrics as M
    from .robust.evaluate import config_from_plan, evaluate_robustness, families
    from .targets.shard import cli_target
    from .variants.cache import Cache

    names = [models] if isinstance(models, (str, Path)) else list(models)
    ds = load_npz(data)
    first = next(iter(ds.x.values()))
    channels = first.shape[3] if first.ndim == 4 else 1
    config = config_from_plan({"corruptions": M.parse_corruptions(corruptions, channels),
                               "severities": M.parse_severities(list(severities)
                                                                if not isinstance(severities, str)
                                                                else severities),
                               "limit": limit, "seed": seed}, attacks, None, None, metric)
    cache = Cache(Path(cache_dir) if cache_dir else None)
    groups = families(cache, [str(m) for m in names], Path(preprocess) if preprocess else None,
                      str(baseline) if baseline else None)
    out: list[dict[str, Any]] = []
    # an inventory ``group`` is one target whose rows are sharded across its boards (at most
    # ``max_boards`` at once): the same records one board would give
    t = cli_target(target, targets_dir=targets_dir, inventory=inventory, group=group,
                   max_boards=max_boards)
    try:
        with ResultStore(results) as store:
            for gi, (base_ref, refs) in enumerate(groups):
                def sub(desc: str, frac: float, gi: int = gi) -> None:
                    if progress:
                        progress(desc, (gi + frac) / len(groups))
                res = evaluate_robustness(refs, ds, config, target=t, target_name=t.name,
                                          cache_dir=cache.root, baseline=base_ref, store=store,
                                          progress=sub)
                out += res.records
    finally:
        t.close()
    return Results(records=tuple(out), path=Path(results) if results else None)


def sweep(plan: Any, *, out: PathLike | None = None, require: str | None = None,
          cache_dir: PathLike | None = None, targets_dir: PathLike | None = None,
          report: bool = True, wait: bool = False, title: str | None = None,
          progress: Progress | None = None) -> tuple[Decision, Results]:
    """Run a sweep (a sweep file, or a ``sweeps.plan.Plan``): build, measure, decide and
    (``report``) write the report folder. Resumes from the folder's results.jsonl. The
    ``edgeprof sweep`` and ``edgeprof demo`` commands run exactly this."""
    from .report.write import write_report
    from .results import read_records
    from .sweeps.plan import Plan, load_plan, write_plan_copy
    from .sweeps.recommend import parse_requirements
    from .sweeps.runner import SweepRunner
    from .variants.cache import Cache

    p = plan if isinstance(plan, Plan) else load_plan(plan, Path(out) if out else None)
    if require is not None:
        p.require = require
    parse_requirements(p.require)  # a typo fails now, not after the measurements
    runner = SweepRunner(p, Cache(Path(cache_dir) if cache_dir else None), progress=progress,
                         targets_dir=Path(targets_dir) if targets_dir else None, wait=wait)
    index = None
    try:
        write_plan_copy(p)
        result = runner.run()
        runner.store.check()
        if report:
            index = write_report(p.out_dir, result["decision"], runner.results_path,
                                 title=title or f"edgeprof sweep: {p.name}")
    finally:
        runner.store.release()
    return (Decision(result["decision"], dict(result["counts"]), index),
            Results(tuple(read_records(runner.results_path)), runner.results_path))


def drift(variant: PathLike, calib: PathLike, field: PathLike, *, rows: int = 500,
          cache_dir: PathLike | None = None):
    """Is ``field`` data still what the static int8 ``variant`` (ONNX QDQ/QOperator or
    full-integer TFLite) was calibrated on? Clipped activation shares per quantized tensor
    against the calibration set and a held-out split, input drift, int8-vs-fp32 agreement on
    field rows, and typed findings ranked by clipped share (``DriftResult``, with
    ``to_dict()``). ``calib`` must be the variant's own calibration data (checked by sha256)."""
    from .measure.drift import drift as run
    return run(variant, calib, field, cache_dir=cache_dir, rows=rows)


def load_results(path: PathLike) -> Results:
    """Every record of a results file (JSON Lines); a torn last line is skipped."""
    from .results import read_records
    return Results(records=tuple(read_records(path)), path=Path(path))


def decide(results: Results | Iterable[dict[str, Any]], *, require: str | None = None,
           objectives: Sequence[tuple[str, str]] | None = None, batch: int = 1,
           threads: int | None = None, baseline: str | None = None) -> Decision:
    """Rows, frontier (``objectives``: [(field, "min"|"max")]), one recommendation per target
    under ``require`` (e.g. "accuracy_drop<=1%, peak_rss<=256MiB") and int8 diagnoses."""
    from .sweeps.decide import decide_records
    from .sweeps.recommend import parse_requirements
    records = list(results.records if isinstance(results, Results) else results)
    parse_requirements(require)
    return Decision(decide_records(records, objectives=objectives, require=require,
                                   baseline_id=baseline, batch=batch, threads=threads))


def compare(base: PathLike | Results, new: PathLike | Results, *,
            max_latency_increase: float = 0.05, max_accuracy_drop: float = 0.005) -> list:
    """The regression gate's comparisons (``Change`` values; ``.regression`` marks failures)."""
    from .sweeps.compare import accuracy_changes, latency_changes

    def recs(x: PathLike | Results) -> list[dict[str, Any]]:
        return list((x if isinstance(x, Results) else load_results(x)).records)
    b, n = recs(base), recs(new)
    return latency_changes(b, n, max_latency_increase) + accuracy_changes(b, n, max_accuracy_drop)


# the pass commands (quantize, prune, convert, export_torch) live in edgeprof.make
from .make import convert, export_torch, prune, quantize  # noqa: E402,F401
