"""``edgeprof report RESULTS``: re-render a report from a results file alone."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Folder (default: beside RESULTS).")
@click.option("--require", help="Constraints for the recommendation (default: the sweep's).")
@click.option("--baseline", help="Baseline variant id prefix (default: the family's root).")
@click.option("--title", help="Report title.")
def report(results: Path, out: Path | None, require: str | None, baseline: str | None,
           title: str | None) -> None:
    """Re-render index.html, summary.md, results.csv and the plots from RESULTS (JSON Lines).
    A sweep.toml beside RESULTS supplies the constraints and objectives it was run with."""
    from ..errors import InputError
    from ..report.write import write_report
    from ..results import read_records
    from ..sweeps.decide import decide
    from ..sweeps.plan import load_plan

    records = list(read_records(results))
    if not records:
        raise InputError(f"{results}: holds no records")
    plan_file = results.parent / "sweep.toml"
    plan = load_plan(plan_file, results.parent) if plan_file.exists() else None
    if plan is not None and require is not None:
        plan.require = require

    class _Bare:  # no sweep file: defaults plus --require
        objectives = None
        batches = [min((r["batch"] for r in records if r["kind"] == "latency"), default=1)]

        def __init__(self, req: str | None):
            self.require = req
    roots = {r.get("root_id") for r in records if r.get("root_id")}
    base = baseline or (next(iter(roots)) if len(roots) == 1 else None)
    dec = decide(records, plan if plan is not None else _Bare(require), base,
                 side_dir=results.parent)
    out = out or results.parent
    name = title or (f"edgeprof sweep: {plan.name}" if plan is not None else f"edgeprof report: {results.name}")
    path = write_report(out, dec, results, title=name)
    click.echo(f"report: {path}")
