"""`edgeprof demo` (`make demo`): the whole story on the bundled model and data.

A full sweep of the demo CNN (edgeprof/demo/data/demo_sweep.toml): fp32, fp16, int8 static
per-tensor and per-channel, int8 dynamic, unstructured 50 %, structured 30 % and 50 % channels
(fine-tuned), TFLite fp32, int8-dynamic and int8-static; latency, memory, accuracy, robustness
over every corruption and severity, the Square Attack at two eps; frontier, recommendation,
report under reports/demo/. Every number in the report is measured in the run.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from ..sweeps.plan import Plan, load_plan
from . import DATA_DIR

SWEEP_FILE = DATA_DIR / "demo_sweep.toml"


def demo_plan(out_dir: Path, quick: bool = False) -> Plan:
    plan = load_plan(SWEEP_FILE, out_dir)
    if quick:  # a smaller run of the same pipeline (tests); the report states every n
        plan = dataclasses.replace(
            plan, min_time_s=0.1, min_runs=20, cold_starts=0, accuracy_limit=500,
            recipes=[r for r in plan.recipes if not r.channels or r.channels == 0.5],
            robustness={"corruptions": ["gaussian_noise", "contrast"], "severities": [1, 3, 5],
                        "limit": 200},
            attacks={"square": {"eps": ["8/255"], "queries": 20, "limit": 50}})
    return plan


def run_demo(out_dir: Path, quick: bool = False, cache_dir: Path | None = None,
             progress: Callable[[str, float], None] | None = None) -> dict[str, Any]:
    """The demo sweep through ``edgeprof.sweep()``, its report in ``out_dir``."""
    from ..storage import OutputLock

    plan = demo_plan(out_dir, quick)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the demo report shows this run only: start afresh, but never under another run's feet
    lock = OutputLock(out_dir / "results.jsonl", "report folder")
    try:
        (out_dir / "results.jsonl").unlink(missing_ok=True)
    finally:
        lock.release()
    from ..api import sweep
    decision, results = sweep(plan, cache_dir=cache_dir, progress=progress,
                              title="edgeprof demo: Fashion-MNIST CNN")
    return {"decision": decision.raw, "counts": decision.counts, "report": decision.report,
            "results": results}
