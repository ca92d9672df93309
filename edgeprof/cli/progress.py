"""One progress display (rich, on stderr) with what is running and an ETA."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator


@contextlib.contextmanager
def progress_bar(quiet: bool = False) -> Iterator[Callable[[str, float], None]]:
    import sys

    if quiet or not sys.stderr.isatty():  # a live bar only makes sense on a terminal
        yield lambda desc, frac: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                  console=console, transient=True) as prog:
        task = prog.add_task("starting", total=1000)

        def update(desc: str, frac: float) -> None:
            prog.update(task, description=desc, completed=int(1000 * max(0.0, min(1.0, frac))))

        yield update
