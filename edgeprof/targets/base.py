"""The interface every target keeps (the local CPU, a board over SSH, a board behind a
board-farm place): callers use only this, never the kind of target."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .client import WorkerClient


@runtime_checkable
class Target(Protocol):
    """Where models run. Nothing connects before first use; ``close`` releases everything the
    target holds (connections, claims, reservations) and may be called more than once. A
    target is a context manager that closes itself."""

    name: str

    def start_worker(self, label: str) -> WorkerClient:
        """A fresh worker process speaking the worker protocol."""

    def stage(self, path: Path) -> str:
        """The path under which the worker reads ``path`` (uploaded first on a board)."""

    def cold_start(self, args: dict[str, Any], timeout_s: float = 300.0) -> dict[str, Any]:
        """Spawn a fresh interpreter that imports the runtime, loads the model and runs one
        inference; ``total_s`` is spawn-to-exit."""

    def close(self) -> None:
        ...

    def __enter__(self) -> "Target":
        ...

    def __exit__(self, *exc: object) -> None:
        ...


class Closing:
    """``with target:`` closes it on the way out (mixed into every target class)."""

    def close(self) -> None:  # pragma: no cover - overridden where there is something to close
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
