"""Regression gate between two results files: a change is a regression only when it is both
statistically significant and larger than the user's threshold (asv's rule).

Latency samples of one run are autocorrelated (a busy core slows a stretch of consecutive
runs), so they are never the unit of a test: the median of each interleaved round is one
observation (Mann-Whitney U, one-sided, on round medians). Records without a round structure
fall back to the medians of consecutive blocks, and the Change says so. Rounds of one run still
share one process and one stretch of time: on a busy 2-core machine, back-to-back runs of the same
model differ by a few percent as a whole (an A/A test found 1.5-3 % per run, up to 11 % between
two runs). No statistic of one run can see that, so the p-value also covers an assumed run-to-run
noise (``run_noise``, a relative standard deviation per run); both tests must reject (an
intersection-union test, whose p-value is the larger of the two). Accuracy uses a parametric
bootstrap of the two counts."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

ALPHA = 0.01
MIN_ROUNDS = 3            # fewer rounds on a side: block medians instead
BLOCKS = 10
DEFAULT_RUN_NOISE = 0.03  # relative sd of one run's p50 between runs (measured A/A, README)

ROUND_MEDIANS = "round medians"
BLOCK_MEDIANS = "block medians (no rounds)"   # BLOCKS runs of consecutive samples


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
    method: str = ""      # what the test was run on, e.g. "round medians"
    n_base: int | None = None   # observations of that method on each side
    n_new: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _pairs(base: list[dict[str, Any]], new: list[dict[str, Any]], kind: str,
           key_fields: tuple[str, ...]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Match records by variant id, else by model name (a changed model has a new id)."""
    def k(r: dict[str, Any], by: str) -> tuple:
        ident = r["variant_id"] if by == "id" else r.get("model", {}).get("name")
        return (ident,) + tuple(r.get(f) for f in key_fields)
    # burst latency only: a sustained run's record holds windows, not a sample per call
    b = [r for r in base if r["kind"] == kind and r.get("mode") in (None, "burst")]
    n = [r for r in new if r["kind"] == kind and r.get("mode") in (None, "burst")]
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


def has_rounds(rec: dict[str, Any]) -> bool:
    rounds = [int(k) for k in rec.get("rounds") or []]
    return len(rounds) >= MIN_ROUNDS and sum(rounds) == len(rec["samples_s"]) and min(rounds) > 0


def unit_medians(rec: dict[str, Any], by_rounds: bool = True) -> tuple[np.ndarray, str]:
    """The observations a latency test runs on: one median per interleaved round when the record
    has at least MIN_ROUNDS rounds that add up to its samples (and ``by_rounds``), else one per
    block of consecutive samples (BLOCKS blocks, or one per sample when there are fewer)."""
    x = np.asarray(rec["samples_s"], dtype=np.float64)
    if by_rounds and has_rounds(rec):
        rounds = [int(k) for k in rec["rounds"]]
        parts = np.split(x, np.cumsum(rounds)[:-1])
        method = ROUND_MEDIANS
    else:
        parts = np.array_split(x, min(BLOCKS, x.size))
        method = BLOCK_MEDIANS
    return np.array([np.median(p) for p in parts]), method


def _run_noise_p(units_b: np.ndarray, units_n: np.ndarray, log_ratio: float,
                 run_noise: float) -> float:
    """One-sided p of a log-p50 increase this large when each run's level also moves by
    ``run_noise`` (relative sd) from run to run, beside the spread of its own unit medians."""
    from scipy import stats

    def se2(u: np.ndarray) -> float:
        lu = np.log(u[u > 0]) if np.any(u > 0) else np.zeros(1)
        return float(lu.var(ddof=1) / lu.size) if lu.size > 1 else 0.0

    sd = math.sqrt(se2(units_b) + se2(units_n) + 2 * math.log1p(run_noise) ** 2)
    if sd == 0:
        return 0.0 if log_ratio > 0 else 1.0
    return float(stats.norm.sf(log_ratio / sd))


def latency_changes(base: list[dict[str, Any]], new: list[dict[str, Any]],
                    max_increase: float, run_noise: float = DEFAULT_RUN_NOISE) -> list[Change]:
    """A latency change is a regression when unit medians (rounds, else blocks) of the new run
    are significantly greater (Mann-Whitney U, one-sided), the increase also stands out of
    ``run_noise`` and the p50 grew by more than ``max_increase``."""
    from scipy import stats
    out = []
    for b, n in _pairs(base, new, "latency", ("target", "threads", "batch")):
        by_rounds = has_rounds(b) and has_rounds(n)   # both sides on the same footing
        ub, method = unit_medians(b, by_rounds)
        un, _ = unit_medians(n, by_rounds)
        p50_b, p50_n = float(np.median(b["samples_s"])), float(np.median(n["samples_s"]))
        rel = p50_n / p50_b - 1
        p_units = float(stats.mannwhitneyu(un, ub, alternative="greater").pvalue)
        log_ratio = math.log(p50_n / p50_b) if p50_n > 0 and p50_b > 0 else 0.0
        p_run = _run_noise_p(ub, un, log_ratio, run_noise)
        p = max(p_units, p_run)
        out.append(Change("latency", n["model"]["name"], n["target"],
                          f"threads={n['threads']} batch={n['batch']}", p50_b, p50_n, rel, p,
                          max_increase, regression=p < ALPHA and rel > max_increase,
                          method=method, n_base=int(ub.size), n_new=int(un.size)))
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
                          drop, p, max_drop, regression=p < ALPHA and drop > max_drop,
                          method="parametric bootstrap", n_base=b["n"], n_new=n["n"]))
    return out


# ---- environments ------------------------------------------------------------------------------

_RUNTIME_KEYS = {"onnxruntime": "onnxruntime", "litert": "ai_edge_litert",
                 "tflite_runtime": "tflite_runtime"}


def _runtime(rec: dict[str, Any]) -> tuple[str | None, str | None]:
    """(runtime, version) of a latency record: its own runtime_version, else env.versions."""
    rt = rec.get("runtime")
    ver = rec.get("runtime_version")
    if not ver and rt:
        ver = ((rec.get("env") or {}).get("versions") or {}).get(_RUNTIME_KEYS.get(rt, rt))
    return rt, ver


def env_differences(base: list[dict[str, Any]],
                    new: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Differences between the environments of matched latency records, as one-line messages:
    (hard, soft). Hard: CPU model or runtime (version) differs, so latencies are not comparable
    (pyperf refuses such merges). Soft: cores, affinity, governors, numpy, thread variables, or
    a model measured at other thread counts on the other side."""
    hard: list[str] = []
    soft: list[str] = []

    def add(to: list[str], what: str, vb: Any, vn: Any) -> None:
        msg = f"{what} differs: {vb!r} (base) vs {vn!r} (new)"
        if msg not in to:
            to.append(msg)

    for b, n in _pairs(base, new, "latency", ("target", "threads", "batch")):
        eb, en = b.get("env") or {}, n.get("env") or {}
        for side, e in (("base", eb), ("new", en)):
            if not e:
                msg = f"{side} records carry no environment: CPU and versions cannot be checked"
                if msg not in soft:
                    soft.append(msg)
        (rb, vb), (rn, vn) = _runtime(b), _runtime(n)
        if rb and rn and rb != rn:
            add(hard, "runtime", rb, rn)
        elif vb and vn and vb != vn:
            add(hard, f"{rn} version", vb, vn)
        if eb and en:
            cb, cn = eb.get("cpu_model"), en.get("cpu_model")
            if cb and cn and cb != cn:
                add(hard, "CPU model", cb, cn)
            for key, what in (("cores", "cores"), ("affinity", "CPU affinity"),
                              ("governors", "CPU governors"), ("env_threads", "thread variables")):
                if eb.get(key) != en.get(key):
                    add(soft, what, eb.get(key), en.get(key))
            nb = (eb.get("versions") or {}).get("numpy")
            nn = (en.get("versions") or {}).get("numpy")
            if nb != nn:
                add(soft, "numpy version", nb, nn)

    def threads_by_model(recs: list[dict[str, Any]]) -> dict[str, set[int]]:
        out: dict[str, set[int]] = {}
        for r in recs:
            if r.get("kind") == "latency":
                out.setdefault(r.get("model", {}).get("name"), set()).add(r.get("threads"))
        return out

    tb, tn = threads_by_model(base), threads_by_model(new)
    for name in sorted(set(tb) & set(tn), key=str):
        if tb[name] != tn[name]:
            add(soft, f"threads of {name}", sorted(tb[name], key=str), sorted(tn[name], key=str))
    return hard, soft
