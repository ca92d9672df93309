"""Board-to-board spread: the same model measured on every board of an inventory group.

Latency records of boards that came from one inventory group carry ``target_group``. For each
(group, variant, threads, batch) this gives every board's p50, the group's median p50 and the
spread between its fastest and slowest board, absolute and relative to the median, and says
whether that spread exceeds the boards' own measurement noise (their 95 % CIs of p50 do not
overlap). Derived from the records on the host, so any results file can be summarised again.
"""
from __future__ import annotations

import statistics
from typing import Any


def tag_group(records: list[dict[str, Any]], groups: dict[str, str]) -> None:
    """Mark each latency record of a board of ``groups`` (board name -> group) with its group."""
    for r in records:
        g = groups.get(r.get("target"))
        if g is not None and r.get("kind") == "latency":
            r["target_group"] = g


class GroupTaggingStore:
    """A results store whose latency records of inventory boards get ``target_group`` before
    they are written (the record a Profiler keeps is the one tagged)."""

    def __init__(self, store: Any, groups: dict[str, str]):
        self._store, self._groups = store, groups
        self.path = getattr(store, "path", None)

    def has(self, key: Any) -> bool:
        return self._store.has(key)

    def append(self, rec: dict[str, Any]) -> None:
        tag_group([rec], self._groups)
        self._store.append(rec)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def board_spread(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (group, variant, threads, batch, mode) measured on two boards or more."""
    by: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("kind") == "latency" and r.get("target_group") and (r.get("stats") or {}).get(
                "p50_s") is not None:
            by.setdefault((r["target_group"], r["variant_id"], r["threads"], r["batch"],
                           r.get("mode", "burst")), []).append(r)
    out = []
    for (group, vid, threads, batch, mode), recs in by.items():
        latest = {r["target"]: r for r in recs}  # a board measured twice: its latest record
        if len(latest) < 2:
            continue
        p50 = {b: r["stats"]["p50_s"] for b, r in latest.items()}
        fastest, slowest = min(p50, key=p50.get), max(p50, key=p50.get)
        median = statistics.median(p50.values())
        lo_slow = (latest[slowest]["stats"].get("p50_ci_s") or [p50[slowest]] * 2)[0]
        hi_fast = (latest[fastest]["stats"].get("p50_ci_s") or [p50[fastest]] * 2)[1]
        spread = p50[slowest] - p50[fastest]
        out.append({"group": group, "variant_id": vid, "model": recs[0]["model"]["name"],
                    "threads": threads, "batch": batch, "mode": mode, "boards": len(p50),
                    "p50_s": p50, "median_p50_s": median, "spread_s": spread,
                    "relative_spread": spread / median if median > 0 else None,
                    "fastest": fastest, "slowest": slowest,
                    "beyond_noise": bool(lo_slow > hi_fast)})
    return sorted(out, key=lambda e: (e["group"], e["model"], e["threads"], e["batch"]))
