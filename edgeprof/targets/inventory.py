"""Ansible inventories: every host of a group is a board, checked like a target file.

An inventory (YAML or INI, groups, children, group and host vars, ``group_vars/`` and
``host_vars/`` beside it) is read by ansible-core's own code (``InventoryManager``,
``DataLoader``, ``VariableManager``; the optional extra ``edgeprof[inventory]``), and the variables
edgeprof uses are expanded through ansible's ``Templar``. Each host becomes a ``TargetSpec``
named by its inventory hostname, built from the same keys a target file has and checked by the
same code (``config.spec_from_dict``):

====================================================  =========================================
inventory variable                                    target file key
====================================================  =========================================
``ansible_host`` (default: the inventory hostname)    ``host``
``ansible_port`` / ``ansible_user``                   ``port`` / ``user``
``ansible_ssh_private_key_file``                      ``identity_file``
``ansible_python_interpreter``                        ``python`` (``auto*``: /usr/bin/python3)
``edgeprof_KEY`` (threads, affinity, runtime, ...)    ``KEY`` (any other target file key)
====================================================  =========================================

Relative local paths (key files, known_hosts) are under the inventory's folder, as a target
file's are under its own. Errors are one line naming the inventory, the host and the variable.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .config import _KEYS, TargetSpec, spec_from_dict

MISSING = "inventories need ansible-core: pip install 'edgeprof[inventory]'"
AUTO_PYTHON = "/usr/bin/python3"
PREFIX = "edgeprof_"

# target file key <- ansible variables, first one set wins
_ANSIBLE: dict[str, tuple[str, ...]] = {
    "host": ("ansible_host", "ansible_ssh_host"),
    "port": ("ansible_port", "ansible_ssh_port"),
    "user": ("ansible_user", "ansible_ssh_user"),
    "identity_file": ("ansible_ssh_private_key_file", "ansible_private_key_file"),
    "python": ("ansible_python_interpreter",),
}
# edgeprof_KEY -> KEY for every other key of a target file (and two short spellings)
_EDGEPROF: dict[str, str] = {PREFIX + k: k for k in sorted(_KEYS - set(_ANSIBLE) - {"name"})}
_EDGEPROF.update({PREFIX + "connect_timeout": "connect_timeout_s",
                  PREFIX + "run_timeout": "run_timeout_s"})


@dataclass
class Inventory:
    """A parsed inventory: ansible-core's manager, loader and variable manager for one file."""
    path: Path
    manager: Any
    loader: Any
    variables: Any

    @property
    def groups(self) -> list[str]:
        return sorted(self.manager.groups)


def _ansible() -> tuple[Any, Any, Any, Any]:
    try:
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.template import Templar
        from ansible.vars.manager import VariableManager
    except ImportError:
        raise InputError(MISSING) from None
    return DataLoader, InventoryManager, VariableManager, Templar


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")


def _parse_problem(captured: str) -> str:
    """The first reason ansible-core gave (as a warning) for not parsing a source."""
    lines = [ln.strip() for ln in captured.splitlines() if ln.strip()]
    warnings = [ln.split("]:", 1)[1].strip(" *") for ln in lines if ln.startswith("[WARNING]")]
    for w in warnings:
        if "Failed to parse" in w:
            return w
    return warnings[0] if warnings else ""


def load_inventory(path: str | Path) -> Inventory:
    """Parse an Ansible inventory (a file, or a folder of them) with ansible-core."""
    path = Path(path)
    DataLoader, InventoryManager, VariableManager, _ = _ansible()
    if not path.exists():
        raise InputError(f"{path}: no such inventory file")
    loader = DataLoader()
    captured = io.StringIO()  # ansible reports an unparsable source as warnings on stderr
    with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
        try:
            manager = InventoryManager(loader=loader, sources=[str(path.absolute())])
        except Exception as exc:  # AnsibleError: e.g. INVENTORY_UNPARSED_FAILED set by the user
            raise InputError(f"{path}: not an inventory ansible-core can read: "
                             f"{_first_line(getattr(exc, 'message', exc))}") from None
    if not manager.hosts:
        why = _parse_problem(captured.getvalue())
        raise InputError(f"{path}: " + (f"not an inventory ansible-core can read: {why}" if why
                                         else "no hosts (or not an inventory ansible-core "
                                              "can read)"))
    return Inventory(path=path, manager=manager, loader=loader,
                     variables=VariableManager(loader=loader, inventory=manager))


def _plain(value: Any) -> Any:
    """Ansible's tagged str/int/list/dict (and INI tuples) as plain Python values, so checks and
    messages see what a TOML file would give."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _host_spec(inv: Inventory, host: Any, templar_cls: Any) -> TargetSpec:
    name = host.get_name()
    origin = f"{inv.path}: host {name}"
    hostvars = inv.variables.get_vars(host=host, include_hostvars=False)
    templar = templar_cls(loader=inv.loader, variables=hostvars)

    def value(var: str) -> Any:
        try:
            return _plain(templar.template(hostvars[var]))
        except Exception as exc:  # AnsibleError: an undefined variable, a bad template, a vault
            raise InputError(f"{origin}: {var}: cannot expand "
                             f"{_first_line(getattr(exc, 'message', exc))}") from None

    raw: dict[str, Any] = {}
    names: dict[str, str] = {}  # target file key -> the variable it came from (for messages)
    for key, candidates in _ANSIBLE.items():
        var = next((v for v in candidates if v in hostvars), None)
        if var is not None:
            raw[key], names[key] = value(var), var
    raw.setdefault("host", name)
    for var in sorted(hostvars):
        if not var.startswith(PREFIX):
            continue
        key = _EDGEPROF.get(var)
        if key is None:
            known = ", ".join(sorted(_EDGEPROF))
            raise InputError(f"{origin}: {var}: unknown edgeprof variable (known: {known})")
        if key in raw:
            raise InputError(f"{origin}: {var}: {names[key]} sets {key} already")
        raw[key], names[key] = value(var), var
    port = raw.get("port")
    if isinstance(port, str) and port.strip().isdigit():  # YAML "2222", or a non-native template
        raw["port"] = int(port)
    python = raw.get("python")
    if isinstance(python, str):
        if python.startswith("auto"):  # auto, auto_silent, auto_legacy, auto_legacy_silent
            raw["python"] = AUTO_PYTHON
        elif not python.startswith("/"):
            raise InputError(f"{origin}: {names['python']}: {python!r} is not an absolute path "
                             f"on the board (use e.g. /usr/bin/python3 or auto)")
    if raw.get("host") is not None and not isinstance(raw["host"], str):
        raw["host"] = str(raw["host"])  # ansible_host: 10.0.0.4 is a string, 1234 would not be
    return spec_from_dict(raw, name, inv.path, origin=origin, keys=names,
                          base=inv.path.parent if inv.path.is_file() else inv.path)


def host_names(inv: Inventory, group: str = "all") -> list[str]:
    """The inventory hostnames of ``group``, its children's hosts included, in inventory order."""
    grp = inv.manager.groups.get(group)
    if grp is None:
        raise InputError(f"{inv.path}: no group {group!r} (groups: {', '.join(inv.groups)})")
    names = [h.get_name() for h in grp.get_hosts()]
    if not names:
        raise InputError(f"{inv.path}: group {group!r} has no hosts")
    return names


def host_spec(inv: Inventory, name: str) -> TargetSpec:
    """The host ``name`` of the inventory as a target, checked like a target file."""
    *_, Templar = _ansible()
    host = inv.manager.hosts.get(name)
    if host is None:
        known = ", ".join(sorted(inv.manager.hosts))
        raise InputError(f"{inv.path}: no host {name!r} (hosts: {known})")
    return _host_spec(inv, host, Templar)


def hosts(inv: Inventory, group: str = "all") -> list[TargetSpec]:
    """Every host of ``group`` (its children's hosts included), in inventory order, as a target
    named by its inventory hostname; the first bad host stops with its one-line error."""
    return [host_spec(inv, n) for n in host_names(inv, group)]


def inventory_targets(path: str | Path, group: str = "all") -> list[TargetSpec]:
    """``load_inventory`` then ``hosts``: the targets of one group of an inventory file."""
    return hosts(load_inventory(path), group)


def inventory_target(path: str | Path, name: str) -> TargetSpec:
    """One host of an inventory file, by its inventory hostname."""
    return host_spec(load_inventory(path), name)


__all__ = ["Inventory", "MISSING", "host_names", "host_spec", "hosts", "inventory_target",
           "inventory_targets", "load_inventory"]
