"""``edgeprof demo``: the main job on the bundled model and data."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/demo"),
              show_default=True, help="Report folder.")
@click.option("--quick", is_flag=True, help="A smaller run of the same pipeline.")
@click.option("--cache-dir", type=click.Path(path_type=Path))
@click.option("-q", "--quiet", is_flag=True)
@click.pass_context
def demo(ctx: click.Context, out: Path, quick: bool, cache_dir: Path | None, quiet: bool) -> None:
    """Sweep the bundled Fashion-MNIST CNN through every format, precision and pruning level,
    measure latency, memory, accuracy and robustness, and write the report."""
    from ..demo.run import run_demo
    from ..report.terminal import print_decision, terminal_console
    from .progress import progress_bar

    ctx.find_root().edgeprof_interrupt_note = (f"records measured so far are in {out}/"
                                               "results.jsonl (the demo starts afresh on rerun; "
                                               "variants stay cached)")
    with progress_bar(quiet) as prog:
        result = run_demo(out, quick=quick, cache_dir=cache_dir, progress=prog)
    print_decision(result["decision"], result["counts"], terminal_console(), result["report"])
