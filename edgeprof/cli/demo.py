"""``edgeprof demo``: the main job on the bundled model and data."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/demo"),
              show_default=True, help="Report folder.")
@click.option("--min-time", default="1s", show_default=True, help="Latency time per setting.")
@click.option("-q", "--quiet", is_flag=True)
def demo(out: Path, min_time: str, quiet: bool) -> None:
    """Profile the bundled Fashion-MNIST CNN and write a report (summary.md, results)."""
    from ..demo.run import run_demo
    from ..report.terminal import print_records, terminal_console
    from ..units import parse_duration_s
    from .progress import progress_bar

    with progress_bar(quiet) as prog:
        records = run_demo(out, parse_duration_s(min_time, "--min-time", 0.0, 600.0), prog)
    console = terminal_console()
    print_records(records, console)
    console.print(f"report: {out / 'summary.md'}", highlight=False)
