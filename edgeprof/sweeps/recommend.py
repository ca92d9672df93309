"""Recommendation: the fastest variant that satisfies every constraint, and why; or, when none
does, the closest one and the constraints it misses."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..units import fmt_bytes, fmt_seconds, parse_fraction, parse_size_bytes
from .rows import ALIASES

_OPS = {"<=": lambda a, b: a <= b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b,
        ">": lambda a, b: a > b}
FRACTION_KEYS = {"accuracy_drop", "corruption_drop", "accuracy", "mean_corruption_accuracy",
                 "relative_mce", "ece", "field_clip", "score", "score_drop"}
BYTE_KEYS = {"peak_rss_bytes", "model_bytes", "zlib_bytes"}
SECOND_KEYS = {"p50_s", "p99_s"}


@dataclass(frozen=True)
class Constraint:
    key: str
    op: str
    value: float
    text: str

    def check(self, row: dict[str, Any]) -> bool | None:
        v = row.get(self.key)
        return None if v is None else _OPS[self.op](v, self.value)

    def miss(self, row: dict[str, Any]) -> float:
        """How far a row misses, relative to the limit (0 when it passes)."""
        v = row.get(self.key)
        if v is None:
            return float("inf")
        gap = (v - self.value) if self.op in ("<=", "<") else (self.value - v)
        return max(0.0, gap) / (abs(self.value) or 1.0)


def parse_requirements(text: str | None) -> list[Constraint]:
    """``"accuracy_drop<=1%, corruption_drop<=2%, peak_rss<=256MiB, p50<=5ms"``."""
    out = []
    for part in [p.strip() for p in (text or "").split(",") if p.strip()]:
        m = re.fullmatch(r"([a-z_0-9]+)\s*(<=|>=|<|>)\s*(.+)", part)
        if not m:
            raise InputError(f"--require {part!r}: expected KEY<=VALUE such as accuracy_drop<=1%")
        key = ALIASES.get(m.group(1), m.group(1))
        raw = m.group(3).strip()
        if key in FRACTION_KEYS:
            value = parse_fraction(raw, f"--require {m.group(1)}")
        elif key in BYTE_KEYS:
            value = float(parse_size_bytes(raw, f"--require {m.group(1)}"))
        elif key in SECOND_KEYS:
            from ..units import parse_duration_s
            value = parse_duration_s(raw, f"--require {m.group(1)}", 0.0, 1e6)
        else:
            raise InputError(f"--require: unknown key {m.group(1)!r}; use one of "
                             + ", ".join(sorted(FRACTION_KEYS | BYTE_KEYS | SECOND_KEYS
                                                | set(ALIASES))))
        out.append(Constraint(key, m.group(2), value, part))
    return out


def _fmt(key: str, v: float | None) -> str:
    if v is None:
        return "not measured"
    if key in BYTE_KEYS:
        return fmt_bytes(int(v))
    if key in SECOND_KEYS:
        return fmt_seconds(v)
    return f"{v:.2%}"


@dataclass
class Recommendation:
    chosen: dict[str, Any] | None
    reasons: list[str] = field(default_factory=list)
    closest: dict[str, Any] | None = None
    missing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen and self.chosen["variant_id"],
                "chosen_label": self.chosen and self.chosen["label"],
                "closest": self.closest and self.closest["variant_id"],
                "closest_label": self.closest and self.closest["label"],
                "reasons": self.reasons, "missing": self.missing}


def recommend(rows: list[dict[str, Any]], constraints: list[Constraint]) -> Recommendation:
    timed = [r for r in rows if r.get("p50_s") is not None]
    if not timed:
        return Recommendation(None, ["no variant has a latency measurement"])
    passing, failing = [], []
    for r in timed:
        verdicts = [c.check(r) for c in constraints]
        (passing if all(v is True for v in verdicts) else failing).append(r)
    if passing:
        best = min(passing, key=lambda r: r["p50_s"])
        reasons = [f"fastest of {len(passing)} variant(s) meeting every constraint: p50 "
                   f"{fmt_seconds(best['p50_s'])} (95 % CI {fmt_seconds(best['p50_ci'][0])} to "
                   f"{fmt_seconds(best['p50_ci'][1])}, n = {best['n_latency']}) on "
                   f"{best['target']}"]
        reasons += [f"{c.text}: {_fmt(c.key, best.get(c.key))}" for c in constraints]
        runner = sorted(passing, key=lambda r: r["p50_s"])[1:2]
        if runner:
            r2 = runner[0]
            overlap = r2["p50_ci"][0] <= best["p50_ci"][1]
            reasons.append(f"next: {r2['label']} at {fmt_seconds(r2['p50_s'])}"
                           + (" (confidence intervals overlap: as fast within noise)" if overlap else ""))
        return Recommendation(best, reasons)

    def score(r: dict[str, Any]) -> tuple[int, float, float]:
        misses = [c.miss(r) for c in constraints]
        return (sum(m > 0 for m in misses), sum(misses), r["p50_s"])
    closest = min(failing, key=score)
    missing = [f"{c.text}: {_fmt(c.key, closest.get(c.key))}" for c in constraints
               if c.check(closest) is not True]
    return Recommendation(None, [f"no variant meets every constraint; closest: {closest['label']}"],
                          closest=closest, missing=missing)
