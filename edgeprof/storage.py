"""Writing output files without losing or corrupting anything: output paths checked before any
work, atomic replacement of regular files, writing through to devices and FIFOs (never replacing
them), symlinks followed (the link stays), ``-`` for standard output, disk-full and file-size
limits as one-line errors naming the file and the free space, and an exclusive lock per results
file (filelock) so two runs never measure into one file at once."""
from __future__ import annotations

import errno
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

from .errors import EdgeprofError, InputError

#: errno values that mean "no room": a full file system, a quota, the process's file size limit
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class StorageFull(EdgeprofError):
    """A write failed for lack of room; the message names the file and what was kept where."""

    exit_code = 1


def fmt_free(path: str | Path) -> str:
    from .units import fmt_bytes
    try:
        return f"{fmt_bytes(shutil.disk_usage(Path(path).parent if not Path(path).is_dir() else path).free)} free"
    except OSError:
        return "free space unknown"


def full_message(path: str | Path, exc: OSError) -> str:
    """'disk full writing X (12 KiB free)' or 'file size limit (ulimit -f) reached writing X'."""
    if exc.errno == errno.EFBIG:
        return f"file size limit (ulimit -f) reached writing {path}"
    what = "disk quota exceeded" if exc.errno == errno.EDQUOT else "disk full"
    return f"{what} writing {path} ({fmt_free(path)})"


def is_stdout(path: str | Path | None) -> bool:
    return str(path) == "-"


def check_output(path: str | Path, flag: str, allow_stdout: bool = False) -> Path:
    """Fail before any work when an output path cannot be written. ``-`` is standard output
    where ``allow_stdout``; devices and FIFOs are written through; a symlink is followed."""
    if is_stdout(path):
        if not allow_stdout:
            raise InputError(f"{flag} -: standard output cannot hold a results file "
                             "(it is read back to resume); give a file")
        return Path("-")
    p = Path(path)
    real = Path(os.path.realpath(p))
    if real.is_dir():
        raise InputError(f"{flag} {p}: is a directory")
    if real.exists() and not real.is_file():
        mode = real.stat().st_mode
        if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
            raise InputError(f"{flag} {p}: not a regular file, device or FIFO")
        if not os.access(real, os.W_OK):
            raise InputError(f"{flag} {p}: not writable")
        return p
    parent = real.parent
    if not parent.exists():
        raise InputError(f"{flag} {p}: folder {p.parent} does not exist")
    if not parent.is_dir():
        raise InputError(f"{flag} {p}: {p.parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (real.exists() and not os.access(real, os.W_OK)):
        raise InputError(f"{flag} {p}: not writable")
    return p


def write_output(path: str | Path, write: Callable[[IO[bytes]], None], flag: str = "") -> None:
    """Write an output file whole. ``-``: standard output. A device or FIFO: written through.
    A regular file (or a symlink's target): a temporary file beside it, then renamed over it, so
    readers never see half a file; on a full disk the temporary file is removed, the old file
    stays, and the error names the file and the free space."""
    if is_stdout(path):
        buf = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
        if buf is None:  # a text stream (click's test runner): encode ourselves
            import io
            b = io.BytesIO()
            write(b)
            sys.stdout.write(b.getvalue().decode("utf-8"))
        else:
            write(buf)
            buf.flush()
        return
    p = Path(path)
    real = Path(os.path.realpath(p))
    where = f"{flag} {p}".strip()
    try:
        if real.exists() and not real.is_file():  # a device or a FIFO: never replace it
            with open(real, "wb") as f:
                write(f)
                f.flush()
            return
        fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            if real.exists():
                os.chmod(tmp, stat.S_IMODE(real.stat().st_mode))
            else:
                os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, real)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        if exc.errno in FULL_ERRNOS:
            raise StorageFull(full_message(p, exc)) from None
        raise InputError(f"{where}: cannot write: {exc.strerror or exc}") from None


def write_text(path: str | Path, text: str, flag: str = "") -> None:
    data = text.encode("utf-8")
    write_output(path, lambda f: f.write(data), flag)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- locks --------------------------------------------------------------------------------------

def lock_path(path: str | Path) -> Path:
    p = Path(os.path.realpath(path))
    return p.with_name(f".{p.name}.lock")


class OutputLock:
    """An exclusive lock on an output (a results file): a second run waits (``wait``) or stops
    at once with a message. Released on ``release()`` or when the process ends."""

    def __init__(self, path: str | Path, flag: str, wait: bool = False):
        from filelock import FileLock, Timeout

        self.path = Path(path)
        # one lock per file and process, reentrant: several stores of one program (a notebook)
        # share it; another process is another run
        self._lock = FileLock(str(lock_path(path)), is_singleton=True, thread_local=False)
        try:
            # a short grace even without --wait: a run killed a moment ago may still be exiting
            self._lock.acquire(timeout=-1 if wait else 2.0)
        except Timeout:
            raise InputError(f"{flag} {path} is in use by another edgeprof run; wait for it to "
                             "finish, or rerun with --wait to queue behind it") from None
        except OSError as exc:
            raise InputError(f"{flag} {path}: cannot lock: {exc.strerror or exc}") from None

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()


def side_npz(folder: str | Path, kind: str, name: str, array: Any) -> str | None:
    """``array`` saved once beside a results file as ``<kind>/<sha256>.npz`` (key ``name``),
    for what a record keeps only in part (raw outputs, every sample); the record holds the
    returned relative path, None when it could not be written (the record stays whole)."""
    import hashlib
    import io

    import numpy as np
    rel = f"{kind}/{hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()}.npz"
    path = Path(folder) / rel
    if path.exists():
        return rel
    try:
        path.parent.mkdir(exist_ok=True)
        buf = io.BytesIO()
        np.savez_compressed(buf, **{name: array})
        write_output(path, lambda f: f.write(buf.getvalue()))
    except (OSError, EdgeprofError):
        return None
    return rel
