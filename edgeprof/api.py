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
    """One latency record: a (variant, target, threads, batch) setting, p50/p99 with 95 % CIs."""
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

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> "Latency":
        s, m = r["stats"], r.get("model") or {}
        return cls(variant_id=r["variant_id"], name=m.get("name", r["variant_id"][:12]),
                   target=r["target"], threads=r["threads"], batch=r["batch"],
                   p50_s=s["p50_s"], p50_ci_s=_tuple(s["p50_ci_s"]), p99_s=s["p99_s"],
                   p99_ci_s=_tuple(s.get("p99_ci_s")), n=s["n"],
                   peak_rss_bytes=r.get("peak_rss_bytes"), model_bytes=m.get("model_bytes"),
                   runtime=r.get("runtime"),
                   warnings=tuple(w["code"] for w in r.get("warnings", [])))

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
    """Frontier, recommendation per target and int8 diagnoses, as ``decision.json`` holds them."""
    raw: dict[str, Any] = field(repr=False)

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


# -- functions -------------------------------------------------------------------------------

def _ints(x: int | Iterable[int]) -> tuple[int, ...]:
    return (int(x),) if isinstance(x, int) else tuple(int(v) for v in x)


def profile(models: PathLike | Sequence[PathLike], *, targets: str | Sequence[str] = "local",
            threads: int | Iterable[int] = 1, batch: int | Iterable[int] = 1,
            data: PathLike | None = None, spec: PathLike | None = None,
            results: PathLike | None = None, min_time: str | float = "0.2s", min_runs: int = 50,
            max_time: str | float = "10s", processes: int = 3, rel_ci: float = 0.01,
            cold_starts: int = 0, op_profile: bool = False, cache_dir: PathLike | None = None,
            targets_dir: PathLike | None = None, progress: Progress | None = None) -> Results:
    """Latency, memory (and cold start) of ``models`` (paths or variant id prefixes) on each
    target, interleaved as `edgeprof profile` does. ``results``: append to (and resume from)
    this JSON Lines file. A target's own threads apply unless ``threads`` is given. Each
    configuration runs in ``processes`` fresh workers until its p50 CI half-width is ``rel_ci``
    of p50 (between ``min_time`` and ``max_time``)."""
    from .data import load_npz
    from .inputspec import load_spec
    from .measure.profiler import Profiler, Settings
    from .results import ResultStore
    from .targets import get_target
    from .units import parse_duration_s
    from .variants.family import resolve_models

    names = [models] if isinstance(models, (str, Path)) else list(models)
    s = Settings(threads=_ints(threads), batches=_ints(batch),
                 min_time_s=min_time if isinstance(min_time, (int, float))
                 else parse_duration_s(min_time, "min_time", 0.0, 3600.0),
                 max_time_s=max_time if isinstance(max_time, (int, float))
                 else parse_duration_s(max_time, "max_time", 0.0, 36000.0),
                 processes=processes, rel_ci=rel_ci,
                 min_runs=min_runs, cold_starts=cold_starts, op_profile=op_profile)
    refs = resolve_models([str(m) for m in names], Path(cache_dir) if cache_dir else None)
    ds = load_npz(data) if data else None
    sp = load_spec(spec) if spec else None
    tnames = [targets] if isinstance(targets, str) else list(targets)
    out: list[dict[str, Any]] = []
    with ResultStore(results) as store:
        for i, name in enumerate(dict.fromkeys(tnames)):
            t = get_target(name, targets_dir=targets_dir)

            def sub(desc: str, frac: float, i: int = i, name: str = name) -> None:
                if progress:
                    progress(f"{name}: {desc}", (i + frac) / len(tnames))
            try:
                recs, _ = Profiler(t, s, store=store, data=ds, spec=sp, progress=sub).run(refs)
            finally:
                getattr(t, "close", lambda: None)()
            out += recs
    return Results(records=tuple(out), path=Path(results) if results else None)


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
                                      f"{ref.name} accuracy")
                    rec = metric_record(ref, name, ds, m, outs, labels_of(ds, n))
                    store.append(rec)
                    out.append(rec)
            finally:
                getattr(t, "close", lambda: None)()
    return Results(records=tuple(out), path=Path(results) if results else None)


def robustness(models: PathLike | Sequence[PathLike], data: PathLike, *,
               corruptions: str | Sequence[str] = "all", severities: Any = (1, 2, 3, 4, 5),
               limit: int | None = None, attacks: dict[str, Any] | None = None,
               target: str = "local", baseline: PathLike | None = None,
               preprocess: PathLike | None = None, results: PathLike | None = None,
               cache_dir: PathLike | None = None, targets_dir: PathLike | None = None,
               seed: int = 0, progress: Progress | None = None) -> Results:
    """Robustness of ``models`` against their fp32 root (or ``baseline``) on one target: clean
    and corrupted accuracy with CIs, CE/mCE, calibration and, with ``attacks`` (as a sweep's
    ``[measure] attacks``, e.g. {"square": {"eps": ["8/255"], "queries": 100}}), robust accuracy."""
    from .data import load_npz
    from .results import ResultStore
    from .robust import metrics as M
    from .robust.evaluate import config_from_plan, evaluate_robustness, families
    from .targets import get_target
    from .variants.cache import Cache

    names = [models] if isinstance(models, (str, Path)) else list(models)
    ds = load_npz(data)
    first = next(iter(ds.x.values()))
    channels = first.shape[3] if first.ndim == 4 else 1
    config = config_from_plan({"corruptions": M.parse_corruptions(corruptions, channels),
                               "severities": M.parse_severities(list(severities)
                                                                if not isinstance(severities, str)
                                                                else severities),
                               "limit": limit, "seed": seed}, attacks, None, None)
    cache = Cache(Path(cache_dir) if cache_dir else None)
    groups = families(cache, [str(m) for m in names], Path(preprocess) if preprocess else None,
                      str(baseline) if baseline else None)
    out: list[dict[str, Any]] = []
    t = get_target(target, targets_dir=targets_dir)
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
        getattr(t, "close", lambda: None)()
    return Results(records=tuple(out), path=Path(results) if results else None)


def quantize(model: PathLike, precision: str, *, calib: PathLike | None = None,
             data: PathLike | None = None, per_channel: bool = True, format: str = "qdq",
             calib_method: str = "minmax", calib_rows: int = 200, types: str = "S8S8",
             reduce_range: bool = False, preprocess: PathLike | None = None,
             fidelity_rows: int = 500, cache_dir: PathLike | None = None):
    """A cached int8 (static/dynamic) or fp16 variant of an ONNX model, with its fidelity
    against the parent and the fp32 root when data is given. Returns the ``Variant``."""
    import tempfile

    from .data import check_disjoint, load_npz
    from .measure.fidelity import FidelityEvaluator
    from .passes.base import apply_pass
    from .passes.quantize import QuantizePass
    from .variants.cache import Cache
    from .variants.family import open_variant, spec_for_worker

    cache = Cache(Path(cache_dir) if cache_dir else None)
    parent, root = open_variant(cache, str(model), Path(preprocess) if preprocess else None)
    cal = load_npz(calib) if calib else None
    ev = load_npz(data) if data else None
    if cal is not None and ev is not None:
        check_disjoint(cal, ev, "calibration")
    raw_dtype = next(iter(cal.x.values())).dtype.name if cal else "uint8"
    p = QuantizePass(precision=precision, per_channel=per_channel, format=format,
                     calib_method=calib_method, calib=cal, calib_rows=calib_rows, types=types,
                     reduce_range=reduce_range, spec=spec_for_worker(root.input_spec, raw_dtype))
    fid_ds = ev or cal
    with tempfile.TemporaryDirectory(prefix="edgeprof-q-") as scratch:
        hook = None if fid_ds is None else FidelityEvaluator(fid_ds, fidelity_rows, Path(scratch)).hook(
            parent, root, "evaluation" if ev is not None else "calibration")
        return apply_pass(cache, parent, p, hook)[0]


def sweep(plan: PathLike, *, out: PathLike | None = None, require: str | None = None,
          cache_dir: PathLike | None = None, targets_dir: PathLike | None = None,
          report: bool = True, wait: bool = False,
          progress: Progress | None = None) -> tuple[Decision, Results]:
    """Run a sweep file (TOML): build, measure, decide and (``report``) write the report
    folder. Resumes from the folder's results.jsonl."""
    from .report.write import write_report
    from .results import read_records
    from .sweeps.plan import load_plan, write_plan_copy
    from .sweeps.recommend import parse_requirements
    from .sweeps.runner import SweepRunner
    from .variants.cache import Cache

    p = load_plan(plan, Path(out) if out else None)
    if require is not None:
        p.require = require
    parse_requirements(p.require)
    runner = SweepRunner(p, Cache(Path(cache_dir) if cache_dir else None), progress=progress,
                         targets_dir=Path(targets_dir) if targets_dir else None, wait=wait)
    try:
        write_plan_copy(p)
        result = runner.run()
        runner.store.check()
        if report:
            write_report(p.out_dir, result["decision"], runner.results_path,
                         title=f"edgeprof sweep: {p.name}")
    finally:
        runner.store.release()
    return (Decision(result["decision"]),
            Results(tuple(read_records(runner.results_path)), runner.results_path))


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
