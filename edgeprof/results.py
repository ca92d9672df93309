"""Result records (schema ``edgeprof.result/2``) and the append-only JSON Lines store.

A record is a plain dict so it survives any tool; its key (``RecordKey``, built here and only
here) decides what a rerun may skip. Older schemas are read through ``upgrade``.

Schema history:

- ``edgeprof.result/1``: the first wave. Latency records had no ``mode``, accuracy and
  robustness records no ``metric`` (both meant the defaults).
- ``edgeprof.result/2``: the key names what tells results apart: ``mode`` (``burst`` |
  ``sustained``) for latency, ``metric`` (``top1`` unless another task metric) for accuracy and
  robustness, and the ``drift`` kind keyed by (variant, calibration+field sha256). Version-1
  records are upgraded when read (defaults filled in), so earlier results files resume.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

from . import __version__
from .errors import InputError

SCHEMA = "edgeprof.result/2"
OLD_SCHEMAS = ("edgeprof.result/1",)
KINDS = ("latency", "accuracy", "robustness", "fidelity", "drift", "env", "error")
_EVALUATIONS = ("accuracy", "robustness")


class RecordKey(NamedTuple):
    """What tells two results apart; a rerun skips every key already in the results file.

    ``mode`` is the latency mode (``burst`` | ``sustained``), ``metric`` the task metric of an
    evaluation (``top1`` | ...); both are None for kinds they do not apply to. Build keys with
    the constructors (or ``of(record)``): they fill the defaults, so a key and the record it
    names always compare equal."""
    variant_id: str | None
    target: str | None
    threads: int | None
    batch: int | None
    kind: str
    data_sha256: str | None = None
    mode: str | None = None
    metric: str | None = None

    def normalized(self) -> "RecordKey":
        mode = (self.mode or "burst") if self.kind == "latency" else None
        metric = (self.metric or "top1") if self.kind in _EVALUATIONS else None
        return self._replace(mode=mode, metric=metric)

    @classmethod
    def of(cls, rec: dict[str, Any]) -> "RecordKey":
        return cls(*(rec.get(f) for f in cls._fields)).normalized()

    @classmethod
    def latency(cls, variant_id: str, target: str, threads: int, batch: int | None,
                data_sha256: str | None = None, mode: str = "burst") -> "RecordKey":
        return cls(variant_id, target, threads, batch, "latency", data_sha256, mode)

    @classmethod
    def evaluation(cls, kind: str, variant_id: str, target: str, data_sha256: str | None,
                   metric: str = "top1") -> "RecordKey":
        """An accuracy or robustness evaluation (one worker thread, the model's own batch)."""
        return cls(variant_id, target, 1, None, kind, data_sha256, None, metric).normalized()

    @classmethod
    def of_variant(cls, kind: str, variant_id: str, data_sha256: str | None) -> "RecordKey":
        """A figure of the variant itself, measured on no target (fidelity, drift)."""
        return cls(variant_id, None, None, None, kind, data_sha256)


KEY_FIELDS = RecordKey._fields


def upgrade(rec: dict[str, Any]) -> dict[str, Any]:
    """A record of an older schema as the current schema writes it (defaults filled in)."""
    if rec.get("schema") == "edgeprof.result/1":
        rec = dict(rec, schema=SCHEMA)
        if rec.get("kind") == "latency":
            rec.setdefault("mode", "burst")
        elif rec.get("kind") in _EVALUATIONS:
            rec.setdefault("metric", "top1")
    return rec


def new_record(kind: str, **fields: Any) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}")
    rec = {"schema": SCHEMA, "kind": kind, "edgeprof_version": __version__,
           "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    rec.update(fields)
    if kind == "latency":
        rec.setdefault("mode", "burst")
    elif kind in _EVALUATIONS:
        rec.setdefault("metric", "top1")
    return rec


def record_key(rec: dict[str, Any]) -> RecordKey:
    return RecordKey.of(rec)


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a JSON Lines file, upgraded to the current schema; a torn last line (a crash
    mid-write) is skipped."""
    p = Path(path)
    try:
        with open(p, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise InputError(f"{p}: no such results file")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read results: {exc}")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue
            raise InputError(f"{p}:{i + 1}: not a JSON record")
        if not isinstance(rec, dict) or rec.get("schema") not in (SCHEMA, *OLD_SCHEMAS):
            found = rec.get("schema") if isinstance(rec, dict) else None
            raise InputError(f"{p}:{i + 1}: not an {SCHEMA} record"
                             + (f" (schema {found!r}: written by a newer edgeprof?)"
                                if isinstance(found, str) and found.startswith("edgeprof.result/")
                                else ""))
        yield upgrade(rec)


def latest_run_errors(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Error records of the latest sweep run (records carry its run_id). A rerun retries every
    failed cell, so errors of earlier runs are history, not the state of the results. Records
    without a run_id (other commands) are all kept; identical messages are listed once."""
    runs = [r["run_id"] for r in records if r.get("run_id")]
    latest = runs[-1] if runs else None
    seen, out = set(), []
    for r in records:
        if r["kind"] != "error" or (r.get("run_id") and r["run_id"] != latest):
            continue
        key = (r.get("variant_id"), r.get("target"), r.get("phase"), r.get("error"))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


class ResultStore:
    """Append-only JSON Lines file; each record is written whole and fsynced, or not at all.

    A writer holds an exclusive lock on the file for its lifetime (a second run on the same file
    stops with a message, or waits with ``wait``), and before its first append sets aside a torn
    last line (a crash or a full disk mid-write) into ``<file>.torn`` and truncates the file to its
    last complete record, so nothing is glued onto a partial line. A record that cannot be
    written for lack of room goes to a spill file in the system temp folder (else stderr); from
    then on ``check()`` raises a one-line StorageFull naming the file, the free space and where
    the spilled records are."""

    def __init__(self, path: str | Path | None, stamp: dict[str, Any] | None = None,
                 wait: bool = False, flag: str = "--results"):
        from .storage import OutputLock, check_output

        self.path = Path(path) if path else None
        self.stamp = dict(stamp or {})  # fields added to every record (a sweep's run_id)
        self.flag = flag
        self._keys: set[tuple] = set()
        self._lock = None
        self.written = 0
        self.spilled = 0
        self.spill_path: Path | None = None
        self.full: OSError | None = None
        self.torn_path: Path | None = None
        if self.path is not None:
            if self.path.is_dir():
                raise InputError(f"{flag} {self.path}: is a directory")
            if str(self.path) != "-" and self.path.exists() and not self.path.is_file():
                raise InputError(f"{flag} {self.path}: not a regular file (a results file is "
                                 "read back to resume)")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"{flag} {self.path}: cannot create its folder: "
                                 f"{exc.strerror or exc}")
            check_output(self.path, flag)
            self._lock = OutputLock(self.path, flag, wait)
            try:
                self._repair_tail()
                if self.path.exists():
                    self._keys = {record_key(r) for r in read_records(self.path)
                                  if r.get("kind") != "error"}
                with open(self.path, "a", encoding="utf-8"):
                    pass
            except OSError as exc:
                self.release()
                raise InputError(f"{flag} {self.path}: cannot write: {exc.strerror or exc}")
            except BaseException:
                self.release()
                raise

    def _repair_tail(self) -> None:
        """Only a writer holding the lock repairs; readers skip a torn tail."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            data = f.read()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        try:
            rec = json.loads(tail)
            complete = isinstance(rec, dict) and rec.get("schema") in (SCHEMA, *OLD_SCHEMAS)
        except ValueError:
            complete = False
        if complete:  # the record was written whole, only its newline is missing
            with open(self.path, "ab") as f:
                f.write(b"\n")
            return
        self.torn_path = self.path.with_name(self.path.name + ".torn")
        with open(self.torn_path, "ab") as f:
            f.write(tail + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.truncate(self.path, cut)

    def has(self, key: RecordKey | tuple) -> bool:
        """A plain tuple given without the later fields (``mode``, ``metric``) means their
        defaults."""
        if not isinstance(key, RecordKey):
            key = RecordKey(*key)
        return key.normalized() in self._keys

    def append(self, rec: dict[str, Any]) -> None:
        for k, v in self.stamp.items():
            rec.setdefault(k, v)
        if rec.get("kind") != "error":
            self._keys.add(record_key(rec))
        if self.path is None:
            return
        line = (json.dumps(rec, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")
        if self.full is None:
            try:
                self._append_whole(line)
                self.written += 1
                return
            except OSError as exc:
                from .storage import FULL_ERRNOS
                if exc.errno not in FULL_ERRNOS:
                    raise InputError(f"{self.flag} {self.path}: cannot write: "
                                     f"{exc.strerror or exc}") from None
                self.full = exc
        self._spill(line)

    def _append_whole(self, line: bytes, path: Path | None = None) -> None:
        """All or nothing: a write cut short is truncated away again."""
        fd = os.open(path or self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, size)
                except OSError:
                    pass
                raise
        finally:
            os.close(fd)

    def _spill(self, line: bytes) -> None:
        import sys
        import tempfile
        import time

        self.spilled += 1
        try:
            if self.spill_path is None:
                name = f"edgeprof-spill-{self.path.stem}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.jsonl"
                self.spill_path = Path(tempfile.gettempdir()) / name
            self._append_whole(line, self.spill_path)
        except OSError:
            try:
                if self.spill_path.stat().st_size == 0:
                    self.spill_path.unlink()
            except OSError:
                pass
            self.spill_path = Path("<stderr>")
            sys.stderr.write(line.decode("utf-8"))
            sys.stderr.flush()

    def check(self) -> None:
        """Raise StorageFull once a record could not be written."""
        if self.full is None:
            return
        from .storage import StorageFull, full_message
        where = ("printed to stderr" if str(self.spill_path) == "<stderr>"
                 else f"saved to {self.spill_path}")
        raise StorageFull(
            f"{full_message(self.path, self.full)}: {self.written} record(s) written, "
            f"{self.spilled} that did not fit {where}; free space, then append them "
            f"(cat SPILL >> {self.path.name}) or rerun to measure them again")

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def close(self) -> None:
        """Release the lock, then raise StorageFull if records had to be spilled."""
        self.release()
        self.check()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        self.release()
        if et is None:
            self.check()


def check_writable(path: str | Path, flag: str) -> Path:
    """Fail before measuring when an output path cannot be written (``-``: standard output)."""
    from .storage import check_output
    return check_output(path, flag, allow_stdout=True)


def write_json(path: str | Path, records: Iterable[dict[str, Any]], flag: str = "--json") -> None:
    """The command's records as one document: atomically for a file, written through to a
    device or FIFO, ``-`` for standard output."""
    from .storage import write_text
    write_text(path, json.dumps({"schema": SCHEMA, "records": list(records)}, indent=1,
                                allow_nan=False) + "\n", flag)
