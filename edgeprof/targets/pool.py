"""Long-lived workers for the phases that time nothing (accuracy, robustness, fidelity): a
worker loads one model after another instead of a fresh process per model, which saves the
interpreter start and the runtime import (about 0.3-1 s each on a small machine) per model.

Latency never comes from here: every latency process is started fresh (decisions: exec, not
fork), so the memory layout varies as it would in use and peak RSS is that one setting's."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

from .client import WorkerClient


class WorkerPool:
    """Up to as many workers on ``target`` as threads check them out at once; a worker that
    failed is closed, never handed out again. ``close()`` ends them all (and is what ends the
    phase)."""

    def __init__(self, target: Any):
        self.target = target
        self._idle: list[WorkerClient] = []
        self._lock = threading.Lock()

    @contextmanager
    def worker(self, label: str) -> Iterator[WorkerClient]:
        with self._lock:
            w = self._idle.pop() if self._idle else None
        if w is None:
            w = self.target.start_worker(label)
        w.label = label
        try:
            yield w
        except BaseException:
            w.close()  # its state is unknown: a failed load, a dead process, Ctrl-C
            raise
        if w.closed:
            return
        with self._lock:
            self._idle.append(w)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for w in idle:
            w.close()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
