"""The host's side of the worker protocol, over any line transport (a local pipe, an SSH channel)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Protocol

from ..errors import WorkerError

WORKER_PATH = Path(__file__).with_name("worker.py")
REPLY_MAX_BYTES = 64 << 20  # one predict reply (base64 JSON) stays under about this


class Transport(Protocol):
    def write_line(self, line: str) -> None: ...
    def read_line(self) -> str: ...
    def stderr_tail(self) -> str: ...
    def kill(self) -> None: ...


class SubprocessTransport:
    """The worker as a local child process; its stderr goes to a temp file kept for diagnosis."""

    def __init__(self, python: str | None = None, env: dict[str, str] | None = None,
                 preexec: Callable[[], None] | None = None):
        self._err = tempfile.TemporaryFile(mode="w+b")
        child_env = dict(os.environ, **(env or {}))
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            self.proc = subprocess.Popen(
                [python or sys.executable, "-u", str(WORKER_PATH)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self._err, env=child_env, preexec_fn=preexec,
                text=True, bufsize=1, start_new_session=True)
        except OSError as exc:
            raise WorkerError(f"cannot start the worker with {python or sys.executable}: {exc}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def write_line(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def read_line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()

    def stderr_tail(self, n_bytes: int = 4000) -> str:
        try:
            self._err.seek(0, os.SEEK_END)
            size = self._err.tell()
            self._err.seek(max(0, size - n_bytes))
            return self._err.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def returncode(self) -> int | None:
        """Exit status; the output just closed, so give the process a moment to be reaped."""
        try:
            return self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        self._err.close()


def _death_reason(transport: Transport) -> str:
    rc = getattr(transport, "returncode", lambda: None)()
    tail = transport.stderr_tail().strip().splitlines()
    last = tail[-1].strip() if tail else ""
    if rc is not None and rc < 0:
        import signal
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        why = f"was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    elif rc == 137:
        why = "was killed (exit 137: out of memory?)"
    elif rc is not None:
        why = f"exited with status {rc}"
    else:
        why = "closed its output"
    return why + (f": {last}" if last else "")


class ModelRows:
    """``load`` and ``predict_rows`` on top of ``request``: the one way the host loads a model
    and reads its outputs for rows of a staged data file (accuracy, fidelity, pruning,
    robustness), for one worker (``WorkerClient``) or a group of boards (``ShardedWorker``)."""

    def request(self, cmd: str, **args: Any) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, path: str | Path, *, threads: int = 1, batch: int | None = None,
             npz: str | None = None, spec: dict[str, Any] | None = None,
             **extra: Any) -> dict[str, Any]:
        """Load a model file already on the worker's machine (``batch`` None: the model's own;
        ``npz``: the staged data file whose rows feed it). Returns the worker's reply."""
        args = dict(extra, path=str(path), threads=threads, batch=batch, spec=spec)
        if npz is not None:
            args["inputs"] = {"npz": npz}
        reply = self.request("load", **args)
        self._row_bytes = _row_bytes(reply.get("outputs") or [])
        return reply

    def predict_rows(self, npz: str, stop: int, *, start: int = 0, batch: int = 64,
                     spec: dict[str, Any] | None = None,
                     reply_max_bytes: int | None = None) -> dict[str, Any]:
        """Every output of the loaded model, by name, for rows [start, stop) of a staged npz.
        Rows go in requests whose replies stay under ``reply_max_bytes``, sized from the output
        shapes ``load`` reported (when a shape is dynamic, the first batch tells the bytes per
        row)."""
        import numpy as np

        from .worker import decode_array

        reply_max_bytes = reply_max_bytes or REPLY_MAX_BYTES

        def rows_for(per_row: int) -> int:  # base64 JSON is 4/3 of the bytes
            return max(batch, (reply_max_bytes * 3 // 4) // max(1, per_row) // batch * batch)
        known = getattr(self, "_row_bytes", None)
        parts: dict[str, list] = {}
        i, rows = start, (rows_for(known) if known else batch)
        while i < stop:
            j = min(i + rows, stop)
            out = self.request("predict", npz=npz, start=i, stop=j, batch=batch, spec=spec)
            arrays = {k: decode_array(a) for k, a in out["outputs"].items()}
            for k, a in arrays.items():
                parts.setdefault(k, []).append(a)
            rows = rows_for(known or sum(a.nbytes for a in arrays.values()) // max(1, j - i))
            i = j
        return {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in parts.items()}


class WorkerClient(ModelRows):
    """Sends one request at a time and waits for its reply; progress replies go to ``on_progress``."""

    def __init__(self, transport: Transport, label: str = "worker"):
        self.transport = transport
        self.label = label
        self._next_id = 0
        self.closed = False
        hello = self._read()
        if hello.get("hello") != "edgeprof-worker":
            raise WorkerError(f"{label}: unexpected greeting from the worker: {hello}")
        self.hello = hello

    def _read(self) -> dict[str, Any]:
        line = self.transport.read_line()
        if not line:
            self.closed = True
            raise WorkerError(f"{self.label}: the worker {_death_reason(self.transport)}")
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise WorkerError(f"{self.label}: the worker sent a malformed reply: {line[:200]!r}")

    def request(self, cmd: str, on_progress: Callable[[dict], None] | None = None,
                **args: Any) -> dict[str, Any]:
        if self.closed:
            raise WorkerError(f"{self.label}: the worker is closed")
        self._next_id += 1
        rid = self._next_id
        try:
            self.transport.write_line(json.dumps(dict(args, cmd=cmd, id=rid)))
        except (BrokenPipeError, OSError):
            self.closed = True
            raise WorkerError(f"{self.label}: the worker {_death_reason(self.transport)}")
        while True:
            reply = self._read()
            if reply.get("status") == "progress":
                if on_progress:
                    on_progress(reply)
                continue
            if reply.get("id") != rid:
                raise WorkerError(f"{self.label}: reply out of order ({reply.get('id')} != {rid})")
            if reply.get("status") == "error":
                raise WorkerError(f"{self.label}: {reply.get('error', 'unknown error')}")
            return reply

    def close(self) -> None:
        if not self.closed:
            try:
                self.request("close")
            except WorkerError:
                pass
        self.closed = True
        self.transport.kill()

    def __enter__(self) -> "WorkerClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _row_bytes(outputs: list[dict[str, Any]]) -> int | None:
    """Bytes of one row of every output, from the shapes a load reply reports (None when a
    dimension other than the batch is unknown)."""
    import numpy as np
    total = 0
    for o in outputs:
        dims = (o.get("shape") or [None])[1:]
        if any(not isinstance(d, int) or d < 0 for d in dims):
            return None
        try:
            item = np.dtype(o.get("dtype") or "float32").itemsize
        except TypeError:
            return None
        total += int(np.prod(dims, dtype=np.int64)) * item
    return total or None


def start_local_worker(label: str = "local", python: str | None = None,
                       env: dict[str, str] | None = None) -> WorkerClient:
    transport = SubprocessTransport(python=python, env=env)
    try:
        return WorkerClient(transport, label=label)
    except WorkerError:
        transport.kill()
        raise
