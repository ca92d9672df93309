"""Where models run: the local CPU or a board over SSH, behind one small interface
(``targets.base.Target``: ``name``, ``start_worker``, ``stage``, ``cold_start``, ``close``).

Boards are described by target files (see ``config.py``); ``local`` is built in.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from ..errors import EdgeprofError, InputError
from .base import Target
from .local import LocalTarget

__all__ = ["Target", "LocalTarget", "get_target", "targets_from_inventory", "run_per_target"]

R = TypeVar("R")


def get_target(name: str = "local", threads_env: dict[str, str] | None = None,
               targets_dir: str | Path | None = None, accept_new_host_key: bool = False,
               affinity: Sequence[int] | None = None, wait: bool = False,
               inventory: str | Path | None = None):
    """The target called ``name``: ``local``, the host ``name`` of the Ansible ``inventory``
    when one is given, else ``<name>.toml`` from the target folders.
    Nothing connects until the target is used."""
    if name in ("local", "", None):
        if affinity:
            raise InputError("--affinity applies to boards in target files; for the local "
                             "CPU run edgeprof under taskset")
        return LocalTarget(env=threads_env)
    from .config import load_target
    from .ssh import SshTarget

    if inventory is not None:
        from .inventory import inventory_target
        spec = inventory_target(inventory, name)
    else:
        spec = load_target(name, targets_dir)
    if spec.labgrid is not None:  # kind = "labgrid": the board behind a place, acquired on use
        from .labgrid import LabgridTarget
        return LabgridTarget(spec, accept_new_host_key=accept_new_host_key,
                             affinity=tuple(affinity) if affinity else None, wait=wait)
    return SshTarget(spec, accept_new_host_key=accept_new_host_key,
                     affinity=tuple(affinity) if affinity else None, wait=wait)


def targets_from_inventory(path: str | Path, group: str = "all",
                           accept_new_host_key: bool = False, wait: bool = False,
                           affinity: Sequence[int] | None = None) -> list[Any]:
    """Every host of ``group`` in the Ansible inventory ``path`` as an SshTarget named by its
    inventory hostname (checked like a target file; nothing connects yet)."""
    from .inventory import inventory_targets
    from .ssh import SshTarget

    return [SshTarget(spec, accept_new_host_key=accept_new_host_key,
                      affinity=tuple(affinity) if affinity else None, wait=wait)
            for spec in inventory_targets(path, group)]


def group_key(target: Any) -> tuple:
    """Targets with the same key share a machine and must never run at once."""
    return getattr(target, "group_key", ("local",))


def run_per_target(targets: Sequence[Any], fn: Callable[[Any], R],
                   max_machines: int | None = None) -> list[R | BaseException]:
    """``fn(target)`` for every target: different machines at once (one thread each, at most
    ``max_machines`` at a time), targets on the same host and port one after another. Results
    in the order of ``targets``; an exception raised by ``fn`` is returned in its place, so one
    board never stops the others."""
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(targets):
        groups.setdefault(group_key(t), []).append(i)
    out: list[Any] = [None] * len(targets)

    def run_group(indices: list[int]) -> None:
        for i in indices:
            try:
                out[i] = fn(targets[i])
            except Exception as exc:  # reported by the caller, next to the others' results
                out[i] = exc

    if len(groups) == 1:
        run_group(next(iter(groups.values())))
        return out
    ex = ThreadPoolExecutor(max_workers=max(1, min(max_machines or len(groups), len(groups))),
                            thread_name_prefix="edgeprof-target")
    try:
        for f in [ex.submit(run_group, idx) for idx in groups.values()]:
            f.result()
    except BaseException:  # Ctrl-C: drop the boards' connections so their threads end now
        for t in targets:
            (getattr(t, "abort", None) or getattr(t, "close", lambda: None))()
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown()
    return out


class LockedStore:
    """A results store shared by the threads of several targets: one append at a time, so
    lines of different boards never interleave."""

    def __init__(self, store: Any):
        self._store = store
        self._lock = threading.Lock()
        self.path = getattr(store, "path", None)

    def has(self, key: tuple) -> bool:
        with self._lock:
            return self._store.has(key)

    def append(self, rec: dict[str, Any]) -> None:
        with self._lock:
            self._store.append(rec)


# --------------------------------------------------------------------------------------------
# `edgeprof targets check`: what a board is, and what it lacks
# --------------------------------------------------------------------------------------------

def describe_cpu_features(cf: dict[str, Any] | None) -> str:
    """One line for ``env["cpu_features"]``: the flags that matter for int8/fp16, then what they
    mean, e.g. ``avx2 f16c fma (no int8 dot product: int8 may be slower than fp32)``."""
    if not cf:
        return "unavailable"
    flags = " ".join(cf.get("flags") or []) or "none of avx2/avx512/vnni/amx/asimd/neon"
    facts = []
    if cf.get("int8_dot") is True:
        facts.append("int8 dot product")
    elif cf.get("int8_dot") is False:
        facts.append("no int8 dot product: int8 may be slower than fp32")
    if cf.get("fp16_arith"):
        facts.append("fp16 arithmetic")
    facts += [n for n in cf.get("notes") or [] if not n.startswith("no int8 dot product")]
    return flags + (f" ({'; '.join(facts)})" if facts else "")


def _install(python: str, package: str) -> str:
    return f"{python} -m pip install {package}"


def check_target(target: Any) -> dict[str, Any]:
    """Connect, read the worker's ``env`` and list what is missing with the command that
    installs it. ``fatal`` is set when the board cannot profile at all."""
    python = getattr(getattr(target, "spec", None), "python", None) or getattr(target, "python")
    report: dict[str, Any] = {"name": target.name, "python_path": python, "missing": [],
                              "fatal": None, "env": None}
    spec = getattr(target, "spec", None)
    if spec is not None:
        report.update(address=spec.address, description=spec.description,
                      source=str(spec.source) if spec.source else None)
        target.connect()
        report.update(connect_s=target.connect_s, work_dir=target.remote_work_dir,
                      host_key_recorded=target.host_key_recorded)
        if getattr(spec, "labgrid", None) is not None:  # the address: known once acquired
            report["address"] = (f"{target.spec.address} (labgrid place {spec.labgrid.place} "
                                 f"at {spec.labgrid.coordinator})")
    try:
        with target.start_worker("targets check") as w:
            report["env"] = w.request("env")["env"]
        versions = dict(report["env"]["versions"])
    except EdgeprofError as exc:
        if not hasattr(target, "probe"):
            raise
        try:
            probe = target.probe()  # why the worker did not start: which imports fail
        except EdgeprofError:
            raise exc from None
        report["probe"] = probe
        report["worker_error"] = str(exc)
        versions = {m: ("present" if ok else None) for m, ok in probe["modules"].items()}
    litert = versions.get("ai_edge_litert") or versions.get("tflite_runtime")
    if not versions.get("numpy"):
        report["missing"].append(("numpy", _install(python, '"numpy>=1.19"')))
    if not versions.get("onnxruntime"):
        report["missing"].append(("onnxruntime", _install(python, "onnxruntime")))
    if not litert:
        report["missing"].append(("LiteRT", _install(python, "ai-edge-litert")))
    report["versions"] = versions
    names = [m for m, _ in report["missing"]]
    preferred = {"onnxruntime": "onnxruntime", "litert": "LiteRT"}.get(
        getattr(target, "runtime", None) or "")
    if "numpy" in names:
        report["fatal"] = "numpy is missing"
    elif "onnxruntime" in names and "LiteRT" in names:
        report["fatal"] = "no runtime (onnxruntime or LiteRT) is installed"
    elif preferred in names:
        report["fatal"] = f"its preferred runtime {preferred} is missing"
    elif "worker_error" in report:
        report["fatal"] = report["worker_error"]
    return report
