"""Robustness of deployed variants, measured on the runtime that will run them.

``evaluate_robustness`` evaluates a baseline (the family's fp32 root, in AlexNet's role for the
corruption error) and then each variant, one worker per model on the chosen target: clean
accuracy, ImageNet-C corruptions (sets generated once and cached, staged with ``target.stage``
so a board receives them once and applies each variant's InputSpec itself), calibration, the
black-box Square Attack through the variant's own ``predict``, and transfer attacks crafted on a
PyTorch source. One ``robustness`` record per (variant, target, data). ``evaluate_robustness``
is what ``edgeprof.robustness()``, the ``edgeprof robustness`` command and the sweep's
robustness phase call.

Every variant is fed exactly as for clean data: corrupted sets are stored in the data's raw form
(uint8 after rounding for uint8 data), adversarial inputs of uint8 data travel as float32 x 255
(no rounding, eps exact), and the variant's InputSpec is sent unchanged with the raw dtype made
explicit, so ``scale = 1/255`` means the same thing for both.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data import Dataset
from ..errors import EdgeprofError, InputError
from ..inputspec import InputSpec, worker_spec
from ..models import ModelRef
from ..results import RecordKey, new_record
from ..targets.client import REPLY_MAX_BYTES
from ..targets.worker import decode_array, encode_array
from . import attacks as atk
from . import metrics as M
from .datasets import DataCache, ImageSet, corrupted_set, image_set

Progress = Callable[[str, float], None]
ATTACKS = ("square", "fgsm", "pgd")
TRANSFER = ("fgsm", "pgd")
BASELINE_PROBS_MAX_BYTES = 1 << 30  # keep the baseline's softmax for output drift up to this


@dataclass
class AttackConfig:
    name: str                                  # square | fgsm | pgd
    eps: list[tuple[str, float]]               # (label as written, value) in the [0, 1] domain
    queries: int = 1000                        # square: query budget per image
    limit: int | None = None                   # attack the first N evaluated rows
    steps: int = 10                            # pgd
    p_init: float = atk.SQUARE_P_INIT          # square


@dataclass
class RobustnessConfig:
    corruptions: list[str] = field(default_factory=list)
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    seed: int = 0
    limit: int | None = None
    attacks: list[AttackConfig] = field(default_factory=list)
    torch_factory: str | None = None
    torch_weights: Path | None = None
    batch: int = 250
    metric: str = "top1"                       # edgeprof.metrics: drives scores, curves, mCE


@dataclass
class Outcome:
    records: list[dict[str, Any]]
    skipped: list[ModelRef]
    generated: int            # derived sets made in this run (0 when all were cached)
    reused: int
    predict_s: float          # host time spent in predict requests (inference + transport)


def parse_attacks(spec: dict[str, Any] | None) -> list[AttackConfig]:
    """The sweep file's ``attacks`` table: ``{square = {eps = [...], queries = 100, limit = 100},
    fgsm = {eps = [...]}, pgd = {eps = [...], steps = 10}}``."""
    out = []
    for name, cfg in (spec or {}).items():
        if name not in ATTACKS:
            raise InputError(f"attacks: unknown attack {name!r}; valid: {', '.join(ATTACKS)}")
        cfg = dict(cfg or {})
        unknown = set(cfg) - {"eps", "queries", "limit", "steps", "p_init"}
        if unknown:
            raise InputError(f"attacks.{name}: unknown key(s) {sorted(unknown)}")
        out.append(AttackConfig(name=name, eps=M.parse_eps(cfg.get("eps", "2/255,8/255"),
                                                             f"attacks.{name}.eps"),
                                queries=_positive(cfg.get("queries", 1000), f"attacks.{name}.queries"),
                                limit=_positive(cfg["limit"], f"attacks.{name}.limit")
                                if cfg.get("limit") is not None else None,
                                steps=_positive(cfg.get("steps", 10), f"attacks.{name}.steps"),
                                p_init=float(cfg.get("p_init", atk.SQUARE_P_INIT))))
    return out


def _positive(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise InputError(f"{what} = {v!r}: must be a positive integer")
    return v


def worker_spec_for(ref: ModelRef, raw_dtype: str) -> dict[str, Any]:
    """The variant's InputSpec with the raw dtype made explicit (never the worker's default,
    which would take float32 adversarial inputs for data in [0, 1])."""
    return worker_spec(InputSpec.from_dict(ref.input_spec or {}), raw_dtype)


# -- one model ------------------------------------------------------------------------------------


@dataclass
class _Cell:
    metrics: dict[str, Any]
    pred: np.ndarray
    probs: np.ndarray | None = None
    rows: np.ndarray | None = None     # the task metric's per-row statistics


class _Run:
    """State shared across the models of one evaluation: data, cached sets, staging, progress."""

    def __init__(self, images: ImageSet, config: RobustnessConfig, target: Any, cache: DataCache,
                 progress: Progress, total_units: float):
        from ..metrics import get_metric, labels_of

        from ..targets.pool import WorkerPool

        self.images, self.config, self.target, self.cache = images, config, target, cache
        self.pool = WorkerPool(target)  # the models load one after another into two workers
        self.metric = get_metric(config.metric)
        self.labels = labels_of(images.data, images.n)
        self.skipped: dict[str, str] = {}   # what was not evaluated, and why
        self.progress, self.total, self.done = progress, max(total_units, 1.0), 0.0
        self._staged: dict[Path, str] = {}
        self._lock = threading.RLock()
        self.predict_s = 0.0
        data = images.data
        self.clean_npz = data.path if data.path.is_file() else cache.get(
            {"kind": "clean", "data_sha256": data.sha256},
            lambda: dict(data.x, **({"y": data.y} if data.y is not None else {})))

    def tick(self, desc: str, units: float = 0.0) -> None:
        with self._lock:  # two models may be evaluated at once
            self.done += units
            self.progress(desc, min(1.0, self.done / self.total))

    def stage(self, path: Path) -> str:
        with self._lock:
            if path not in self._staged:
                self._staged[path] = self.target.stage(path)
            return self._staged[path]

    def _request(self, w, **args: Any) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        out = w.request("predict", **args)["outputs"]
        with self._lock:
            self.predict_s += time.perf_counter() - t0
        return {k: decode_array(v) for k, v in out.items()}

    def predict_all(self, w, spec, batch: int, npz: str, stop: int,
                    row_values: int = 0) -> dict[str, np.ndarray]:
        """Every output for rows [0, stop) of a staged npz, through the worker client's
        ``predict_rows`` (replies sized to stay under its limit)."""
        t0 = time.perf_counter()
        out = w.predict_rows(npz, stop, batch=batch, spec=spec)
        with self._lock:
            self.predict_s += time.perf_counter() - t0
        return out

    def predict(self, w, spec, batch: int, npz: str, stop: int, classes: int) -> np.ndarray:
        """The first output for rows [0, stop) of a staged npz, as float32."""
        out = self.predict_all(w, spec, batch, npz, stop, classes)
        return next(iter(out.values())).astype(np.float32)

    def predict_arrays(self, w, spec, batch: int, name: str, raw: np.ndarray) -> np.ndarray:
        """First outputs for inline rows, sent in requests of at most ~64 MiB."""
        rows = max(1, REPLY_MAX_BYTES // max(1, raw[:1].nbytes))
        parts = [next(iter(self._request(w, arrays={name: encode_array(raw[i:i + rows])},
                                         batch=batch, spec=spec).values())).astype(np.float32)
                 for i in range(0, len(raw), rows)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _cell(outputs: np.ndarray, labels: np.ndarray | None, probabilities: bool,
          base: _Cell | None, keep_probs: bool) -> _Cell:
    logp = M.log_probabilities(outputs, probabilities)
    probs = np.exp(logp)
    pred = logp.argmax(axis=1).astype(np.int32)
    if labels is not None:
        m = M.classification(outputs, labels, probabilities)
    else:
        m = {"n": int(len(pred))}
    if base is not None:
        m["agreement"] = M.agreement(pred, base.pred)
        if base.probs is not None:
            m["output_drift"] = M.total_variation(probs, base.probs)
    return _Cell(m, pred, probs.astype(np.float16) if keep_probs else None)


def _metric_cell(run: _Run, outputs: dict[str, np.ndarray], cell: _Cell | None,
                 ref: dict[str, np.ndarray] | None) -> _Cell:
    """The task metric's score of one evaluated set (added to ``cell`` when there is one).
    ``ref``: outputs that ``agreement`` compares with (the baseline's on clean data)."""
    metric, labels = run.metric, run.labels
    if metric.needs_reference:
        labels = dict(labels, **{f"ref:{k}": v for k, v in (ref or outputs).items()})
    rows = metric.rows(outputs, labels)
    s = metric.summary(rows, run.config.seed)
    cell = cell or _Cell({"n": s["n"]}, np.zeros(0, np.int32))
    cell.metrics.update(score=s["score"], score_ci=s["score_ci"])
    cell.rows = rows
    return cell


def _check_rows(outputs: dict[str, np.ndarray], n: int, where: str) -> None:
    for name, a in outputs.items():
        if len(a) != n:
            raise InputError(f"{where}: output {name!r} has {len(a)} rows for {n} inputs")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise InputError(f"{where}: output {name!r} contains NaN or inf")


def _row_values(outputs: list[dict[str, Any]]) -> int:
    """Values per row over every output (unknown dimensions counted as 1000)."""
    total = 0
    for o in outputs:
        dims = [d if isinstance(d, int) and d > 0 else 1000 for d in (o.get("shape") or [])[1:]]
        total += int(np.prod(dims)) if dims else 1
    return total


def _evaluate_model(run: _Run, ref: ModelRef, base: dict | None, do_attacks: bool,
                    transfer: dict[str, dict[str, Any]], keep_probs: bool) -> dict[str, Any]:
    """Clean, corrupted and attacked outputs of one model through one worker."""
    from ..metrics import is_classification

    im, cfg = run.images, run.config
    labels = im.labels
    classify, task = is_classification(run.metric), run.metric.name != "top1"
    base_ref = base["clean_outputs"] if base else None
    spec = worker_spec_for(ref, im.raw_dtype)
    clean_npz = run.stage(run.clean_npz)
    with run.pool.worker(f"{ref.name} robustness") as w:
        loaded = w.load(run.stage(ref.path), npz=clean_npz, spec=spec)
        inp = loaded["inputs"][0]
        batch = cfg.batch
        if loaded.get("runtime") == "onnxruntime" and isinstance(inp["shape"][0], int):
            batch = inp["shape"][0]  # whole batches of the model's own; the worker pads the last
        run.tick(f"{ref.name}: clean")
        out_shape = loaded["outputs"][0]["shape"]
        classes = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else 1000
        row_values = _row_values(loaded["outputs"])
        clean_all = run.predict_all(w, spec, batch, clean_npz, im.n, row_values)
        _check_rows(clean_all, im.n, ref.name)
        probabilities = False
        if classify:
            clean_out = next(iter(clean_all.values())).astype(np.float32)
            M.check_outputs(clean_out, labels, im.n, ref.name)
            probabilities = M.looks_like_probabilities(clean_out)
            n_cells = 1 + len(cfg.corruptions) * len(cfg.severities)
            keep_probs = keep_probs and \
                im.n * clean_out.shape[1] * n_cells * 2 <= BASELINE_PROBS_MAX_BYTES
            clean_cell = _cell(clean_out, labels, probabilities,
                               base["cells"]["clean"] if base else None, keep_probs)
        else:
            clean_cell = None
        if task:
            clean_cell = _metric_cell(run, clean_all, clean_cell, base_ref)
        cells = {"clean": clean_cell}
        run.tick(f"{ref.name}: clean", im.n)
        for c in cfg.corruptions:
            for s in cfg.severities:
                run.tick(f"{ref.name}: {c} {s}")
                made = run.cache.generated
                path = corrupted_set(run.cache, im, c, s, cfg.seed)
                if run.cache.generated > made:
                    run.tick(f"generated {c} {s}", im.n)
                out_all = run.predict_all(w, spec, batch, run.stage(path), im.n, row_values)
                _check_rows(out_all, im.n, f"{ref.name} ({c} {s})")
                cell = None
                if classify:
                    out = next(iter(out_all.values())).astype(np.float32)
                    M.check_outputs(out, None, im.n, f"{ref.name} ({c} {s})")
                    bcell = base["cells"].get((c, s)) if base else None
                    cell = _cell(out, labels, probabilities, bcell, keep_probs)
                if task:  # agreement: with the baseline's clean outputs (its own, for it)
                    cell = _metric_cell(run, out_all, cell,
                                        base_ref if base_ref is not None else clean_all)
                cells[(c, s)] = cell
                run.tick(f"{ref.name}: {c} {s}", im.n)
        results: dict[str, dict[str, Any]] = {}
        if do_attacks and classify:
            for a in cfg.attacks:
                if a.name == "square":
                    results["square"] = _square(run, w, spec, batch, ref, inp["name"], a)
            for name, per_eps in transfer.items():
                results[name] = {}
                for label, t in per_eps.items():
                    out = run.predict(w, spec, batch, run.stage(t["path"]), t["n"], classes)
                    ok = out.argmax(axis=1) == labels[: t["n"]]
                    results[name][label] = dict(t["summary"], robust_accuracy=float(ok.mean()),
                                                n=int(t["n"]))
                    run.tick(f"{ref.name}: {name} {label}", t["n"])
    return {"cells": cells, "attacks": results, "probabilities": probabilities,
            "runtime": loaded.get("runtime"), "lab": getattr(w, "lab_report", lambda: None)(),
            "clean_outputs": clean_all if run.metric.needs_reference else None}


def _square(run: _Run, w, spec, batch: int, ref: ModelRef, input_name: str,
            a: AttackConfig) -> dict[str, Any]:
    im = run.images
    n = min(a.limit or im.n, im.n)
    x, y = im.float01(n), im.labels[:n]

    def predict(x01: np.ndarray) -> np.ndarray:
        raw = im.to_raw(x01, exact=True)
        return run.predict_arrays(w, spec, batch, input_name, raw)

    out = {}
    for label, eps in a.eps:
        base = run.done

        def prog(it: int, total: int, label: str = label) -> None:
            run.done = base + n * it
            run.tick(f"{ref.name}: square {label} query {it}/{total}")

        if hasattr(w, "map_rows"):  # a group of boards (targets/shard.py): whole row shards each
            res = atk.SquareResult.concat(w.map_rows(n, lambda req, lo, hi, eps=eps: (
                atk.square_attack_linf(lambda x01: run.predict_arrays(
                    SimpleNamespace(request=req), spec, batch, input_name,
                    im.to_raw(x01, exact=True)), x[lo:hi], y[lo:hi], eps, a.queries, a.p_init,
                    run.config.seed, rows=np.arange(lo, hi)))))
        else:
            res = atk.square_attack_linf(predict, x, y, eps, a.queries, a.p_init, run.config.seed,
                                         prog)
        summary = res.summary(eps, x)
        if not summary["within_eps"]:  # a bug of ours: never record it as a result
            raise EdgeprofError(f"square attack left the eps-ball ({summary['max_linf']:g} > {eps:g})")
        out[label] = dict(summary, queries_budget=a.queries, p_init=a.p_init)
        run.done = base
        run.tick(f"{ref.name}: square {label}", n * a.queries)
    return out


# -- records --------------------------------------------------------------------------------------


def _record(ref: ModelRef, target: str, im: ImageSet, cfg: RobustnessConfig, own: dict,
            base: dict | None, baseline_id: str | None, metric: Any = None,
            skipped: dict[str, str] | None = None) -> dict[str, Any]:
    """One robustness record. ``metric`` (edgeprof.metrics; top-1 when None) drives the
    scores, CE and mCE; top-1's accuracy, calibration and attacks are kept for classification
    metrics, and ``skipped`` says what was not evaluated and why."""
    from ..metrics import get_metric, is_classification, mean_over_cells_ci

    metric = metric or get_metric("top1")
    rec: dict[str, Any] = dict(
        variant_id=ref.id, root_id=ref.root_id or ref.id, target=target, threads=1, batch=None,
        data_sha256=im.data.sha256,
        model={"name": ref.name, "path": str(ref.path), "format": ref.format,
               "model_bytes": ref.model_bytes, "zlib_bytes": ref.zlib_bytes},
        runtime=own["runtime"], **({"lab": own["lab"]} if own.get("lab") else {}), n=im.n, labels=im.labels is not None, baseline_id=baseline_id,
        corruptions=list(cfg.corruptions), severities=list(cfg.severities), limit=cfg.limit,
        seed=cfg.seed, outputs_are_probabilities=own["probabilities"], attacks=own["attacks"],
        metric=metric.name, higher_is_better=metric.higher_is_better,
        skipped=dict(skipped or {}))
    own_cells = {k: c.metrics for k, c in own["cells"].items()}
    base_cells = {k: c.metrics for k, c in base["cells"].items()} if base else None
    if is_classification(metric):
        rec.update(M.summarize(own_cells, base_cells, cfg.corruptions, cfg.severities, im.n,
                               im.labels is not None, baseline_id == ref.id))
    else:
        rec.update(clean_accuracy=None, clean_accuracy_ci=None, mean_corruption_accuracy=None,
                   mean_corruption_accuracy_ci=None, calibration=None, ece=None,
                   agreement_with_baseline=None, output_drift=None)
    if metric.name == "top1":
        rec.update(clean_score=rec["clean_accuracy"], clean_score_ci=rec["clean_accuracy_ci"],
                   mean_corruption_score=rec["mean_corruption_accuracy"],
                   mean_corruption_score_ci=rec["mean_corruption_accuracy_ci"],
                   error_rule="1 - score")
    else:
        rows = [own["cells"][(c, s)].rows for c in cfg.corruptions for s in cfg.severities]
        ci = mean_over_cells_ci(rows, metric.reduce, cfg.seed,
                                min(metric.resamples, 1000)) if rows else None
        rec.update(M.summarize_metric(own_cells, base_cells, cfg.corruptions, cfg.severities,
                                      im.n, metric, ci))
    robust = [e["robust_accuracy"] for per in rec["attacks"].values() for e in per.values()
              if e.get("robust_accuracy") is not None]
    rec["robust_accuracy"] = min(robust) if robust else None  # the worst attack's, for tables
    return new_record("robustness", **rec)


def record_key(ref: ModelRef, target: str, data: Dataset, metric: str = "top1") -> RecordKey:
    return RecordKey.evaluation("robustness", ref.id, target, data.sha256, metric)


# -- the API --------------------------------------------------------------------------------------


def evaluate_robustness(models: list[ModelRef], data: Dataset, config: RobustnessConfig, *,
                        target: Any = None, target_name: str | None = None,
                        cache_dir: str | Path | None = None, baseline: ModelRef | None = None,
                        store: Any = None, progress: Progress | None = None,
                        on_error: Callable[[ModelRef | None, Exception], None] | None = None
                        ) -> Outcome:
    """Evaluate ``baseline`` (first) and ``models`` on ``target``; one record per model.

    ``store`` (a ResultStore): keys already there are skipped and new records appended. With
    ``on_error``, a model that fails is reported there and the others go on; without, it raises.
    """
    from ..metrics import get_metric, is_classification
    from ..targets import get_target
    from ..variants.cache import cache_root

    progress = progress or (lambda d, f: None)
    metric = get_metric(config.metric)
    images = image_set(data, config.limit)
    config = dataclasses.replace(
        config, corruptions=M.parse_corruptions(config.corruptions, images.channels),
        severities=M.parse_severities(config.severities))
    not_done: dict[str, str] = {}
    if not is_classification(metric):
        why = f"they score top-1 of a classifier; the metric here is {metric.name}"
        not_done["calibration"] = f"ECE, NLL and Brier skipped: {why}"
        if config.attacks:
            not_done["attacks"] = (f"attacks ({', '.join(a.name for a in config.attacks)}) "
                                   f"skipped: {why}")
            config = dataclasses.replace(config, attacks=[])
    if config.attacks and images.labels is None:
        exc = InputError(f"{data.path.name}: attacks need labels 'y'")
        if on_error is None:
            raise exc
        on_error(None, exc)
        config = dataclasses.replace(config, attacks=[])
    target = target or get_target("local")
    tname = target_name or getattr(target, "name", "local")
    cache = DataCache(cache_root(cache_dir))
    order: list[ModelRef] = []
    for m in ([baseline] if baseline is not None else []) + list(models):
        if m.id not in {o.id for o in order}:
            order.append(m)
    todo = [m for m in order
            if store is None or not store.has(record_key(m, tname, data, metric.name))]
    skipped = [m for m in order if m not in todo]
    base_needed = baseline is not None and any(m.id != baseline.id for m in todo)
    n, cells = images.n, len(config.corruptions) * len(config.severities)
    per_model = n * (1 + cells)
    attack_units = sum(min(a.limit or n, n) * (a.queries if a.name == "square" else 1) * len(a.eps)
                       for a in config.attacks)
    transfer_units = sum(min(a.limit or n, n) * len(a.eps) for a in config.attacks
                         if a.name in TRANSFER)
    total = (len(todo) + (base_needed and baseline in skipped)) * per_model \
        + len(todo) * attack_units + n * cells + transfer_units
    records: list[dict[str, Any]] = []
    if not todo:
        return Outcome(records, skipped, cache.generated, cache.reused, 0.0)
    run = _Run(images, config, target, cache, progress, total)
    run.skipped = not_done
    try:
        source_spec = worker_spec_for_source((baseline or order[0]).input_spec, images.raw_dtype)
        transfer = atk.craft_transfer(images, [a for a in config.attacks if a.name in TRANSFER],
                                      config.torch_factory, config.torch_weights, source_spec,
                                      cache, config.seed, run.tick)
    except EdgeprofError as exc:
        if on_error is None:
            raise
        on_error(None, exc)
        transfer = {}
    base_state = None
    lock = threading.Lock()
    failures: list[Exception] = []

    def one(m: ModelRef) -> None:
        nonlocal base_state
        is_base = baseline is not None and m.id == baseline.id
        try:
            state = _evaluate_model(run, m, None if is_base else base_state, m in todo,
                                    transfer, keep_probs=is_base and base_needed)
        except EdgeprofError as exc:
            with lock:
                if on_error is None:
                    failures.append(exc)
                else:
                    on_error(m, exc)
            return
        with lock:
            if is_base:
                base_state = state
            if m in todo:
                rec = _record(m, tname, images, config, state, base_state,
                              baseline.id if baseline is not None else None, run.metric,
                              run.skipped)
                if store is not None:
                    store.append(rec)
                records.append(rec)

    # The baseline first (every other record is relative to it, and it generates the corrupted
    # sets); then the others two at a time: evaluation is not timed, so both cores may share it.
    pending = [m for m in order if m in todo or (baseline is not None and m.id == baseline.id
                                                 and base_needed)]
    first = [m for m in pending if baseline is not None and m.id == baseline.id]
    try:
        for m in first:
            one(m)
        if failures:
            raise failures[0]
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(one, [m for m in pending if m not in first]))
    finally:
        run.pool.close()
    if failures:
        raise failures[0]
    records.sort(key=lambda r: [m.id for m in order].index(r["variant_id"]))
    progress("done", 1.0)
    return Outcome(records, skipped, cache.generated, cache.reused, run.predict_s)


def worker_spec_for_source(input_spec: dict | None, raw_dtype: str) -> dict[str, Any]:
    """The baseline's InputSpec for the PyTorch source, always NCHW (PyTorch's layout, even
    when the baseline is an NHWC TFLite file)."""
    return dict(worker_spec(InputSpec.from_dict(input_spec or {}), raw_dtype)["*"], layout="NCHW")


# -- the sweep file's tables ---------------------------------------------------------------------


def config_from_plan(robustness: dict[str, Any] | None, attacks: dict[str, Any] | None,
                     torch_factory: str | None = None, torch_weights: Path | None = None,
                     metric: str | None = None) -> RobustnessConfig:
    """The sweep file's ``[measure] robustness`` and ``attacks`` tables as a config;
    ``metric`` is the sweep's ``[measure] metric`` (top-1 when None)."""
    r = dict(robustness or {})
    unknown = set(r) - {"corruptions", "severities", "limit", "seed", "batch"}
    if unknown:
        raise InputError(f"[measure] robustness: unknown key(s) {sorted(unknown)}; allowed: "
                         "corruptions, severities, limit, seed, batch")
    limit = r.get("limit")
    return RobustnessConfig(
        corruptions=r.get("corruptions", "all" if robustness else "none"),
        severities=M.parse_severities(r.get("severities", "1-5"), "robustness.severities"),
        seed=int(r.get("seed", 0)),
        limit=_positive(limit, "robustness.limit") if limit is not None else None,
        attacks=parse_attacks(attacks), torch_factory=torch_factory, torch_weights=torch_weights,
        batch=_positive(r.get("batch", 250), "robustness.batch"), metric=metric or "top1")


def families(cache, models: list[str], preprocess: Path | None, baseline: str | None) -> list:
    """[(baseline ref, [model refs])]: one group per baseline (each model's fp32 root unless
    --baseline names one). --preprocess applies to the root models given."""
    from ..variants.family import open_variant

    def open_one(arg: str):
        ref, v = cache.resolve(arg)
        if v is not None and v.parent is not None:
            return v, cache.get(v.root)
        return open_variant(cache, arg, preprocess)

    fixed = open_one(baseline)[0] if baseline else None
    groups: dict[str, tuple[Any, list]] = {}
    for arg in models:
        v, root = open_one(arg)
        base = fixed or root
        if base is None:
            raise InputError(f"{v.short_id}: its root {v.root[:12]} is not in the cache "
                             f"{cache.root}; name a baseline with --baseline MODEL")
        entry = groups.setdefault(base.id, (cache.ref(base), []))
        if v.id not in {r.id for r in entry[1]}:
            entry[1].append(cache.ref(v))
    return list(groups.values())
