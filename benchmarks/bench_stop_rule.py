"""Time to a result with the sequential stop rule against the old fixed ``--min-time 2s``.

tiny_cnn (tests/tiny_models.py, tens of microseconds a call) profiled three ways in one run,
each from a cold start of its workers: the old default (one process, stop after 2 s of samples
or 10,000 runs), the new default (3 fresh processes, stop when the two-level p50 CI is within
1 % or the processes are known to differ by more, min 0.2 s, max 10 s) and the new rule with one
process. Prints wall time to the record, samples needed, precision reached and the ratio.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from edgeprof.measure.profiler import Profiler, Settings
from edgeprof.targets import get_target
from edgeprof.variants.family import resolve_models
from tests import tiny_models

CASES = [
    ("old: fixed --min-time 2s", Settings(min_time_s=2.0, rel_ci=0.0, processes=1, cold_starts=0)),
    ("new: stop rule, 3 processes", Settings(cold_starts=0)),
    ("new: stop rule, 1 process", Settings(processes=1, cold_starts=0)),
]


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = tiny_models.tiny_cnn(Path(d) / "tiny_cnn.onnx")
        refs = resolve_models([str(path)], Path(d) / "cache")
        # untimed: the first worker start pays for cold file caches, which no case should
        Profiler(get_target("local"), Settings(processes=1, cold_starts=0, min_time_s=0.05)).run(refs)
        rows = []
        for label, settings in CASES:
            t0 = time.perf_counter()
            recs, _ = Profiler(get_target("local"), settings).run(refs)
            wall = time.perf_counter() - t0
            rec = recs[0]
            s, rule = rec["stats"], rec["stop_rule"]
            half = (s["p50_ci_s"][1] - s["p50_ci_s"][0]) / 2 / s["p50_s"]
            rows.append((label, wall, sum(rec["samples_s"]), s["n"], s["p50_s"], half,
                         s.get("between_process_spread"), rule["reason"]))
    print(f"{'setting':<30} {'wall':>7} {'timed':>7} {'samples':>8} {'p50':>9} {'CI +-':>7} "
          f"{'spread':>7} stop")
    for label, wall, timed, n, p50, half, spread, reason in rows:
        sp = f"{spread:.1%}" if spread is not None else "-"
        print(f"{label:<30} {wall:>6.2f}s {timed:>6.2f}s {n:>8} {p50 * 1e6:>7.1f}us {half:>7.2%} "
              f"{sp:>7} {reason}")
    base = rows[0][1]
    for label, wall, *_ in rows[1:]:
        print(f"time to result, {label} / old: {wall / base:.2f}")


if __name__ == "__main__":
    main()
