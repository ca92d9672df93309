"""``edgeprof sweep SWEEP.toml``: the main job."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("sweep")
@click.argument("sweep_file", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Report folder (default reports/<name>).")
@click.option("--require", help="Constraints, e.g. \"accuracy_drop<=1%, peak_rss<=256MiB\".")
@click.option("--cache-dir", type=click.Path(path_type=Path))
@click.option("--targets-dir", type=click.Path(path_type=Path))
@click.option("--wait", is_flag=True, help="If another sweep is writing the same report folder, "
              "wait for it (else stop at once).")
@click.option("-q", "--quiet", is_flag=True)
@click.pass_context
def sweep(ctx: click.Context, sweep_file: Path, out: Path | None, require: str | None,
          cache_dir: Path | None, targets_dir: Path | None, wait: bool, quiet: bool) -> None:
    """Build every variant of the grid (cached), measure it on every target, evaluate accuracy
    and robustness, then write the frontier, the recommendation and the report."""
    from .. import api
    from ..sweeps.plan import load_plan
    from .progress import progress_bar

    plan = load_plan(sweep_file, out)
    ctx.find_root().edgeprof_interrupt_note = (
        f"every record measured so far is in {plan.out_dir / 'results.jsonl'}; rerun the same "
        "command to resume")
    with progress_bar(quiet) as prog:
        decision, _ = api.sweep(plan, require=require, cache_dir=cache_dir,
                                targets_dir=targets_dir, wait=wait, progress=prog)
    from ..report.terminal import print_decision, terminal_console
    print_decision(decision.raw, decision.counts, terminal_console(), decision.report)
