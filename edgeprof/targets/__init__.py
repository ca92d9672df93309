"""Where models run: the local CPU or a board over SSH, behind one small interface
(``name``, ``start_worker(label)``, ``stage(path)``)."""
from __future__ import annotations

from ..errors import InputError
from .local import LocalTarget


def get_target(name: str = "local", threads_env: dict[str, str] | None = None):
    if name in ("local", "", None):
        return LocalTarget()
    raise InputError(f"unknown target {name!r}: only 'local' is available in this version")
