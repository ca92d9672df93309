"""The local CPU: the worker is a child process of the same Python."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import WorkerError
from .base import Closing
from .client import WORKER_PATH, WorkerClient, start_local_worker


class LocalTarget(Closing):
    """Holds nothing between calls: ``close`` has nothing to release."""
    name = "local"
    # a latency worker started at its configuration's turn is timed as a cold start (spawn to
    # first result, measured here) instead of starting one more process for it
    cold_start_in_worker = True

    def close(self) -> None:
        pass

    def __init__(self, python: str | None = None, env: dict[str, str] | None = None):
        self.python = python or sys.executable
        self.env = env

    def start_worker(self, label: str) -> WorkerClient:
        """A worker whose numpy starts no BLAS threads: the worker never calls BLAS (the
        runtimes have their own threads), and OpenBLAS's threads spin on the other cores for a
        while after numpy's import (about 0.15 s of CPU per start here, with two cores: as much
        as the start itself). A value the user set is kept."""
        env = dict(self.env or {})
        if "OPENBLAS_NUM_THREADS" not in os.environ:
            env.setdefault("OPENBLAS_NUM_THREADS", "1")
        return start_local_worker(label=label, python=self.python, env=env)

    def start_cold_worker(self, label: str) -> WorkerClient:
        """A worker started as a user's program would be (the environment as it is): its
        start-up is timed as a cold start."""
        return start_local_worker(label=label, python=self.python, env=self.env)

    def stage(self, path: Path) -> str:
        return str(Path(path).resolve())

    def cold_start(self, args: dict[str, Any], timeout_s: float = 300.0) -> dict[str, Any]:
        """Spawn a fresh interpreter that imports the runtime, loads the model and runs one
        inference; ``total_s`` is spawn-to-exit as measured here."""
        env = dict(os.environ, **(self.env or {}))
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([self.python, str(WORKER_PATH), "--cold-start", json.dumps(args)],
                                  capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired:
            raise WorkerError(f"cold start did not finish within {timeout_s:.0f} s")
        total = time.perf_counter() - t0
        try:
            out = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            raise WorkerError(f"cold start failed: {tail[0]}")
        if out.get("status") != "ok":
            raise WorkerError(f"cold start failed: {out.get('error')}")
        out.pop("status")
        out["total_s"] = total
        return out
