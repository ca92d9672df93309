"""Recommendation: the fastest variant that satisfies every constraint, and why; or, when none
does, the closest one and the constraints it misses."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..units import fmt_bytes, fmt_seconds, parse_energy_j, parse_fraction, parse_size_bytes
from .rows import ALIASES

_OPS = {"<=": lambda a, b: a <= b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b,
        ">": lambda a, b: a > b}
FRACTION_KEYS = {"accuracy_drop", "corruption_drop", "accuracy", "mean_corruption_accuracy",
                 "relative_mce", "ece", "field_clip", "score", "score_drop"}
BYTE_KEYS = {"peak_rss_bytes", "model_bytes", "zlib_bytes"}
SECOND_KEYS = {"p50_s", "p99_s", "steady_p50_s"}
ENERGY_KEYS = {"energy_per_inference_j"}  # joules; where no sensor exists, rows say why
RANK_CI = {"p50_s": ("p50_ci_s", "n_latency", "p50"),
           "steady_p50_s": ("steady_p50_ci_s", "n_steady", "steady-state p50")}


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
        elif key in ENERGY_KEYS:
            value = parse_energy_j(raw, f"--require {m.group(1)}")
        else:
            raise InputError(f"--require: unknown key {m.group(1)!r}; use one of "
                             + ", ".join(sorted(FRACTION_KEYS | BYTE_KEYS | SECOND_KEYS
                                                | ENERGY_KEYS | set(ALIASES))))
        out.append(Constraint(key, m.group(2), value, part))
    return out


def _fmt(key: str, v: float | None, row: dict[str, Any] | None = None) -> str:
    if v is None:
        why = ((row or {}).get("unavailable") or {}).get(key)
        return f"unavailable ({why})" if why else "not measured"
    if key in ENERGY_KEYS:
        return f"{v * 1e3:.3g} mJ"
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


def recommend(rows: list[dict[str, Any]], constraints: list[Constraint],
              rank: str = "p50_s") -> Recommendation:
    """``rank``: ``p50_s`` (burst) or ``steady_p50_s`` (after sustained load)."""
    ci_key, n_key, rank_name = RANK_CI.get(rank, RANK_CI["p50_s"])
    timed = [r for r in rows if r.get(rank) is not None]
    if not timed:
        return Recommendation(None, ["no variant has a latency measurement"])
    passing, failing = [], []
    for r in timed:
        verdicts = [c.check(r) for c in constraints]
        (passing if all(v is True for v in verdicts) else failing).append(r)
    if passing:
        best = min(passing, key=lambda r: r[rank])
        ci = best.get(ci_key) or [best[rank], best[rank]]
        reasons = [f"fastest of {len(passing)} variant(s) meeting every constraint: {rank_name} "
                   f"{fmt_seconds(best[rank])} (95 % CI {fmt_seconds(ci[0])} to "
                   f"{fmt_seconds(ci[1])}, n = {best.get(n_key)}) on "
                   f"{best['target']}"]
        if best.get("boards_p50_s"):  # an inventory group (group_rows): one board class
            per = best["boards_p50_s"]
            reasons.append(f"{best['target']} is a group of {len(per)} boards: its latency is "
                           f"their median (p50 from {fmt_seconds(min(per.values()))} to "
                           f"{fmt_seconds(max(per.values()))})")
        reasons += [f"{c.text}: {_fmt(c.key, best.get(c.key), best)}" for c in constraints]
        runner = sorted(passing, key=lambda r: r[rank])[1:2]
        if runner:
            r2 = runner[0]
            overlap = (r2.get(ci_key) or [r2[rank]])[0] <= ci[1]
            reasons.append(f"next: {r2['label']} at {fmt_seconds(r2[rank])}"
                           + (" (confidence intervals overlap: as fast within noise)" if overlap else ""))
        return Recommendation(best, reasons)

    def score(r: dict[str, Any]) -> tuple[int, float, float]:
        misses = [c.miss(r) for c in constraints]
        return (sum(m > 0 for m in misses), sum(misses), r[rank])
    closest = min(failing, key=score)
    missing = [f"{c.text}: {_fmt(c.key, closest.get(c.key), closest)}" for c in constraints
               if c.check(closest) is not True]
    return Recommendation(None, [f"no variant meets every constraint; closest: {closest['label']}"],
                          closest=closest, missing=missing)


# -- a lab: the boards of an inventory group are one target for recommendations ---------------

_LATENCY_KEYS = ("p50_s", "p99_s", "steady_p50_s", "energy_per_inference_j")
_CI_KEYS = {"p50_s": "p50_ci_s", "steady_p50_s": "steady_p50_ci_s",
            "energy_per_inference_j": "energy_per_inference_ci"}


def board_groups(records: list[dict[str, Any]]) -> dict[str, str]:
    """target -> inventory group, for the boards whose latency records name one (and the group
    itself, the target of a sharded evaluation)."""
    groups = {r["target"]: r["target_group"] for r in records if r.get("target_group")}
    groups.update({g: g for g in set(groups.values())})
    return groups


def group_rows(rows: list[dict[str, Any]], groups: dict[str, str]) -> list[dict[str, Any]]:
    """Rows of the boards of one group merged into one row per (variant, group): latency is the
    median of the boards' (its interval spans theirs, ``boards_p50_s`` keeps each board's), other
    figures come from the group's own row (a sharded evaluation) or the first board that has
    them. Rows of targets outside any group are returned as they are."""
    import statistics

    out, merged = [], {}
    for r in rows:
        g = groups.get(r["target"])
        if g is None:
            out.append(r)
        else:
            merged.setdefault((r["variant_id"], g), []).append(r)
    for (_vid, g), rs in merged.items():
        rs = sorted(rs, key=lambda r: r["target"] != g)  # the group's own row first
        row: dict[str, Any] = {}
        for r in rs:
            for k, v in r.items():
                if row.get(k) is None and k not in _LATENCY_KEYS:
                    row[k] = v
        # each figure is the median over the boards that have it (a board may have only a
        # sustained run), its interval spans theirs
        for k in _LATENCY_KEYS:
            have = [r for r in rs if r.get(k) is not None]
            row[k] = statistics.median(r[k] for r in have) if have else None
            ci = _CI_KEYS.get(k)
            cis = [r[ci] for r in have if ci and r.get(ci)]
            if ci and cis:
                row[ci] = [min(c[0] for c in cis), max(c[1] for c in cis)]
        timed = [r for r in rs if r.get("p50_s") is not None]
        if timed:
            row["n_latency"] = sum(r.get("n_latency") or 0 for r in timed)
            row["boards_p50_s"] = {r["target"]: r["p50_s"] for r in timed}
        steady = [r for r in rs if r.get("steady_p50_s") is not None]
        if steady:
            row["n_steady"] = sum(r.get("n_steady") or 0 for r in steady)
            row["boards_steady_p50_s"] = {r["target"]: r["steady_p50_s"] for r in steady}
        row["target"] = g
        out.append(row)
    return out
