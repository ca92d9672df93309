"""Report render time (plots, HTML, Markdown, CSV) for the demo sweep's results: the full demo's
`reports/demo/results.jsonl` when `make demo` has run, else a quick demo sweep made here. Serial
(EDGEPROF_REPORT_PROCESSES=1) against parallel (the charts rendered in forked processes:
EDGEPROF_REPORT_PROCESSES, else one per CPU, at most 4), alternating, best of 3 each, and their
ratio."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from edgeprof.demo.run import run_demo
from edgeprof.report import charts
from edgeprof.report.write import write_report
from edgeprof.results import read_records
from edgeprof.sweeps.decide import decide
from edgeprof.sweeps.plan import load_plan


def _render(results: Path, out: Path, processes: str) -> tuple[float, int, int]:
    records = list(read_records(results))
    plan = load_plan(results.parent / "sweep.toml", out)
    old = os.environ.get("EDGEPROF_REPORT_PROCESSES")
    os.environ["EDGEPROF_REPORT_PROCESSES"] = processes
    try:
        t0 = time.perf_counter()
        dec = decide(records, plan, next(r["root_id"] for r in records if r.get("root_id")))
        write_report(out, dec, results, title="edgeprof demo")
        return time.perf_counter() - t0, len(records), sum(1 for _ in out.glob("*.png"))
    finally:
        if old is None:
            del os.environ["EDGEPROF_REPORT_PROCESSES"]
        else:
            os.environ["EDGEPROF_REPORT_PROCESSES"] = old


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        results = Path("reports/demo/results.jsonl")
        if not results.exists() or not (results.parent / "sweep.toml").exists():
            run_demo(Path(d) / "demo", quick=True, cache_dir=Path(d) / "cache")
            results = Path(d) / "demo" / "results.jsonl"
        charts._plt()  # imported once, as the sweep does on a thread, outside both timings
        _, n, plots = _render(results, Path(d) / "warm", "1")
        parallel = str(charts.processes(plots))  # EDGEPROF_REPORT_PROCESSES, else the default
        times: dict[str, list[float]] = {"1": [], parallel: []}
        for i in range(3):
            for p in times:  # alternating: a slow spell of the machine hits both
                times[p].append(_render(results, Path(d) / f"out{p}-{i}", p)[0])
    ser, par = min(times["1"]), min(times[parallel])
    print(f"report render for {n} records ({results}), {plots} plots (PNG + SVG each), "
          f"best of 3, alternating:")
    print(f"  serial   (1 process)    {ser:6.2f} s")
    print(f"  parallel ({parallel} processes)  {par:6.2f} s")
    print(f"  serial / parallel       {ser / par:6.2f}x  ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
