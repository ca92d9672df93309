"""Task metrics: the figure that matters for a model's task, not only top-1.

A metric scores model outputs (a dict: output name -> array, rows first) against labels (the
data file's ``y`` and ``y_<name>`` arrays) row by row, then reduces the rows to one figure; the
confidence interval comes from the rows (Wilson for proportions, else a seeded percentile
bootstrap over rows). Each metric says which direction is better.

Built in (``--metric`` / ``[measure] metric``): ``top1``, ``topk:K``, ``mae``, ``rmse`` (regression,
keypoints), ``miou`` (segmentation: class scores ``(N, C, H, W)`` or ``(N, H, W, C)`` against a
mask ``(N, H, W)``), ``agreement`` (no labels: top-1 agreement with the fp32 root, or for
non-classifier outputs the share of rows whose max abs error stays within 1 % of the root's
output range; ``agreement:<output>`` names the head to compare, else the first output is).
Built-ins score the output ``<name>`` against ``y_<name>`` when the data has it, else the first
output against ``y``.

Where a metric stands for an error (corruption error, mCE), the error of a higher-is-better
metric is ``1 - score`` (scores that are fractions: top1, topk, miou, agreement) and the error of
a lower-is-better metric is the score itself (mae, rmse): see ``error_of``.

A user metric is ``module:function`` (a module on the path, or ``path/to/file.py:function``)::

    def score(outputs: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> np.ndarray:
        ...  # one score per row, higher is better (set score.lower_is_better = True otherwise)

``labels`` holds ``y`` and every ``y_<name>`` (and ``y_<name>_offsets`` for rows of different
lengths, e.g. boxes). The figure is the mean of the rows' scores.

A figure that is not a mean of rows (mAP, F1) sets ``score.reduce``: the function then returns
per-row statistics ``(N, ...)`` (anything a row contributes, e.g. its detections and ground
truth padded to a fixed width) and ``score.reduce(rows) -> float`` computes the figure from any
subset of rows, so the bootstrap CI resamples rows and calls it again (``score.resamples``
times, 200 unless set). See examples/detection/metric.py (mAP@0.5 by pycocotools).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import InputError

BUILT_IN = ("top1", "topk:K", "mae", "rmse", "miou", "agreement")
AGREEMENT_TOL = 0.01


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    per_row: Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], np.ndarray]
    reduce: Callable[[np.ndarray], float]
    proportion: bool = False          # per-row 0/1: Wilson interval
    needs_reference: bool = False     # agreement: outputs of the fp32 root go in labels["ref:*"]
    resamples: int = 2000             # bootstrap resamples of the CI

    def score(self, outputs: dict[str, np.ndarray], labels: dict[str, np.ndarray],
              seed: int = 0) -> dict[str, Any]:
        """The figure, its 95 % CI and n."""
        return self.summary(self.rows(outputs, labels), seed)

    def rows(self, outputs: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> np.ndarray:
        """Per-row statistics (checked: some rows, all finite)."""
        rows = np.asarray(self.per_row(outputs, labels), dtype=np.float64)
        if rows.ndim == 0 or len(rows) == 0:
            raise InputError(f"metric {self.name}: no rows to score")
        if not np.all(np.isfinite(rows)):
            raise InputError(f"metric {self.name}: non-finite per-row scores")
        return rows

    def summary(self, rows: np.ndarray, seed: int = 0) -> dict[str, Any]:
        value = float(self.reduce(rows))
        n = int(len(rows))
        if self.proportion:
            from .measure.accuracy import wilson_interval
            ci = list(wilson_interval(int(round(rows.sum())), n))
        else:
            ci = bootstrap_ci(rows, self.reduce, seed, self.resamples)
        return {"metric": self.name, "score": value, "score_ci": ci, "n": n,
                "higher_is_better": self.higher_is_better}


def bootstrap_ci(rows: np.ndarray, reduce: Callable[[np.ndarray], float], seed: int = 0,
                 resamples: int = 2000) -> list[float]:
    # (the rows of a resample keep their order of draw; reduce sees them as distinct rows)
    """95 % percentile bootstrap over rows (seeded)."""
    rng = np.random.default_rng(seed)
    n = len(rows)
    idx = rng.integers(0, n, size=(resamples, n))
    if reduce is _mean:
        stats = rows[idx].mean(axis=1) if rows.ndim == 1 else None
    else:
        stats = None
    if stats is None:
        stats = np.array([reduce(rows[i]) for i in idx])
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return [float(lo), float(hi)]


def mean_over_cells_ci(cells: list[np.ndarray], reduce: Callable[[np.ndarray], float],
                       seed: int = 0, resamples: int = 1000) -> list[float]:
    """95 % percentile bootstrap of the mean over cells of ``reduce(rows)``, where every cell
    holds the same rows (one evaluated set under several corruptions): a resample draws rows,
    and the same rows in every cell, so the cells' dependence is kept."""
    rng = np.random.default_rng(seed)
    n = len(cells[0])
    if reduce is _mean and all(c.ndim == 1 for c in cells):
        per_row = np.mean(np.stack(cells), axis=0)   # mean over cells of a mean over rows
        stats = per_row[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    else:
        idx = rng.integers(0, n, size=(min(resamples, 500), n))  # reduce per resample: fewer
        stats = np.array([np.mean([reduce(c[i]) for c in cells]) for i in idx])
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return [float(lo), float(hi)]


def _mean(rows: np.ndarray) -> float:
    return float(np.mean(rows))


def _rmse(rows: np.ndarray) -> float:
    return float(np.sqrt(np.mean(rows)))


def _pick(outputs: dict[str, np.ndarray], labels: dict[str, np.ndarray],
          what: str) -> tuple[np.ndarray, np.ndarray]:
    """(output, label): output <name> against y_<name> when the data has it, else the first
    output against y."""
    for name, out in outputs.items():
        if f"y_{name}" in labels:
            return np.asarray(out), np.asarray(labels[f"y_{name}"])
    if "y" not in labels:
        have = ", ".join(k for k in labels if not k.startswith("ref:")) or "none"
        raise InputError(f"metric {what}: the data has no labels 'y' or 'y_<output>' for outputs "
                         f"{', '.join(outputs)} (labels: {have})")
    return np.asarray(next(iter(outputs.values()))), np.asarray(labels["y"])


def _top1(outputs, labels):
    out, y = _pick(outputs, labels, "top1")
    _classes(out, y, "top1")
    return (out.argmax(axis=1) == y).astype(np.float64)


def _classes(out, y, what):
    if out.ndim != 2 or len(out) != len(y):
        raise InputError(f"metric {what}: expects class scores (N, classes) for N labels; got "
                         f"output {tuple(out.shape)} and labels {tuple(y.shape)}")


def _topk(k: int):
    def per_row(outputs, labels):
        out, y = _pick(outputs, labels, f"topk:{k}")
        _classes(out, y, f"topk:{k}")
        top = np.argpartition(-out, min(k, out.shape[1]) - 1, axis=1)[:, :k]
        return (top == y[:, None]).any(axis=1).astype(np.float64)
    return per_row


def _errors(what):
    def per_row(outputs, labels):
        out, y = _pick(outputs, labels, what)
        out = out.reshape(len(out), -1).astype(np.float64)
        y = y.reshape(len(y), -1).astype(np.float64)
        if out.shape != y.shape:
            raise InputError(f"metric {what}: output {out.shape[1]} values per row, labels "
                             f"{y.shape[1]}")
        d = out - y
        return np.abs(d).mean(axis=1) if what == "mae" else (d ** 2).mean(axis=1)
    return per_row


def _miou_rows(outputs, labels):
    """Per row: intersections then unions of each class (2C columns); reduce sums them."""
    out, y = _pick(outputs, labels, "miou")
    if out.ndim != 4 or y.ndim != 3:
        raise InputError(f"metric miou: expects class scores (N, C, H, W) or (N, H, W, C) and a "
                         f"mask (N, H, W); got {tuple(out.shape)} and {tuple(y.shape)}")
    if out.shape[2:] == y.shape[1:]:
        pred, c = out.argmax(axis=1), out.shape[1]
    elif out.shape[1:3] == y.shape[1:]:
        pred, c = out.argmax(axis=3), out.shape[3]
    else:
        raise InputError(f"metric miou: output {tuple(out.shape)} does not match mask "
                         f"{tuple(y.shape)}")
    y = y.astype(np.int64)
    inter = np.stack([((pred == k) & (y == k)).sum(axis=(1, 2)) for k in range(c)], axis=1)
    union = np.stack([((pred == k) | (y == k)).sum(axis=(1, 2)) for k in range(c)], axis=1)
    return np.concatenate([inter, union], axis=1).astype(np.float64)


def _miou(rows: np.ndarray) -> float:
    c = rows.shape[1] // 2
    inter, union = rows[:, :c].sum(axis=0), rows[:, c:].sum(axis=0)
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else 0.0


def _agreement(outputs, labels, head: str | None = None):
    refs = {k[4:]: v for k, v in labels.items() if k.startswith("ref:")}
    if not refs:
        raise InputError("metric agreement: needs the fp32 root's outputs (used in sweeps)")
    if head is not None:
        if head not in outputs or head not in refs:
            raise InputError(f"metric agreement:{head}: the model has no output {head!r} "
                             f"(outputs: {', '.join(outputs)})")
        name = head
    else:
        name = next((n for n in outputs if n in refs), next(iter(outputs)))
    out = np.asarray(outputs[name], dtype=np.float64)
    ref = np.asarray(refs.get(name, next(iter(refs.values()))), dtype=np.float64)
    if out.shape != ref.shape:
        raise InputError(f"metric agreement: output {out.shape} vs the root's {ref.shape}")
    if out.ndim == 2 and out.shape[1] > 1:
        return (out.argmax(axis=1) == ref.argmax(axis=1)).astype(np.float64)
    span = float(ref.max() - ref.min()) or 1.0
    err = np.abs(out - ref).reshape(len(out), -1).max(axis=1)
    return (err <= AGREEMENT_TOL * span).astype(np.float64)


def _user(spec: str) -> Metric:
    mod_name, _, attr = spec.rpartition(":")
    try:
        if mod_name.endswith(".py") or "/" in mod_name:
            path = Path(mod_name)
            if not path.is_file():
                raise InputError(f"--metric {spec}: no such file {path}")
            loader = importlib.util.spec_from_file_location(f"edgeprof_metric_{path.stem}", path)
            module = importlib.util.module_from_spec(loader)
            sys.modules[loader.name] = module
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"--metric {spec}: importing {mod_name} failed: "
                         f"{type(exc).__name__}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise InputError(f"--metric {spec}: {mod_name} has no function {attr!r}")

    user_reduce = getattr(fn, "reduce", None)
    if user_reduce is not None and not callable(user_reduce):
        raise InputError(f"--metric {spec}: {attr}.reduce must be a function rows -> figure")
    resamples = getattr(fn, "resamples", 200 if user_reduce else 2000)
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 20:
        raise InputError(f"--metric {spec}: {attr}.resamples must be an integer >= 20")

    def per_row(outputs, labels):
        try:
            rows = fn(outputs, {k: v for k, v in labels.items() if not k.startswith("ref:")})
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"metric {spec} failed: {type(exc).__name__}: {exc}") from None
        rows = np.asarray(rows, dtype=np.float64)
        n = len(next(iter(outputs.values())))
        if user_reduce is None and rows.shape != (n,):
            raise InputError(f"metric {spec} must return one score per row ({n},); got "
                             f"{rows.shape}")
        if user_reduce is not None and (rows.ndim == 0 or len(rows) != n):
            raise InputError(f"metric {spec} must return per-row statistics ({n}, ...); got "
                             f"{rows.shape}")
        return rows

    def reduce(rows: np.ndarray) -> float:
        try:
            return float(user_reduce(rows))
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"metric {spec}: reduce failed: {type(exc).__name__}: {exc}") from None

    return Metric(name=spec, higher_is_better=not getattr(fn, "lower_is_better", False),
                  per_row=per_row, reduce=reduce if user_reduce else _mean, resamples=resamples)


def get_metric(spec: str | None) -> Metric:
    """A metric by its name (see BUILT_IN) or ``module:function``."""
    s = (spec or "top1").strip()
    if s == "top1":
        return Metric("top1", True, _top1, _mean, proportion=True)
    if s.startswith("topk:"):
        try:
            k = int(s.split(":", 1)[1])
        except ValueError:
            k = 0
        if k < 1:
            raise InputError(f"--metric {s!r}: topk:K takes a whole K >= 1, e.g. topk:5")
        return Metric(s, True, _topk(k), _mean, proportion=True)
    if s == "mae":
        return Metric("mae", False, _errors("mae"), _mean)
    if s == "rmse":
        return Metric("rmse", False, _errors("rmse"), _rmse)
    if s == "miou":
        return Metric("miou", True, _miou_rows, _miou)
    if s == "agreement":
        return Metric("agreement", True, _agreement, _mean, proportion=True, needs_reference=True)
    if s.startswith("agreement:"):
        head = s.split(":", 1)[1].strip()
        if not head:
            raise InputError(f"--metric {s!r}: agreement:<output> names a model output")
        return Metric(s, True, lambda o, lab: _agreement(o, lab, head), _mean, proportion=True,
                      needs_reference=True)
    if ":" in s:
        return _user(s)
    raise InputError(f"--metric {s!r}: one of {', '.join(BUILT_IN)}, or module:function")


def is_classification(metric: Metric) -> bool:
    """Top-1 or top-k of a classifier: calibration (ECE) and attacks apply."""
    return metric.name == "top1" or metric.name.startswith("topk:")


def is_fraction(metric: Metric) -> bool:
    """Scores in [0, 1] (shown as percentages)."""
    return metric.proportion or metric.name == "miou"


def error_of(metric: Metric, score: float) -> float:
    """The error a score stands for in corruption errors (CE, mCE): ``1 - score`` for a
    higher-is-better metric (a fraction such as accuracy or agreement), the score itself for a
    lower-is-better one (mae, rmse)."""
    return 1.0 - score if metric.higher_is_better else score


def format_score(metric: Metric, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if is_fraction(metric) else f"{value:.4g}"


def labels_of(data: Any, n: int) -> dict[str, np.ndarray]:
    """The labels of the first ``n`` rows of a Dataset: ``y`` and every ``y_<name>`` (rows with
    offsets are passed whole, with their offsets)."""
    out: dict[str, np.ndarray] = {}
    if data.y is not None:
        out["y"] = data.y[:n]
    for k, v in (getattr(data, "labels", None) or {}).items():
        offsets = k.endswith("_offsets") or f"{k}_offsets" in data.labels
        out[k] = v if offsets else v[:n]
    return out
