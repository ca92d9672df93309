"""Result records (schema ``edgeprof.result/1``) and the append-only JSON Lines store.

A record is a plain dict so it survives any tool; its key decides what a rerun may skip.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from . import __version__
from .errors import InputError

SCHEMA = "edgeprof.result/1"
KINDS = ("latency", "accuracy", "robustness", "fidelity", "env", "error")
KEY_FIELDS = ("variant_id", "target", "threads", "batch", "kind", "data_sha256")


def new_record(kind: str, **fields: Any) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}")
    rec = {"schema": SCHEMA, "kind": kind, "edgeprof_version": __version__,
           "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    rec.update(fields)
    return rec


def record_key(rec: dict[str, Any]) -> tuple:
    return tuple(rec.get(f) for f in KEY_FIELDS)


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a JSON Lines file; a torn last line (a crash mid-write) is skipped."""
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
        if not isinstance(rec, dict) or rec.get("schema") != SCHEMA:
            raise InputError(f"{p}:{i + 1}: not an {SCHEMA} record")
        yield rec


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
    """Append-only JSON Lines file; each record is written whole and flushed to disk."""

    def __init__(self, path: str | Path | None, stamp: dict[str, Any] | None = None):
        self.path = Path(path) if path else None
        self.stamp = dict(stamp or {})  # fields added to every record (a sweep's run_id)
        self._keys: set[tuple] = set()
        if self.path is not None:
            if self.path.is_dir():
                raise InputError(f"--results {self.path}: is a directory")
            if self.path.exists():
                self._keys = {record_key(r) for r in read_records(self.path)
                              if r.get("kind") != "error"}
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8"):
                    pass
            except OSError as exc:
                raise InputError(f"--results {self.path}: cannot write: {exc.strerror or exc}")

    def has(self, key: tuple) -> bool:
        return key in self._keys

    def append(self, rec: dict[str, Any]) -> None:
        for k, v in self.stamp.items():
            rec.setdefault(k, v)
        if rec.get("kind") != "error":
            self._keys.add(record_key(rec))
        if self.path is None:
            return
        line = json.dumps(rec, separators=(",", ":"), allow_nan=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def check_writable(path: str | Path, flag: str) -> Path:
    """Fail before measuring when an output path cannot be written."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{flag} {p}: is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"{flag} {p}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise InputError(f"{flag} {p}: not writable")
    return p


def write_json(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps({"schema": SCHEMA, "records": list(records)}, indent=1,
                              allow_nan=False))
    tmp.replace(p)
