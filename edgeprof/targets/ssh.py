"""Boards over SSH: the worker runs on the board with the board's own Python, over one reused
asyncssh connection per target.

asyncssh is asynchronous; the Profiler is not. One event loop runs in a background thread for
every board of this process, and ``SshTarget`` / ``SshTransport`` give the Profiler the same
synchronous interface as ``LocalTarget`` / ``SubprocessTransport``.

Files (the worker, models, data) go into ``<work_dir>/files/<sha256><suffix>`` on the board, over
SFTP, written under a temporary name and renamed, so a file present under its hash is complete and
is never uploaded again. The work directory is private (0700). Every remote argument is quoted.
Host keys are checked against known_hosts; a first contact needs ``accept_new_host_key``, and a
changed key is refused whatever the options.
"""
from __future__ import annotations

import asyncio
import atexit
import hashlib
import json
import os
import posixpath
import shlex
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, TypeVar

from ..errors import WorkerError
from .base import Closing
from .client import WORKER_PATH, WorkerClient
from .config import TargetSpec

T = TypeVar("T")
_STDERR_KEEP = 8000
_MAX_CONNECTIONS = 8  # per board, only when sshd refuses more sessions on one

# Pins the worker before numpy and the runtime start their thread pools; one process, no taskset.
_AFFINITY_SHIM = ("import os,runpy,sys\ntry:os.sched_setaffinity(0,{cpus})\nexcept OSError as e:"
                  "sys.exit('cannot pin the worker to CPUs {cpus} (%s CPUs here): %s'%"
                  "(os.cpu_count(),e))\nsys.argv=sys.argv[1:];"
                  "runpy.run_path(sys.argv[0],run_name='__main__')")

# What a board without the worker's dependencies lacks (used when the worker cannot start).
_PROBE = ("import importlib.util as u,json,platform,sys;print(json.dumps({'python':"
          "platform.python_version(),'machine':platform.machine(),'os':platform.platform(),"
          "'modules':{m:u.find_spec(m) is not None for m in ('numpy','onnxruntime',"
          "'ai_edge_litert','tflite_runtime')}}))")


# --------------------------------------------------------------------------------------------
# One event loop thread for all boards
# --------------------------------------------------------------------------------------------

class _Loop:
    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="edgeprof-ssh", daemon=True).start()
                cls._loop = loop
            return cls._loop


def _call(coro: Awaitable[T]) -> T:
    """Run a coroutine on the SSH loop and wait for it (timeouts live inside the coroutines).
    Interrupted (Ctrl-C), the coroutine is cancelled before anything else runs on the loop."""
    fut = asyncio.run_coroutine_threadsafe(coro, _Loop.get())  # type: ignore[arg-type]
    try:
        return fut.result()
    except BaseException:
        fut.cancel()
        raise


_OPEN_TARGETS: "set[SshTarget]" = set()


@atexit.register
def _close_all() -> None:
    for t in list(_OPEN_TARGETS):
        t.close()


# --------------------------------------------------------------------------------------------
# Host keys
# --------------------------------------------------------------------------------------------

def _default_known_hosts() -> Path:
    return Path(os.path.expanduser("~/.ssh/known_hosts"))


def _known_hosts_entry(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _make_client(known: Any, accept_new: bool):
    import asyncssh

    class HostKeyCheck(asyncssh.SSHClient):
        """Called only for a key that known_hosts does not trust: tells "unknown" from "changed"
        (OpenSSH's StrictHostKeyChecking=accept-new: record new hosts, never replace a key)."""

        verdict: str | None = None
        key: Any = None
        host: str = ""
        port: int = 22

        def validate_host_public_key(self, host, addr, port, key):  # noqa: D401
            self.key, self.host, self.port = key, host, port
            trusted, ca_keys, *_ = asyncssh.match_known_hosts(known, host, addr,
                                                              None if port == 22 else port)
            if trusted or ca_keys:
                self.verdict = "changed"
                return False
            self.verdict = "accepted" if accept_new else "unknown"
            return accept_new

    return HostKeyCheck()


def _record_host_key(path: Path, host: str, port: int, key: Any) -> None:
    line = key.export_public_key("openssh").decode("ascii").split()
    entry = f"{_known_hosts_entry(host, port)} {line[0]} {line[1]}\n"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(entry)


def _fingerprint(key: Any) -> str:
    try:
        return f"{key.get_algorithm()} {key.get_fingerprint('sha256')}"
    except Exception:  # pragma: no cover
        return "?"


# --------------------------------------------------------------------------------------------
# The transport the WorkerClient talks through
# --------------------------------------------------------------------------------------------

class SshTransport:
    """The worker as a process on the board: stdin/stdout over an SSH session channel."""

    def __init__(self, target: "SshTarget", command: str):
        self.target = target
        self._timeout_s = target.spec.run_timeout_s
        self._err = bytearray()
        self._lost: str | None = None
        self.bytes_sent = 0
        self._killed = False
        self._proc, self._pid = _call(target._open_process(command))
        self._drain = asyncio.run_coroutine_threadsafe(self._drain_stderr(), _Loop.get())

    async def _drain_stderr(self) -> None:
        try:
            while True:
                chunk = await self._proc.stderr.read(4096)
                if not chunk:
                    return
                self._err += chunk
                del self._err[:-_STDERR_KEEP]
        except Exception as exc:  # the connection went away
            self._lost = self._lost or self.target._lost_reason(exc)

    async def _write(self, data: bytes) -> None:
        self._proc.stdin.write(data)
        await self._proc.stdin.drain()

    def write_line(self, line: str) -> None:
        data = (line + "\n").encode("utf-8")
        try:
            _call(self._write(data))
        except Exception as exc:
            self._lost = self._lost or self.target._lost_reason(exc)
            raise BrokenPipeError(str(exc)) from None
        self.bytes_sent += len(data)

    async def _readline(self) -> bytes:
        try:
            line = await asyncio.wait_for(self._proc.stdout.readline(), self._timeout_s)
        except asyncio.TimeoutError:
            raise
        except Exception as exc:
            self._lost = self._lost or self.target._lost_reason(exc)
            return b""
        if not line:  # EOF: the exit status or signal arrives just after; wait for it briefly
            try:
                await asyncio.wait_for(self._proc.wait_closed(), 3.0)
            except Exception:
                pass
            if self._proc.returncode is None:
                self._lost = self._lost or self.target._lost_reason(None)
        return line

    def read_line(self) -> str:
        try:
            return _call(self._readline()).decode("utf-8", "replace")
        except asyncio.TimeoutError:
            self.kill()
            raise WorkerError(f"{self.target.name}: no reply from the worker within "
                              f"{self._timeout_s:g} s (run_timeout_s in "
                              f"{self.target.spec.source}); it was stopped") from None

    def stderr_tail(self) -> str:
        text = self._err.decode("utf-8", "replace")
        if self._lost:
            text += f"\nssh connection to {self.target.spec.address} lost ({self._lost})"
        return text

    def returncode(self) -> int | None:
        return self._proc.returncode

    async def _kill(self) -> None:
        await self.target._stop(self._proc, self._pid)

    def kill(self) -> None:
        if self._killed:
            return
        self._killed = True
        _call(self._kill())
        self._drain.cancel()


def _why(exc: BaseException | None) -> str:
    if exc is None:
        return "closed"
    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    return reason.strip().splitlines()[0] if reason.strip() else type(exc).__name__


# --------------------------------------------------------------------------------------------
# The target
# --------------------------------------------------------------------------------------------

class SshTarget(Closing):
    """A board described by a target file. Connects on first use; ``close()`` when done."""

    def __init__(self, spec: TargetSpec, accept_new_host_key: bool = False,
                 affinity: tuple[int, ...] | None = None, wait: bool = False):
        self.spec = spec
        self.wait = wait
        self._board_lock: Any = None
        self.name = spec.name
        self.threads = spec.threads
        self.runtime = spec.runtime
        self.affinity = affinity if affinity is not None else spec.affinity
        self.accept_new_host_key = accept_new_host_key
        self.group_key = ("ssh", spec.host, spec.port or 22)
        self.connect_s: float | None = None
        self.bytes_uploaded = 0
        self.files_uploaded = 0
        self.host_key_recorded: str | None = None
        self.remote_work_dir: str | None = None
        self._lock = threading.RLock()
        self._conns: list[Any] = []
        self._sftp: Any = None
        self._fatal: str | None = None
        self._staged: dict[str, str] = {}
        self._hashes: dict[tuple, str] = {}
        self._exec_overhead_s: float | None = None

    def __repr__(self) -> str:
        return f"SshTarget({self.name!r}, {self.spec.address!r})"

    # -- connection ---------------------------------------------------------------------------
    def _err(self, msg: str) -> WorkerError:
        return WorkerError(f"{self.name} ({self.spec.address}): {msg}")

    async def _connect_one(self) -> Any:
        import asyncssh

        spec = self.spec
        kh_path = spec.known_hosts or _default_known_hosts()
        try:
            known = (asyncssh.read_known_hosts(str(kh_path)) if kh_path.is_file()
                     else asyncssh.import_known_hosts(""))
        except (OSError, ValueError, asyncssh.Error) as exc:
            raise self._err(f"cannot read known_hosts {kh_path}: {_why(exc)}")
        if spec.identity_file is not None and not spec.identity_file.is_file():
            raise self._err(f"identity_file {spec.identity_file}: no such file "
                            f"(set in {spec.source})")
        client = _make_client(known, self.accept_new_host_key)
        kwargs: dict[str, Any] = dict(
            known_hosts=known, client_factory=lambda: client, agent_forwarding=False,
            connect_timeout=spec.connect_timeout_s, login_timeout=spec.connect_timeout_s,
            keepalive_interval=15, keepalive_count_max=4)
        if spec.port:
            kwargs["port"] = spec.port
        if spec.user:
            kwargs["username"] = spec.user
        if spec.identity_file is not None:
            kwargs["client_keys"] = [str(spec.identity_file)]
            kwargs["agent_path"] = None
        if spec.ssh_config is not None:
            kwargs["config"] = [str(spec.ssh_config)]
        try:
            conn = await asyncio.wait_for(asyncssh.connect(spec.host, **kwargs),
                                          spec.connect_timeout_s + 1)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise self._host_key_error(client, kh_path, exc)
        except asyncssh.PermissionDenied:
            keys = spec.identity_file or "ssh-agent and ~/.ssh/id_*"
            raise self._err(f"the board refused the key ({keys}): add its public key to "
                            "~/.ssh/authorized_keys on the board (ssh-copy-id)")
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
            raise self._err(f"cannot use identity_file {spec.identity_file}: {_why(exc)} "
                            "(a key with a passphrase must be loaded into ssh-agent)")
        except asyncssh.ConfigParseError as exc:
            raise self._err(f"cannot read the ssh config: {_why(exc)}")
        except (asyncio.TimeoutError, TimeoutError):
            raise self._err(f"cannot connect: no answer within {spec.connect_timeout_s:g} s "
                            "(connect_timeout_s)")
        except ConnectionRefusedError:
            raise self._err("cannot connect: connection refused (is sshd running there?)")
        except OSError as exc:
            raise self._err(f"cannot connect: {exc.strerror or _why(exc)}")
        except asyncssh.Error as exc:
            raise self._err(f"ssh: {_why(exc)}")
        if client.verdict == "accepted":
            _record_host_key(kh_path, client.host, client.port, client.key)
            self.host_key_recorded = f"{_fingerprint(client.key)} -> {kh_path}"
        return conn

    def _host_key_error(self, client: Any, kh_path: Path, exc: Exception) -> WorkerError:
        if client.verdict == "changed":
            entry = _known_hosts_entry(client.host, client.port)
            return self._err(
                f"the host key has CHANGED ({_fingerprint(client.key)} does not match {kh_path}); "
                "refusing to connect: this is an attack or a reinstalled board. If you know the "
                f"board was reinstalled, remove the old key with: ssh-keygen -R "
                f"{shlex.quote(entry)} -f {shlex.quote(str(kh_path))}")
        if client.verdict == "unknown":
            return self._err(
                f"unknown host key {_fingerprint(client.key)} (not in {kh_path}); check it, then "
                "rerun with --accept-new-host-key to record it")
        return self._err(f"host key not accepted: {_why(exc)}")

    async def _setup(self) -> None:
        import asyncssh

        t0 = time.perf_counter()
        conn = await self._connect_one()
        self.connect_s = time.perf_counter() - t0
        self._conns.append(conn)
        spec = self.spec
        try:
            sftp = await conn.start_sftp_client()
        except asyncssh.Error as exc:
            raise self._err(f"cannot open SFTP (the board's sshd needs an sftp Subsystem): "
                            f"{_why(exc)}")
        try:
            home = await sftp.realpath(".")
            work = spec.work_dir if spec.work_dir.startswith("/") else posixpath.join(
                home, spec.work_dir)
            await sftp.makedirs(posixpath.join(work, "files"),
                                attrs=asyncssh.SFTPAttrs(permissions=0o700), exist_ok=True)
            await sftp.chmod(work, 0o700)  # private even when it existed before
            await sftp.chmod(posixpath.join(work, "files"), 0o700)
        except (asyncssh.SFTPError, OSError) as exc:
            raise self._err(f"cannot prepare work_dir {spec.work_dir}: {_why(exc)}")
        try:
            await sftp.stat(spec.python)
        except (asyncssh.SFTPError, OSError):
            raise self._err(f"python {spec.python} does not exist on the board "
                            f"(set python in {spec.source})")
        self._sftp = sftp
        self.remote_work_dir = work

    def claim(self) -> None:
        """An exclusive claim on the board for this process (one lock file per host and port
        in the cache's locks/ folder): two edgeprof runs never measure on one board at once,
        each loading the machine the other times. Reentrant within a process."""
        if self._board_lock is not None:
            return
        from ..storage import OutputLock
        from ..variants.cache import cache_root
        folder = cache_root() / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        where = folder / f"board-{self.spec.host}-{self.spec.port or 22}"
        _OPEN_TARGETS.add(self)  # closed (and released) at exit like a connected target
        try:
            self._board_lock = OutputLock(where, f"board {self.name}", self.wait)
        except Exception as exc:
            raise WorkerError(f"{self.name} ({self.spec.address}): {exc}".replace(
                f"board {self.name} {where} is in use", "is in use")) from None

    def connect(self) -> None:
        """Open the connection and prepare the work directory (once; later calls reuse it).
        A failure is remembered, so the remaining configurations fail at once."""
        self.claim()
        with self._lock:
            if self._fatal:
                raise WorkerError(self._fatal)
            if self._conns and self._sftp is not None and not self._conns[0].is_closed():
                return
            if self._conns:  # the connection dropped (sshd restarted, board rebooted): once more
                self._drop()
            _OPEN_TARGETS.add(self)
            try:
                _call(self._setup())
            except WorkerError as exc:
                self._fatal = str(exc)
                self._drop()
                self.release_claim()  # a board we cannot reach is not ours to hold
                raise

    def _drop(self) -> None:
        conns, self._conns, self._sftp = self._conns, [], None
        self._staged.clear()
        for c in conns:
            try:
                c.close()
            except Exception:
                pass

    def _lost_reason(self, exc: BaseException | None) -> str:
        import asyncssh

        dropped = isinstance(exc, (asyncssh.ConnectionLost, asyncssh.DisconnectError,
                                   ConnectionError)) or any(c.is_closed() for c in self._conns[:1])
        why = "channel closed" if exc is None else _why(exc)
        return f"{why}: sshd stopped, the network dropped or the board went down" if dropped \
            else why

    async def _open_process(self, command: str) -> tuple[Any, int | None]:
        """A session channel running ``command``, and the remote PID (the shell prints it, then
        execs the command in its place), so a stuck process can be killed even where sshd
        ignores signal requests (root logins without privilege separation)."""
        proc = await self._open_channel("echo $$; " + command)
        try:
            first = await asyncio.wait_for(proc.stdout.readline(), self.spec.run_timeout_s)
            pid = int(first.strip())
        except (asyncio.TimeoutError, ValueError):
            pid = None  # a login shell that printed something else: no PID, signals only
        except Exception as exc:
            raise self._err(f"cannot start a remote process: {self._lost_reason(exc)}")
        return proc, pid

    async def _stop(self, proc: Any, pid: int | None) -> None:
        """Kill a remote process that has not exited: the KILL signal request first, then
        ``kill -9 PID`` over a second channel if it is still there."""
        if proc.returncode is None:
            try:
                proc.send_signal("KILL")
                await asyncio.wait_for(proc.wait_closed(), 0.3)
            except Exception:
                pass
        if proc.returncode is None and pid and self._conns and not self._conns[0].is_closed():
            try:
                killer = await self._open_channel(f"kill -9 {int(pid)}")
                await asyncio.wait_for(killer.wait_closed(), 3.0)
            except Exception:
                pass
        try:
            proc.close()
            await asyncio.wait_for(proc.wait_closed(), 3.0)
        except Exception:
            pass

    async def _open_channel(self, command: str) -> Any:
        """sshd limits sessions per connection (MaxSessions, 10 by default) and the Profiler
        keeps one worker per configuration open: when the board refuses another session, a
        further connection is opened."""
        import asyncssh

        refused: Exception | None = None
        for conn in list(self._conns):
            try:
                return await conn.create_process(command, encoding=None)
            except asyncssh.ChannelOpenError as exc:  # OpenSSH says only "open failed"
                refused = exc
            except (asyncssh.Error, OSError) as exc:
                raise self._err(f"cannot start a remote process: {self._lost_reason(exc)}")
        if len(self._conns) >= _MAX_CONNECTIONS or not self._conns:
            raise self._err(f"cannot start a remote process: {_why(refused)} (sshd allows "
                            f"MaxSessions per connection; {len(self._conns)} connections open)")
        conn = await self._connect_one()
        self._conns.append(conn)
        try:
            return await conn.create_process(command, encoding=None)
        except (asyncssh.Error, OSError) as exc:
            raise self._err(f"cannot start a remote process: {_why(exc)}")

    def alive(self) -> bool:
        """Whether the connection is still up (False once sshd, the network or the board went
        away, or after a failure that is remembered)."""
        return self._fatal is None and bool(self._conns) and not self._conns[0].is_closed()

    def abort(self) -> None:
        """Close for good (Ctrl-C): what is still running fails at once and nothing reconnects."""
        self._fatal = f"{self.name}: interrupted"
        self.close()

    def close(self) -> None:
        with self._lock:
            conns = list(self._conns)
            self._conns, self._sftp = [], None
            self._staged.clear()
        _OPEN_TARGETS.discard(self)

        async def shut() -> None:
            for c in conns:
                c.close()
            for c in conns:
                try:
                    await asyncio.wait_for(c.wait_closed(), 3.0)
                except Exception:
                    pass

        if conns:
            _call(shut())
        self.release_claim()

    def release_claim(self) -> None:
        if self._board_lock is not None:
            self._board_lock.release()
            self._board_lock = None

    # -- files --------------------------------------------------------------------------------
    def _sha256(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._hashes:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            self._hashes[key] = h.hexdigest()
        return self._hashes[key]

    async def _ensure_file(self, local: Path, remote: str, size: int) -> None:
        import asyncssh

        sftp = self._sftp
        try:
            attrs = await sftp.stat(remote)
            if attrs.size == size:
                return
        except asyncssh.SFTPNoSuchFile:
            pass
        tmp = f"{remote}.part-{uuid.uuid4().hex[:12]}"
        sent = [0]

        def count(_src: bytes, _dst: bytes, copied: int, _total: int) -> None:
            sent[0] = copied

        try:
            await sftp.put(str(local), tmp, progress_handler=count)
            await sftp.chmod(tmp, 0o600)
            try:
                await sftp.posix_rename(tmp, remote)
            except asyncssh.SFTPOpUnsupported:
                await sftp.rename(tmp, remote)
        except Exception:
            try:
                await sftp.remove(tmp)
            except Exception:
                pass
            raise
        finally:
            self.bytes_uploaded += sent[0]
        self.files_uploaded += 1

    def stage(self, path: Path | str) -> str:
        """The board's path of ``path``, uploading it only when the board lacks it."""
        p = Path(path).resolve()
        try:
            sha, size = self._sha256(p), p.stat().st_size
        except OSError as exc:
            raise WorkerError(f"{p}: cannot read: {exc.strerror or exc}")
        suffix = "".join(c for c in p.suffix if c.isalnum() or c == ".")[:16]
        name = sha + suffix
        self.connect()
        with self._lock:
            if name in self._staged:
                return self._staged[name]
            remote = posixpath.join(self.remote_work_dir or "", "files", name)
            try:
                _call(self._ensure_file(p, remote, size))
            except WorkerError:
                raise
            except Exception as exc:
                raise self._err(f"cannot upload {p.name}: {self._lost_reason(exc)}")
            self._staged[name] = remote
            return remote

    # -- processes ----------------------------------------------------------------------------
    def _command(self, *args: str, pin: bool = True) -> str:
        """``exec [env K=V ...] PYTHON -u [affinity shim] ARGS``, every word quoted."""
        words: list[str] = []
        if self.spec.env:
            words += ["env"] + [f"{k}={v}" for k, v in sorted(self.spec.env.items())]
        words += [self.spec.python, "-u"]
        if self.affinity and pin:
            words += ["-c", _AFFINITY_SHIM.format(cpus=list(self.affinity))]
        words += list(args)
        return "exec " + " ".join(shlex.quote(w) for w in words)

    def start_worker(self, label: str) -> WorkerClient:
        worker = self.stage(WORKER_PATH)
        transport = SshTransport(self, self._command(worker))
        try:
            return WorkerClient(transport, label=f"{self.name}: {label}")
        except WorkerError as exc:
            transport.kill()
            raise WorkerError(self._hint(str(exc))) from None

    def _hint(self, msg: str) -> str:
        if "No module named 'numpy'" in msg:
            return f"{msg} (install it: {self.spec.python} -m pip install numpy)"
        return msg

    async def _run(self, command: str, timeout_s: float) -> Any:
        proc, pid = await self._open_process(command)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
        except asyncio.TimeoutError:
            await self._stop(proc, pid)
            raise self._err(f"a remote command did not finish within {timeout_s:g} s")
        return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    def run(self, command: str, timeout_s: float | None = None) -> tuple[int | None, str, str]:
        """Run one command on the board (already quoted): (status, stdout, stderr)."""
        self.connect()
        try:
            return _call(self._run(command, timeout_s or self.spec.run_timeout_s))
        except WorkerError:
            raise
        except Exception as exc:
            raise self._err(f"remote command failed: {self._lost_reason(exc)}")

    def exec_overhead_s(self) -> float:
        """Cost of starting a remote command (channel, the user's shell and its rc files):
        the best of three, measured once per connection."""
        if self._exec_overhead_s is None:
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                self.run("exec true", 30)
                best = min(best, time.perf_counter() - t0)
            self._exec_overhead_s = best
        return self._exec_overhead_s

    def cold_start(self, args: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        """A fresh interpreter on the board: import the runtime, load, one inference.
        ``total_s`` is spawn-to-exit on the board: the host's time less the cost of starting
        any remote command (``ssh_exec_overhead_s``, recorded beside it)."""
        worker = self.stage(WORKER_PATH)
        overhead = self.exec_overhead_s()
        cmd = self._command(worker, "--cold-start", json.dumps(args))
        t0 = time.perf_counter()
        status, out, err = self.run(cmd, timeout_s)
        total = time.perf_counter() - t0
        try:
            res = json.loads(out.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            tail = err.strip().splitlines()[-1:] or [f"exit status {status}"]
            raise self._err(f"cold start failed: {self._hint(tail[0])}")
        if res.get("status") != "ok":
            raise self._err(f"cold start failed: {res.get('error')}")
        res.pop("status")
        res["total_s"] = max(total - overhead, res.get("in_process_s") or 0.0)
        res["ssh_exec_overhead_s"] = overhead
        return res

    def probe(self) -> dict[str, Any]:
        """Python version and which of numpy / the runtimes import, without the worker."""
        status, out, err = self.run(self._command("-c", _PROBE, pin=False),
                                    min(60.0, self.spec.run_timeout_s))
        try:
            return json.loads(out.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            tail = (err.strip().splitlines() or [f"exit status {status}"])[-1]
            raise self._err(f"{self.spec.python} does not run: {tail}")

