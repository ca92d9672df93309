"""The local CPU: the worker is a child process of the same Python."""
from __future__ import annotations

import sys
from pathlib import Path

from .client import WorkerClient, start_local_worker


class LocalTarget:
    name = "local"

    def __init__(self, python: str | None = None, env: dict[str, str] | None = None):
        self.python = python or sys.executable
        self.env = env

    def start_worker(self, label: str) -> WorkerClient:
        return start_local_worker(label=label, python=self.python, env=self.env)

    def stage(self, path: Path) -> str:
        return str(Path(path).resolve())
