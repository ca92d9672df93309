"""Accuracy of a model on labelled data, computed from outputs the worker returns."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..data import Dataset
from ..errors import InputError
from ..inputspec import InputSpec, worker_spec
from ..models import ModelRef
from ..results import new_record
from ..targets.client import WorkerClient


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (good at accuracies near 0 or 1)."""
    from scipy import special

    if n == 0:
        return 0.0, 1.0
    z = float(special.ndtri(0.5 + confidence / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def predict(worker: WorkerClient, npz_path: str, n: int, spec: InputSpec | None,
            raw_dtype: str, batch: int = 64) -> np.ndarray:
    """First output of the model for rows [0, n) of an npz file, as float32 (N, ...)."""
    out = worker.predict_rows(npz_path, n, batch=batch, spec=worker_spec(spec, raw_dtype))
    return next(iter(out.values())).astype(np.float32)


def top1(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise InputError(f"model output shape {logits.shape} does not match {labels.shape[0]} labels")
    if labels.max(initial=0) >= logits.shape[1] or labels.min(initial=0) < 0:
        raise InputError(f"labels range {labels.min()}..{labels.max()} but the model has "
                         f"{logits.shape[1]} classes")
    k = int((logits.argmax(axis=1) == labels).sum())
    n = int(labels.shape[0])
    lo, hi = wilson_interval(k, n)
    return {"n": n, "correct": k, "accuracy": k / n, "accuracy_ci": [lo, hi]}


def rows_sha256(data: Dataset, n: int) -> str:
    """The data key of an evaluation on the first ``n`` rows: the file's sha256 when it is all
    of it, else a hash of (file sha256, n), so a different subset is a different key."""
    if n >= data.n:
        return data.sha256
    import hashlib
    return hashlib.sha256(f"{data.sha256}:first:{n}".encode()).hexdigest()


def accuracy_record(model: ModelRef, target: str, threads: int, data: Dataset,
                    logits: np.ndarray) -> dict[str, Any]:
    if data.y is None:
        raise InputError(f"{data.path}: has no labels 'y'; accuracy needs them")
    res = top1(logits, data.y[: len(logits)])
    # per-row top-1: the same rows on two targets can then be compared (measure/parity.py)
    res["pred"] = [int(v) for v in np.asarray(logits).argmax(axis=1)]
    return new_record("accuracy", variant_id=model.id, root_id=model.root_id or model.id, target=target, threads=threads,
                      batch=None, data_sha256=rows_sha256(data, len(logits)),
                      data_file_sha256=data.sha256,
                      model={"name": model.name, "path": str(model.path), "format": model.format,
                             "model_bytes": model.model_bytes, "zlib_bytes": model.zlib_bytes},
                      **res)


def metric_key(data: Dataset, n: int, metric: str) -> str:
    """The data key of an evaluation: the rows, and the metric when it is not top-1 (another
    metric is another measurement; top-1 keys stay as they always were)."""
    key = rows_sha256(data, n)
    if metric == "top1":
        return key
    import hashlib
    return hashlib.sha256(f"{key}:{metric}".encode()).hexdigest()


def outputs_on(target: Any, path: Any, npz: str, n: int, spec: dict[str, Any] | None,
               label: str, pool: Any = None) -> dict[str, np.ndarray]:
    """Every output of a model for rows [0, n) of a staged npz, through a worker of ``target``
    (a long-lived one from ``pool`` when given) at the model's own batch."""
    with (pool.worker(label) if pool is not None else target.start_worker(label)) as w:
        w.load(target.stage(path), npz=npz, spec=spec)
        return w.predict_rows(npz, n, batch=250, spec=spec)


def metric_record(model: ModelRef, target: str, data: Dataset, metric: Any,
                  outputs: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, Any]:
    """An accuracy record: top-1 as always (Wilson CI, per-row predictions), another metric
    (edgeprof.metrics) with ``metric``, ``score``, ``score_ci`` and its direction."""
    first = next(iter(outputs.values()))
    if metric.name == "top1":
        return accuracy_record(model, target, 1, data, first)
    return new_record("accuracy", variant_id=model.id, root_id=model.root_id or model.id,
                      target=target, threads=1, batch=None,
                      data_sha256=metric_key(data, len(first), metric.name),
                      data_file_sha256=data.sha256,
                      model={"name": model.name, "path": str(model.path), "format": model.format,
                             "model_bytes": model.model_bytes, "zlib_bytes": model.zlib_bytes},
                      **metric.score(outputs, labels))
