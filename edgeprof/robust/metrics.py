"""Robustness metrics computed on the host from the outputs a worker returns.

Calibration (ECE, NLL, Brier) takes the model's outputs as logits and applies a softmax; outputs
that already are probabilities (every row non-negative and summing to 1) are used as they are.
Corruption error follows ImageNet-C (Hendrycks & Dietterich, ICLR 2019), with the baseline in
AlexNet's role:

    CE_c          = sum_s err(variant, c, s) / sum_s err(baseline, c, s)
    mCE           = mean_c CE_c
    relative CE_c = sum_s (err(variant, c, s) - err(variant, clean))
                    / sum_s (err(baseline, c, s) - err(baseline, clean))
    relative mCE  = mean_c relative CE_c

A ratio whose denominator is not positive (the baseline makes no error, or does not degrade) is
undefined: it is None and left out of the mean.

With a task metric (``--metric``, edgeprof.metrics) the metric's score replaces accuracy in every
figure: clean and mean corruption score, and the error ``err`` above is ``1 - score`` for a
higher-is-better metric (top1, topk, miou, agreement: fractions) and the score itself for a
lower-is-better one (mae, rmse). Calibration (ECE, NLL, Brier) and attacks score top-1 of a
classifier, so they are computed only for top1 and topk:K; with another metric the record says
why they were skipped.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ..errors import InputError
from ..measure.accuracy import wilson_interval

ECE_BINS = 15


# -- outputs -> probabilities -----------------------------------------------------------------


def looks_like_probabilities(outputs: np.ndarray, tol: float = 1e-3) -> bool:
    """Rows that are non-negative and sum to 1: a softmax is already in the model."""
    z = np.asarray(outputs, dtype=np.float64)
    return bool(z.size) and bool(np.all(z >= 0)) and bool(np.all(np.abs(z.sum(axis=1) - 1) <= tol))


def log_probabilities(outputs: np.ndarray, probabilities: bool | None = None) -> np.ndarray:
    """log softmax of logits (float64, stable); log of the outputs when they are probabilities."""
    z = np.asarray(outputs, dtype=np.float64)
    if probabilities is None:
        probabilities = looks_like_probabilities(z)
    if probabilities:
        with np.errstate(divide="ignore"):
            return np.log(np.clip(z, 0, None) / z.sum(axis=1, keepdims=True))
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def check_outputs(outputs: np.ndarray, labels: np.ndarray | None, n: int, where: str) -> np.ndarray:
    """A classifier's (N, classes) outputs, finite, with labels inside its class range."""
    z = np.asarray(outputs)
    if z.ndim != 2 or z.shape[1] < 2:
        raise InputError(f"{where}: top-1 robustness needs a classifier with outputs (N, classes); "
                         f"the model returns shape {tuple(z.shape)}: choose its task metric with "
                         f"--metric (mae, rmse, miou, agreement, module:function)")
    if z.shape[0] != n:
        raise InputError(f"{where}: the model returned {z.shape[0]} rows for {n} inputs")
    if not np.all(np.isfinite(z)):
        raise InputError(f"{where}: the model's outputs contain NaN or inf")
    if labels is not None:
        if labels.shape != (n,):
            raise InputError(f"{where}: {labels.shape[0]} labels for {n} images")
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= z.shape[1]:
            raise InputError(f"{where}: labels range {lo}..{hi} but the model has {z.shape[1]} "
                             f"classes (0..{z.shape[1] - 1}); the labels do not match the model")
    return z


# -- calibration --------------------------------------------------------------------------------


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error with ``bins`` equal-width confidence bins over (0, 1]
    (Guo et al. 2017): sum_b |B_b|/n * |accuracy(B_b) - mean confidence(B_b)|, a sample falling
    in bin b when lo_b < confidence <= hi_b."""
    p = np.asarray(probs, dtype=np.float64)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    # bin b holds (b/bins, (b+1)/bins]; ceil puts an exact edge into the bin below it
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    n = len(conf)
    acc_sum = np.bincount(idx, weights=correct, minlength=bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=bins)
    return float(np.abs(acc_sum - conf_sum).sum() / n) if n else float("nan")


def nll(logp: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (nats)."""
    return float(-np.mean(logp[np.arange(len(labels)), labels]))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score (Brier 1950): mean over samples of sum_k (p_k - 1[k = y])^2, in
    [0, 2] (not divided by the number of classes)."""
    p = np.asarray(probs, dtype=np.float64).copy()
    p[np.arange(len(labels)), labels] -= 1.0
    return float(np.mean(np.sum(p * p, axis=1)))


def classification(outputs: np.ndarray, labels: np.ndarray, probabilities: bool | None = None
                   ) -> dict[str, Any]:
    """Accuracy with its Wilson interval, ECE, NLL and Brier of one evaluated set."""
    logp = log_probabilities(outputs, probabilities)
    probs = np.exp(logp)
    n = int(len(labels))
    k = int((logp.argmax(axis=1) == labels).sum())
    lo, hi = wilson_interval(k, n)
    return {"accuracy": k / n, "accuracy_ci": [float(lo), float(hi)], "n": n, "correct": k,
            "ece": ece(probs, labels), "nll": nll(logp, labels), "brier": brier(probs, labels)}


# -- agreement with a baseline ------------------------------------------------------------------


def agreement(pred: np.ndarray, base_pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(base_pred)))


def total_variation(probs: np.ndarray, base_probs: np.ndarray) -> float:
    """Mean over samples of the total-variation distance 0.5 * sum_k |p_k - q_k| (0: the same
    distribution, 1: disjoint)."""
    d = np.asarray(probs, dtype=np.float64) - np.asarray(base_probs, dtype=np.float64)
    return float(np.mean(0.5 * np.abs(d).sum(axis=1)))


# -- corruption error ---------------------------------------------------------------------------

Table = Mapping[str, Mapping[Any, float]]  # corruption -> severity -> error rate


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def corruption_errors(err: Table, base_err: Table) -> dict[str, float | None]:
    """CE_c per corruption (severities the two tables share)."""
    out = {}
    for c, per_s in err.items():
        sev = [s for s in per_s if s in base_err.get(c, {})]
        out[c] = _ratio(sum(per_s[s] for s in sev), sum(base_err[c][s] for s in sev)) if sev else None
    return out


def relative_corruption_errors(err: Table, clean_err: float, base_err: Table,
                               base_clean_err: float) -> dict[str, float | None]:
    out = {}
    for c, per_s in err.items():
        sev = [s for s in per_s if s in base_err.get(c, {})]
        if not sev:
            out[c] = None
            continue
        out[c] = _ratio(sum(per_s[s] - clean_err for s in sev),
                        sum(base_err[c][s] - base_clean_err for s in sev))
    return out


def mce(ce: Mapping[str, float | None]) -> float | None:
    return _mean(list(ce.values()))


def mean_corruption_accuracy(acc: Table, n: int) -> tuple[float | None, list[float] | None]:
    """Mean accuracy over every (corruption, severity) cell, with a 95 % Wilson interval at n
    images. The cells hold the same n images, so they are not independent draws: the interval
    treats each image's accuracy over the cells (a value in [0, 1], whose variance is at most
    p(1 - p)) as one draw, which is conservative; pooling n x cells predictions would not be."""
    cells = [a for per_s in acc.values() for a in per_s.values()]
    if not cells:
        return None, None
    m = float(np.mean(cells))
    lo, hi = wilson_interval(m * n, n)
    return m, [float(lo), float(hi)]


# -- parsing (shared by the CLI and the sweep file) ---------------------------------------------


def parse_severities(value: Any, flag: str = "--severities") -> list[int]:
    """``1-5``, ``1,3,5``, ``[1, 3, 5]`` or ``3`` -> sorted unique severities in 1..5."""
    items: list[Any]
    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [t.strip() for t in str(value).split(",") if t.strip()]
    out: set[int] = set()
    for it in items:
        if isinstance(it, bool):
            raise InputError(f"{flag} {value!r}: severities are integers from 1 to 5")
        text = str(it)
        try:
            if "-" in text.strip("-") and not isinstance(it, int):
                a, b = (int(x) for x in text.split("-", 1))
                if a > b:
                    raise InputError(f"{flag} {text}: a range goes from low to high, e.g. 1-5")
                rng = range(a, b + 1)
            else:
                rng = range(int(text), int(text) + 1)
        except ValueError:
            raise InputError(f"{flag} {value!r}: expected severities like 1-5 or 1,3,5") from None
        for s in rng:
            if not 1 <= s <= 5:
                raise InputError(f"{flag}: severity {s} is outside 1-5")
            out.add(s)
    if not out:
        raise InputError(f"{flag} is empty; give severities like 1-5 or 1,3,5")
    return sorted(out)


def parse_eps(value: Any, flag: str = "--eps") -> list[tuple[str, float]]:
    """``2/255,8/255`` or ``0.03`` or a list of those -> [(label, value)], each in (0, 1].
    The label keeps the user's spelling (``2/255``) so records read as they were asked."""
    items = list(value) if isinstance(value, (list, tuple)) else [
        t.strip() for t in str(value).split(",") if t.strip()]
    out: list[tuple[str, float]] = []
    for it in items:
        text = str(it).strip()
        try:
            if "/" in text:
                a, b = text.split("/", 1)
                v = float(a) / float(b)
            else:
                v = float(text)
        except (ValueError, ZeroDivisionError):
            raise InputError(f"{flag} {text!r}: expected a number such as 8/255 or 0.03") from None
        if not (math.isfinite(v) and 0 < v <= 1):
            raise InputError(f"{flag} {text}: eps must be in (0, 1] (the raw image domain, where "
                             "8/255 is 8 grey levels)")
        label = text if "/" in text else f"{v:g}"
        if label not in [lbl for lbl, _ in out]:
            out.append((label, v))
    if not out:
        raise InputError(f"{flag} is empty; give eps like 2/255,8/255")
    return out


def parse_corruptions(value: Any, channels: int | None = None, flag: str = "--corruptions"
                      ) -> list[str]:
    """``all``, ``none``, ``a,b`` or a list -> names. ``all`` leaves out saturate on grayscale
    (it needs colour); naming saturate on grayscale data is an error."""
    from .corruptions import CORRUPTIONS

    if value is None:
        return []
    items = list(value) if isinstance(value, (list, tuple)) else [
        t.strip() for t in str(value).split(",") if t.strip()]
    if items in (["all"], ["ALL"]):
        return [c for c in CORRUPTIONS if not (c == "saturate" and channels == 1)]
    if items in ([], ["none"]):
        return []
    out = []
    for name in items:
        if name not in CORRUPTIONS:
            raise InputError(f"{flag}: unknown corruption {name!r}; valid: all, none, "
                             f"{', '.join(CORRUPTIONS)}")
        if name == "saturate" and channels == 1:
            raise InputError(f"{flag}: saturate needs RGB images; these are grayscale")
        if name not in out:
            out.append(name)
    return out


# -- one model's figures from its per-shift metrics ---------------------------------------------

Cells = Mapping[Any, Mapping[str, Any]]  # "clean" or (corruption, severity) -> metrics of that set


def _calibration_mean(cells: list[Mapping[str, Any]], n: int) -> dict[str, Any] | None:
    if not cells:
        return None
    out: dict[str, Any] = {k: float(np.mean([c[k] for c in cells])) for k in ("ece", "nll", "brier")}
    out.update(n=n, cells=len(cells))
    return out


def _comparison(cells: Cells, corruptions: list[str], severities: list[int], key: str, n: int,
                own: bool) -> dict[str, Any] | None:
    """agreement_with_baseline / output_drift: clean, mean over the corrupted sets, per set."""
    def value(m: Mapping[str, Any]) -> float | None:
        if own:  # the baseline against itself
            return 1.0 if key == "agreement" else 0.0
        return m.get(key)

    clean = value(cells["clean"])
    if clean is None:
        return None
    per = {c: {str(s): value(cells[(c, s)]) for s in severities} for c in corruptions}
    vals = [v for d in per.values() for v in d.values() if v is not None]
    out: dict[str, Any] = {"clean": clean, "corrupted_mean": float(np.mean(vals)) if vals else None,
                           "n": n, "per_corruption": per}
    if key == "agreement":
        out["clean_ci"] = [float(v) for v in wilson_interval(round(clean * n), n)]
    else:
        out["measure"] = "mean total-variation distance between the softmax outputs (0 to 1)"
    return out


def summarize_metric(cells: Cells, base: Cells | None, corruptions: list[str],
                     severities: list[int], n: int, metric: Any,
                     mean_score_ci: list[float] | None) -> dict[str, Any]:
    """The record's figures under a task metric (cells hold ``score`` and ``score_ci``): clean
    and mean corruption score, CE / mCE / relative mCE and degradation from the metric's error
    (edgeprof.metrics.error_of) against ``base``. Calibration and the accuracy fields are
    top-1's (``summarize``): not written here."""
    from ..metrics import error_of

    per_corruption = {c: {str(s): {k: v for k, v in cells[(c, s)].items()
                                   if k not in ("agreement", "output_drift", "correct")}
                          for s in severities} for c in corruptions}
    clean = cells["clean"]
    score = {c: {s: cells[(c, s)]["score"] for s in severities} for c in corruptions}
    vals = [v for d in score.values() for v in d.values()]
    mcs = float(np.mean(vals)) if vals else None
    out: dict[str, Any] = dict(
        per_corruption=per_corruption, metric=metric.name,
        higher_is_better=metric.higher_is_better,
        clean_score=clean["score"], clean_score_ci=clean["score_ci"],
        mean_corruption_score=mcs, mean_corruption_score_ci=mean_score_ci if vals else None,
        ce={}, relative_ce={}, mce=None, relative_mce=None, degradation=None,
        error_rule="1 - score" if metric.higher_is_better else "score")
    if base is not None and all((c, s) in base for c in corruptions for s in severities):
        err = {c: {s: error_of(metric, v) for s, v in d.items()} for c, d in score.items()}
        berr = {c: {s: error_of(metric, base[(c, s)]["score"]) for s in severities}
                for c in corruptions}
        ce = corruption_errors(err, berr)
        clean_err, bclean_err = error_of(metric, clean["score"]), error_of(metric, base["clean"]["score"])
        rel = relative_corruption_errors(err, clean_err, berr, bclean_err)
        mean_err = _mean([e for d in err.values() for e in d.values()])
        bmean_err = _mean([e for d in berr.values() for e in d.values()])
        out.update(ce=ce, relative_ce=rel, mce=mce(ce), relative_mce=mce(rel),
                   degradation=(mean_err - bmean_err) if mean_err is not None
                   and bmean_err is not None else None,
                   clean_degradation=clean_err - bclean_err)
    return out


def summarize(cells: Cells, base: Cells | None, corruptions: list[str], severities: list[int],
              n: int, labelled: bool, is_base: bool) -> dict[str, Any]:
    """The record's figures: per-corruption metrics, clean and mean corruption accuracy with
    intervals, CE / mCE / relative mCE and degradation against ``base``, calibration, and
    agreement and output drift against the baseline."""
    per_corruption = {c: {str(s): {k: v for k, v in cells[(c, s)].items()
                                   if k not in ("agreement", "output_drift", "correct")}
                          for s in severities} for c in corruptions}
    out: dict[str, Any] = dict(
        per_corruption=per_corruption, clean_accuracy=None, clean_accuracy_ci=None,
        mean_corruption_accuracy=None, mean_corruption_accuracy_ci=None, ce={}, relative_ce={},
        mce=None, relative_mce=None, degradation=None, calibration=None, ece=None)
    if labelled:
        clean = cells["clean"]
        acc = {c: {s: cells[(c, s)]["accuracy"] for s in severities} for c in corruptions}
        mca, mca_ci = mean_corruption_accuracy(acc, n)
        out.update(clean_accuracy=clean["accuracy"], clean_accuracy_ci=clean["accuracy_ci"],
                   mean_corruption_accuracy=mca, mean_corruption_accuracy_ci=mca_ci,
                   ece=clean["ece"], calibration={
                       "clean": {k: clean[k] for k in ("ece", "nll", "brier", "n")},
                       "corrupted_mean": _calibration_mean(
                           [cells[(c, s)] for c in corruptions for s in severities], n)})
        if base is not None:
            err = {c: {s: 1 - a for s, a in d.items()} for c, d in acc.items()}
            berr = {c: {s: 1 - base[(c, s)]["accuracy"] for s in severities}
                    for c in corruptions if all((c, s) in base for s in severities)}
            ce = corruption_errors(err, berr)
            rel = relative_corruption_errors(err, 1 - clean["accuracy"], berr,
                                             1 - base["clean"]["accuracy"])
            bmca, _ = mean_corruption_accuracy({c: {s: 1 - e for s, e in d.items()}
                                                for c, d in berr.items()}, n)
            out.update(ce=ce, relative_ce=rel, mce=mce(ce), relative_mce=mce(rel),
                       degradation=(bmca - mca) if bmca is not None and mca is not None else None,
                       clean_degradation=base["clean"]["accuracy"] - clean["accuracy"])
    if base is not None:
        for name, key in (("agreement_with_baseline", "agreement"), ("output_drift", "output_drift")):
            out[name] = _comparison(cells, corruptions, severities, key, n, is_base)
    return out
