"""Typed warnings attached to a measurement (pyperf-style diagnoses, not prints)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

from .stats import P99_MIN_SAMPLES, outliers

UNSTABLE_IQR_FRACTION = 0.10
SLOW_FIRST_FACTOR = 10.0
FREQ_CHANGE_FRACTION = 0.05
OUTLIER_FRACTION = 0.02      # a few slow runs are normal on any OS; many mean interference
PROCESS_VARIANCE_FACTOR = 2.0  # two-level CI this many times the single-process one: say so


@dataclass(frozen=True)
class Diagnosis:
    code: str      # unstable | slow_first_run | few_samples_p99 | throttled | frequency_changed |
                   # warmup_not_settled | outliers | process_variance | precision_not_reached
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _throttle_flags(snap: dict[str, Any] | None) -> list[str]:
    t = (snap or {}).get("throttled") or {}
    return list(t.get("flags") or [])


def diagnose(stats: dict[str, Any], samples_s: Sequence[float], first_inference_s: float | None,
             snapshots: Sequence[dict[str, Any]] = (), warmup_settled: bool = True,
             warmup_runs: int = 0, stop_rule: dict[str, Any] | None = None) -> list[Diagnosis]:
    out: list[Diagnosis] = []
    p50 = stats["p50_s"]
    if p50 > 0 and stats["iqr_s"] / p50 > UNSTABLE_IQR_FRACTION:
        out.append(Diagnosis("unstable", f"unstable: IQR is {stats['iqr_s'] / p50:.0%} of the "
                             "median; close other programs or pin the CPU (affinity)"))
    if first_inference_s and p50 > 0 and first_inference_s > SLOW_FIRST_FACTOR * p50:
        out.append(Diagnosis("slow_first_run", f"first inference {first_inference_s / p50:.0f}x "
                             "slower than the median: warm the model up before serving"))
    if stats["n"] < P99_MIN_SAMPLES:
        out.append(Diagnosis("few_samples_p99", f"too few samples for p99 ({stats['n']} < "
                             f"{P99_MIN_SAMPLES}): raise --min-runs or --min-time"))
    if not warmup_settled:
        out.append(Diagnosis("warmup_not_settled", f"timings still falling after {warmup_runs} "
                             "warm-up runs; the samples may include warm-up"))
    idx = outliers(samples_s)
    if len(idx) > OUTLIER_FRACTION * len(samples_s):
        out.append(Diagnosis("outliers", f"{len(idx)} outliers ({len(idx) / len(samples_s):.0%} of "
                             "samples, modified z-score > 3.5), kept: the machine was busy"))
    out += _process_diagnoses(stats, stop_rule)
    flags = sorted({f for s in snapshots for f in _throttle_flags(s)})
    temps = [max(s["temp_c"].values()) for s in snapshots if s.get("temp_c")]
    if flags:
        out.append(Diagnosis("throttled", "throttling seen: " + ", ".join(flags)))
    freqs = [s["cur_hz"] for s in snapshots if s.get("cur_hz")]
    changed = []
    for cpu in (freqs[0] if freqs else {}):
        vals = [f.get(cpu) for f in freqs if f.get(cpu)]
        if vals and (max(vals) - min(vals)) / max(vals) > FREQ_CHANGE_FRACTION:
            changed.append(f"cpu{cpu} {min(vals) / 1e6:.0f}-{max(vals) / 1e6:.0f} MHz")
    if changed:
        extra = f" (max temperature {max(temps):.0f} C)" if temps else ""
        out.append(Diagnosis("frequency_changed", "CPU frequency changed during the run: "
                             + ", ".join(changed[:4]) + extra))
    return out


def _width(ci: Sequence[float] | None) -> float:
    return float(ci[1] - ci[0]) if ci else 0.0


def _process_diagnoses(stats: dict[str, Any], stop_rule: dict[str, Any] | None) -> list[Diagnosis]:
    """Processes that disagree beyond their own samples' noise, and a stop rule that ended on a
    bound before the precision asked."""
    out: list[Diagnosis] = []
    p50 = stats["p50_s"]
    spread = stats.get("between_process_spread")
    within, honest = _width(stats.get("p50_ci_within_s")), _width(stats.get("p50_ci_s"))
    if spread and within > 0 and honest >= PROCESS_VARIANCE_FACTOR * within:
        out.append(Diagnosis("process_variance", f"p50 differs by {spread:.1%} between "
                             f"{stats.get('processes')} processes; single-process CIs would have "
                             f"been {honest / within:.1f}x too narrow"))
    rule = stop_rule or {}
    target, reached = rule.get("rel_ci_target"), rule.get("reached_rel_ci")
    if target and reached is not None and reached > target:
        why = {"process_bound": "processes differ by more than that, so more samples cannot "
                                "narrow it: raise --processes",
               "max_time": "stopped at --max-time: raise it or quiet the machine",
               "max_runs": "stopped at --max-runs: raise it"}.get(rule.get("reason"), "")
        out.append(Diagnosis("precision_not_reached", f"p50 CI half-width is {reached:.2%} of "
                             f"p50, above the {target:.2%} asked (n={stats['n']}, "
                             f"p50 {p50 * 1e6:.1f} us){'; ' + why if why else ''}"))
    return out
