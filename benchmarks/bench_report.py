"""Report render time (plots, HTML, Markdown, CSV) for the demo sweep's results: the full demo's
`reports/demo/results.jsonl` when `make demo` has run, else a quick demo sweep made here."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from edgeprof.demo.run import run_demo
from edgeprof.report.write import write_report
from edgeprof.results import read_records
from edgeprof.sweeps.decide import decide
from edgeprof.sweeps.plan import load_plan


def _render(results: Path, out: Path) -> tuple[float, int, int]:
    records = list(read_records(results))
    plan = load_plan(results.parent / "sweep.toml", out)
    t0 = time.perf_counter()
    dec = decide(records, plan, next(r["root_id"] for r in records if r.get("root_id")))
    write_report(out, dec, results, title="edgeprof demo")
    return time.perf_counter() - t0, len(records), sum(1 for _ in out.glob("*.png"))


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        results = Path("reports/demo/results.jsonl")
        if not results.exists() or not (results.parent / "sweep.toml").exists():
            run_demo(Path(d) / "demo", quick=True, cache_dir=Path(d) / "cache")
            results = Path(d) / "demo" / "results.jsonl"
        times = []
        for i in range(3):
            t, n, plots = _render(results, Path(d) / f"out{i}")
            times.append(t)
    print(f"report render for {n} records ({results}): median {sorted(times)[1]:.2f} s "
          f"of 3 renders, {plots} plots (PNG + SVG each)")


if __name__ == "__main__":
    main()
