"""Regression gate between two results files: a change is a regression only when it is both
statistically significant (Mann-Whitney U on raw latency samples; a bootstrap for accuracy) and
larger than the user's threshold (asv's rule)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ALPHA = 0.01


@dataclass
class Change:
    what: str             # "latency" | "accuracy"
    label: str
    target: str
    setting: str
    base: float
    new: float
    relative: float       # latency: new/base - 1; accuracy: base - new (absolute drop)
    p_value: float
    threshold: float
    regression: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _pairs(base: list[dict[str, Any]], new: list[dict[str, Any]], kind: str,
           key_fields: tuple[str, ...]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Match records by variant id, else by model name (a changed model has a new id)."""
    def k(r: dict[str, Any], by: str) -> tuple:
        ident = r["variant_id"] if by == "id" else r.get("model", {}).get("name")
        return (ident,) + tuple(r.get(f) for f in key_fields)
    b = [r for r in base if r["kind"] == kind]
    n = [r for r in new if r["kind"] == kind]
    out = []
    for by in ("id", "name"):
        bmap = {k(r, by): r for r in b}
        for r in list(n):
            match = bmap.get(k(r, by))
            if match is not None:
                out.append((match, r))
                b.remove(match)
                n.remove(r)
                bmap = {k(x, by): x for x in b}
    return out


def latency_changes(base: list[dict[str, Any]], new: list[dict[str, Any]],
                    max_increase: float) -> list[Change]:
    from scipy import stats
    out = []
    for b, n in _pairs(base, new, "latency", ("target", "threads", "batch")):
        xb, xn = np.asarray(b["samples_s"]), np.asarray(n["samples_s"])
        rel = float(np.median(xn) / np.median(xb) - 1)
        p = float(stats.mannwhitneyu(xn, xb, alternative="greater").pvalue)
        out.append(Change("latency", n["model"]["name"], n["target"],
                          f"threads={n['threads']} batch={n['batch']}", float(np.median(xb)),
                          float(np.median(xn)), rel, p, max_increase,
                          regression=p < ALPHA and rel > max_increase))
    return out


def accuracy_changes(base: list[dict[str, Any]], new: list[dict[str, Any]], max_drop: float,
                     n_boot: int = 20_000, seed: int = 0) -> list[Change]:
    """Parametric bootstrap of the two accuracies from their counts: p = share of resamples in
    which the new accuracy is not below the base."""
    rng = np.random.default_rng(seed)
    out = []
    for b, n in _pairs(base, new, "accuracy", ("target", "data_sha256")):
        pb, pn = b["correct"] / b["n"], n["correct"] / n["n"]
        db = rng.binomial(b["n"], pb, n_boot) / b["n"]
        dn = rng.binomial(n["n"], pn, n_boot) / n["n"]
        p = float(((db - dn) <= 0).mean())
        drop = pb - pn
        out.append(Change("accuracy", n["model"]["name"], n["target"], f"n={n['n']}", pb, pn,
                          drop, p, max_drop, regression=p < ALPHA and drop > max_drop))
    return out
