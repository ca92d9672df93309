"""Fidelity: how close a variant's outputs stay to its parent's and to the fp32 root's, measured
on the runtime that runs each file (through the worker), and, with a task metric
(``--metric``, edgeprof.metrics), the metric's score of the variant against its parent's and
the root's on the same rows (``task_metric``)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Dataset


def output_metrics(ref: np.ndarray, test: np.ndarray) -> dict[str, Any]:
    """top-1 agreement (classifier outputs), cosine similarity per sample, max/mean absolute
    error, error relative to the reference's range, and SQNR in dB."""
    ref = np.asarray(ref, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if ref.shape != test.shape:
        raise ValueError(f"output shapes differ: {ref.shape} vs {test.shape}")
    n = ref.shape[0] if ref.ndim else 1
    r2, t2 = ref.reshape(n, -1), test.reshape(n, -1)
    diff = r2 - t2
    out: dict[str, Any] = {"n": int(n)}
    if r2.shape[1] > 1 and ref.ndim == 2:
        out["top1_agreement"] = float((r2.argmax(1) == t2.argmax(1)).mean())
    norms = np.linalg.norm(r2, axis=1) * np.linalg.norm(t2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norms > 0, (r2 * t2).sum(1) / np.where(norms > 0, norms, 1), 1.0)
    out["cosine_mean"] = float(cos.mean())
    out["cosine_min"] = float(cos.min())
    out["max_abs_error"] = float(np.abs(diff).max())
    out["mean_abs_error"] = float(np.abs(diff).mean())
    span = float(r2.max() - r2.min())
    out["relative_max_error"] = out["max_abs_error"] / span if span > 0 else None
    noise = float((diff ** 2).sum())
    signal = float((r2 ** 2).sum())
    # identical outputs have infinite SQNR; JSON has no infinity, so null plus "exact"
    out["sqnr_db"] = 10 * math.log10(signal / noise) if noise > 0 and signal > 0 else None
    out["exact"] = noise == 0
    return out


def compare(ref: list[np.ndarray], test: list[np.ndarray], names: list[str]) -> dict[str, Any]:
    if len(ref) != len(test):
        raise ValueError(f"{len(ref)} outputs vs {len(test)}")
    return {name: output_metrics(a, b) for name, a, b in zip(names, ref, test)}


class FidelityEvaluator:
    """Outputs of models on the first ``rows`` of a data set, through one long-lived local
    worker that loads one model after another (nothing is timed here); cached per model file so
    the root's outputs are computed once per session. ``close()`` ends the worker."""

    def __init__(self, data: Dataset, rows: int, scratch: Path, spec_for: Any = None):
        from ..variants.family import spec_for_worker

        raw_dtype = next(iter(data.x.values())).dtype.name
        self.data, self.rows, self.scratch = data, min(rows, data.n), scratch
        self.spec_for = spec_for or (lambda s: spec_for_worker(s, raw_dtype))
        self._cache: dict[str, tuple[list[str], list[np.ndarray]]] = {}
        self._pool: Any = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> "FidelityEvaluator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def hook(self, parent: Any, root: Any, role: str) -> Any:
        """The fidelity callback of ``apply_pass`` for children of ``parent``."""
        def fidelity(path: Path, variant: Any) -> dict[str, Any]:
            out = self(path, variant, parent.path, root.path, parent.input_spec, root.input_spec)
            out["data_role"] = role
            return out
        return fidelity

    def outputs(self, path: Path, input_spec: dict[str, Any] | None) -> tuple[list[str], list[np.ndarray]]:
        key = str(path)
        if key not in self._cache:
            if self._pool is None:
                from ..targets.local import LocalTarget
                from ..targets.pool import WorkerPool
                self._pool = WorkerPool(LocalTarget())
            npz = str(self.data.npz_path(self.scratch))
            spec = self.spec_for(input_spec)
            with self._pool.worker(f"fidelity {Path(path).name}") as w:
                w.load(path, npz=npz, spec=spec)
                out = w.predict_rows(npz, self.rows, batch=64, spec=spec)
            self._cache[key] = (list(out), list(out.values()))
        return self._cache[key]

    def __call__(self, path: Path, variant: Any, parent_path: Path, root_path: Path,
                 parent_spec: Any, root_spec: Any) -> dict[str, Any]:
        names, mine = self.outputs(path, variant.input_spec)
        return {"data_sha256": self.data.sha256, "rows": self.rows,
                "vs_parent": self._compare(parent_path, parent_spec, names, mine),
                "vs_root": self._compare(root_path, root_spec, names, mine)}

    def _compare(self, ref_path: Path, ref_spec: Any, names: list[str],
                 mine: list[np.ndarray]) -> dict[str, Any]:
        """Outputs paired by name when both models name them alike (a converter may reorder
        them), else by position."""
        ref_names, ref = self.outputs(ref_path, ref_spec)
        if set(names) == set(ref_names):
            ref = [ref[ref_names.index(n)] for n in names]
        return compare(ref, mine, names)


def check_metric_data(metric: Any, data: Dataset | None, flag: str = "--metric") -> None:
    """Refuse early (before any pass runs) a metric without data, or a built-in metric that
    needs labels the data lacks (agreement needs none; a user metric reads what it needs)."""
    from ..errors import InputError

    if metric is None:
        return
    if data is None:
        raise InputError(f"{flag} {metric.name} scores the variant on data: give --data")
    labelled = metric.name in ("top1", "mae", "rmse", "miou") or metric.name.startswith("topk:")
    if labelled and data.y is None and not data.labels:
        raise InputError(f"{flag} {metric.name} needs labels in {data.path.name} ('y' or "
                         f"'y_<output>'); agreement needs none")


def task_metric(ev: "FidelityEvaluator", metric: Any, variant: Any, parent: Any,
                root: Any) -> dict[str, Any]:
    """The task metric of ``variant`` against ``parent`` and ``root`` on the evaluator's rows.

    A labelled metric scores each model against the labels; ``agreement`` scores the variant
    against each reference's outputs (the reference then agrees with itself: 1). ``degradation``
    is the variant's error minus the reference's (edgeprof.metrics.error_of): positive is worse,
    whichever way the metric points. Outputs are paired with the reference's names by position
    when the names differ (a converter may rename them)."""
    from ..metrics import error_of, labels_of

    labels = labels_of(ev.data, ev.rows)
    names, mine = ev.outputs(variant.path, variant.input_spec)
    out: dict[str, Any] = {"metric": metric.name, "higher_is_better": metric.higher_is_better,
                           "data_sha256": ev.data.sha256, "rows": ev.rows}
    for which, ref in (("vs_parent", parent), ("vs_root", root)):
        ref_names, ref_out = ev.outputs(ref.path, ref.input_spec)
        if set(names) == set(ref_names):
            outs = dict(zip(names, mine))
        else:
            outs = dict(zip(ref_names, mine)) if len(names) == len(ref_names) else dict(zip(names, mine))
        refs = dict(zip(ref_names, ref_out))
        if metric.needs_reference:
            lab = dict(labels, **{f"ref:{k}": a for k, a in refs.items()})
            s = metric.score(outs, lab)
            r = {"score": 1.0, "score_ci": None, "n": s["n"]}
        else:
            s, r = metric.score(outs, labels), metric.score(refs, labels)
        out[which] = {"variant": {k: s[k] for k in ("score", "score_ci", "n")},
                      "reference": {k: r[k] for k in ("score", "score_ci", "n")},
                      "degradation": error_of(metric, s["score"]) - error_of(metric, r["score"])}
    return out


def add_task_metric(cache: Any, ev: "FidelityEvaluator | None", metric: Any, variant: Any,
                    parent: Any, root: Any) -> dict[str, Any] | None:
    """Score ``variant`` with ``metric`` (also when it was reused from the cache) and keep the
    figures in its record under ``fidelity.metrics[<name>]``."""
    if metric is None or ev is None:
        return None
    res = task_metric(ev, metric, variant, parent, root)
    fid = dict(variant.fidelity or {})
    fid.setdefault("metrics", {})[metric.name] = res
    variant.fidelity = fid
    cache.update(variant)
    return res
