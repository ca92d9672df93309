"""Decisions from records: rows per (variant, target), drops against the baseline, the
noise-aware frontier and the recommendation."""
from __future__ import annotations

from typing import Any

from .frontier import DEFAULT_OBJECTIVES, pareto
from .recommend import parse_requirements, recommend
from .rows import add_drops, build_rows


def decide(records: list[dict[str, Any]], plan: Any, baseline_id: str | None,
           variant_ids: set[str] | None = None, threads: int | None = None,
           batch: int | None = None) -> dict[str, Any]:
    if variant_ids:
        records = [r for r in records if r.get("variant_id") in variant_ids]
    b = batch if batch is not None else (min(plan.batches) if plan is not None else 1)
    rows = build_rows(records, threads=threads, batch=b)
    add_drops(rows, baseline_id)
    objectives = (plan.objectives if plan is not None and plan.objectives else DEFAULT_OBJECTIVES)
    front = {}
    for target in sorted({r["target"] for r in rows}):
        trows = [r for r in rows if r["target"] == target]
        res = pareto(trows, objectives)
        front[target] = {"frontier": res.frontier, "dominated_by": res.dominated_by,
                         "ties": res.ties, "objectives": res.objectives}
        for r in trows:
            r["on_frontier"] = r["variant_id"] in res.frontier
    constraints = parse_requirements(plan.require if plan is not None else None)
    # one recommendation per target: a variant fastest on this machine may not be on the board
    targets = sorted({r["target"] for r in rows})
    order = [t for t in (getattr(plan, "targets", None) or []) if t in targets] + \
        [t for t in targets if t not in (getattr(plan, "targets", None) or [])]
    recs = {t: recommend([r for r in rows if r["target"] == t], constraints).to_dict()
            for t in order}
    if not recs:
        recs = {"-": recommend([], constraints).to_dict()}
    for t, rec in recs.items():
        rec["target"] = t
    for r in rows:
        r.pop("samples_s", None)
    return {"rows": rows, "frontier": front, "recommendation": next(iter(recs.values())),
            "recommendations": recs,
            "require": plan.require if plan is not None else None, "baseline": baseline_id,
            "batch": b}
