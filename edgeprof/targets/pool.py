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

    def __init__(self, target: Any, idle: list[WorkerClient] | None = None):
        self.target = target
        self._idle: list[WorkerClient] = list(idle or [])  # started already (e.g. latency's)
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


class Prestart:
    """Latency worker processes started ahead of the latency phase, while a sweep builds its
    variants (nothing is timed then), so the phase does not wait for interpreter start-ups.

    Each is still a fresh interpreter (exec, not fork) that has imported numpy and nothing else
    when the profiler takes it: loading the model, warm-up and every timed run happen exactly as
    with a worker started on demand. One at a time on a background thread, so the build keeps
    the other cores; ``start_worker`` stops the starting ahead and hands out a started one, or
    starts one itself when none is left. Everything else is the wrapped target's. ``close()`` ends the workers not taken."""

    def __init__(self, target: Any, count: int):
        import queue
        self.target = target
        self._ready: "queue.SimpleQueue[WorkerClient]" = queue.SimpleQueue()
        self._stop = threading.Event()
        self.started = 0
        self.taken = 0

        def run() -> None:
            for i in range(count):
                if self._stop.is_set():
                    return
                try:
                    w = self.target.start_worker(f"latency worker {i + 1} (started ahead)")
                except Exception:  # the profiler starts its own and reports what fails
                    return
                self.started += 1
                self._ready.put(w)
        self._thread = threading.Thread(target=run, name="edgeprof-prestart", daemon=True)
        self._thread.start()

    def start_worker(self, label: str) -> WorkerClient:
        """A started worker, else a new one. The first call ends the starting ahead (waiting
        for the one under way): from here on the phase spawns what it still needs itself, and
        nothing starts behind its back once it measures."""
        import queue
        self._stop_ahead()
        while True:
            try:
                w = self._ready.get_nowait()
            except queue.Empty:
                return self.target.start_worker(label)
            proc = getattr(w.transport, "proc", None)
            if w.closed or (proc is not None and proc.poll() is not None):
                w.close()  # died while waiting: never handed out
                continue
            w.label = label
            self.taken += 1
            return w

    def start_cold_worker(self, label: str) -> WorkerClient:
        """A worker started now, never one started ahead (its start-up is timed as a cold
        start); ends the starting ahead first, so nothing else starts while it does."""
        self._stop_ahead()
        return getattr(self.target, "start_cold_worker", self.target.start_worker)(label)

    def _stop_ahead(self) -> None:
        """No more starting ahead (waits for the start under way)."""
        self._stop.set()
        self._thread.join()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)

    def close(self) -> None:
        """Stop starting more; end the workers nobody took (the target itself stays open)."""
        import queue
        self._stop_ahead()
        while True:
            try:
                self._ready.get_nowait().close()
            except queue.Empty:
                return
