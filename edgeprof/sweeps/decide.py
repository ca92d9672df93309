"""Decisions from records: rows per (variant, target), drops against the baseline, the
noise-aware frontier and the recommendation."""
from __future__ import annotations

from typing import Any

from .frontier import DEFAULT_OBJECTIVES, pareto
from .recommend import board_groups, group_rows, parse_requirements, recommend
from .rows import ALIASES, add_drops, build_rows


def decide(records: list[dict[str, Any]], plan: Any, baseline_id: str | None,
           variant_ids: set[str] | None = None, threads: int | None = None,
           batch: int | None = None, side_dir: Any = None) -> dict[str, Any]:
    """Decisions for a sweep: its plan gives the batch, objectives, constraints and targets."""
    return decide_records(
        records, side_dir=side_dir, objectives=getattr(plan, "objectives", None) or None,
        require=getattr(plan, "require", None), baseline_id=baseline_id,
        variant_ids=variant_ids, threads=threads,
        batch=batch if batch is not None else (min(plan.batches) if getattr(plan, "batches", None)
                                               else None if plan is not None and hasattr(plan, "batches")
                                               else 1),
        targets=getattr(plan, "targets", None))


def decide_records(records: list[dict[str, Any]], *, objectives: Any = None,
                   require: str | None = None, baseline_id: str | None = None,
                   variant_ids: set[str] | None = None, threads: int | None = None,
                   batch: int | None = 1, targets: list[str] | None = None,
                   side_dir: Any = None) -> dict[str, Any]:
    """Rows per (variant, target), drops against each family's root (or ``baseline_id``), the
    noise-aware frontier over ``objectives`` ([(field, "min"|"max")]), one recommendation per
    target under ``require`` and the int8 diagnoses."""
    if variant_ids:
        records = [r for r in records if r.get("variant_id") in variant_ids]
    b = batch
    rows = build_rows(records, threads=threads, batch=b)
    add_drops(rows, baseline_id)
    if not objectives:
        # a task metric replaces top-1 among the default objectives, in its own direction
        swap = {}
        acc = next((r for r in rows if r.get("metric") not in (None, "top1")), None)
        if acc is not None:
            swap["accuracy"] = ("score", "max" if acc["higher_is_better"] else "min")
        rob = next((r for r in rows if r.get("robustness_metric")), None)
        if rob is not None:
            swap["mean_corruption_accuracy"] = (
                "mean_corruption_score", "max" if rob["robustness_higher_is_better"] else "min")
        if swap:
            objectives = tuple(swap.get(k, (k, d)) for k, d in DEFAULT_OBJECTIVES)
    objectives = objectives or DEFAULT_OBJECTIVES
    objectives = tuple((ALIASES.get(k, k), d) for k, d in objectives)  # "energy_per_inference:min"
    front = {}
    # an inventory group is one target: its boards' latency (median) and its sharded accuracy
    # and robustness meet in one row per variant, for the frontier and the recommendation
    groups = board_groups(records)
    rec_rows = group_rows(rows, groups) if groups else rows
    for target in sorted({r["target"] for r in rec_rows}):
        trows = [r for r in rec_rows if r["target"] == target]
        # accuracy on different data is not comparable: one frontier per evaluation set
        family = {r.get("root_id"): r["eval_data"] for r in trows if r.get("eval_data")}

        def data_of(r: dict[str, Any]) -> Any:
            return r.get("eval_data") or family.get(r.get("root_id"))
        keys = {data_of(r) for r in trows}
        parts = ([[r for r in trows if data_of(r) == k] for k in sorted(keys, key=str)]
                 if len(keys - {None}) > 1 else [trows])
        f = {"frontier": [], "dominated_by": {}, "ties": {}, "objectives": None,
             "partitions": len(parts)}
        for part in parts:
            res = pareto(part, objectives)
            f["frontier"] += [v for v in res.frontier if v not in f["frontier"]]
            f["dominated_by"].update(res.dominated_by)
            f["ties"].update(res.ties)
            f["objectives"] = res.objectives
        front[target] = f
        for r in trows:
            r["on_frontier"] = r["variant_id"] in f["frontier"]
    for r in rows:  # a board's row is on its group's frontier
        g = groups.get(r["target"])
        if g is not None and g in front:
            r["on_frontier"] = r["variant_id"] in front[g]["frontier"]
    constraints = parse_requirements(require)
    # one recommendation per target: a variant fastest on this machine may not be on the board
    targets_given = targets
    targets = sorted({r["target"] for r in rec_rows})
    order = [t for t in (targets_given or []) if t in targets] + \
        [t for t in targets if t not in (targets_given or [])]
    # after a sustained run, variants are ranked by what the deployed model sees: steady state,
    # on a target where every timed variant has it (else by burst p50, said in "ranks")
    ranks = {}
    for t in order:
        timed = [r for r in rec_rows if r["target"] == t
                 and (r.get("p50_s") is not None or r.get("steady_p50_s") is not None)]
        ranks[t] = ("steady_p50_s" if timed and all(r.get("steady_p50_s") is not None
                                                    for r in timed) else "p50_s")
    recs = {t: recommend([r for r in rec_rows if r["target"] == t], constraints,
                         ranks[t]).to_dict() for t in order}
    rank = next(iter(ranks.values()), "p50_s")
    if not recs:
        recs = {"-": recommend([], constraints).to_dict()}
    for t, rec in recs.items():
        rec["target"] = t
    from ..measure.int8 import diagnose_rows
    from ..measure.parity import divergence
    diagnoses = [d.to_dict() for d in diagnose_rows(rows, records)]
    parity = divergence(records, side_dir)
    for r in rows:
        r.pop("samples_s", None)
    return {"rows": rows, "frontier": front, "recommendation": next(iter(recs.values())),
            "recommendations": recs,
            "require": require, "baseline": baseline_id, "rank": rank, "ranks": ranks,
            "batch": b, "diagnoses": diagnoses, "parity": parity}
