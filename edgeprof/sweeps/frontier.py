"""Pareto frontier over objectives with a direction each. Noise-aware: one point dominates
another only when it is significantly better (confidence intervals apart) in at least one
objective and not significantly worse in any; overlapping intervals are a tie, shown as such."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# steady-state latency and energy per inference are objectives only where a sustained run
# measured them (an objective no row has is dropped)
DEFAULT_OBJECTIVES = (("p50_s", "min"), ("peak_rss_bytes", "min"), ("model_bytes", "min"),
                      ("accuracy", "max"), ("mean_corruption_accuracy", "max"),
                      ("steady_p50_s", "min"), ("energy_per_inference_j", "min"))
CI_FIELDS = {"p50_s": "p50_ci_s", "p99_s": "p99_ci_s", "accuracy": "accuracy_ci", "score": "score_ci",
             "mean_corruption_accuracy": "mean_corruption_accuracy_ci",
             "mean_corruption_score": "mean_corruption_score_ci",
             "steady_p50_s": "steady_p50_ci_s", "energy_per_inference_j": "energy_per_inference_ci"}


@dataclass
class FrontierResult:
    objectives: list[tuple[str, str]]
    frontier: list[str] = field(default_factory=list)          # variant ids (per target rows)
    dominated_by: dict[str, list[str]] = field(default_factory=dict)
    ties: dict[str, list[str]] = field(default_factory=dict)


# Peak RSS is one reading per run, not an estimate with an interval; runs of the same model move
# it by about a MiB (allocator arenas, page granularity), so smaller differences are a tie.
RSS_NOISE_BYTES, RSS_NOISE_FRACTION = 1 << 20, 0.02


def _interval(row: dict[str, Any], key: str) -> tuple[float, float] | None:
    v = row.get(key)
    if v is None:
        return None
    if key == "peak_rss_bytes":
        band = max(RSS_NOISE_BYTES, RSS_NOISE_FRACTION * v) / 2
        return float(v - band), float(v + band)
    ci = row.get(CI_FIELDS.get(key, ""))
    if ci and ci[0] is not None and ci[1] is not None:
        return float(min(ci[0], v)), float(max(ci[1], v))
    return float(v), float(v)


def compare_objective(a: dict[str, Any], b: dict[str, Any], key: str, direction: str) -> str | None:
    """'better', 'worse' or 'tie' for a against b; None when either lacks the metric."""
    ia, ib = _interval(a, key), _interval(b, key)
    if ia is None or ib is None:
        return None
    if direction == "min":
        if ia[1] < ib[0]:
            return "better"
        if ia[0] > ib[1]:
            return "worse"
    else:
        if ia[0] > ib[1]:
            return "better"
        if ia[1] < ib[0]:
            return "worse"
    return "tie"


def pareto(rows: list[dict[str, Any]], objectives=DEFAULT_OBJECTIVES,
           key: str = "variant_id") -> FrontierResult:
    objs = [(k, d) for k, d in objectives if any(r.get(k) is not None for r in rows)]
    res = FrontierResult(objectives=objs)
    for a in rows:
        for b in rows:
            if a is b:
                continue
            verdicts = [compare_objective(b, a, k, d) for k, d in objs]
            verdicts = [v for v in verdicts if v is not None]
            if not verdicts:
                continue
            if "worse" not in verdicts and "better" in verdicts:
                res.dominated_by.setdefault(a[key], []).append(b[key])
            elif all(v == "tie" for v in verdicts):
                res.ties.setdefault(a[key], []).append(b[key])
    res.frontier = [r[key] for r in rows if r[key] not in res.dominated_by]
    return res
