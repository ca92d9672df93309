"""Target files: ``targets/<name>.toml`` describes one board reached over SSH.

Looked up in ``--targets-dir``, then ``./targets``, then the user config dir
(``platformdirs.user_config_dir("edgeprof")/targets``); the first ``<name>.toml`` found wins.
``local`` is built in. A bad file is a one-line InputError naming the file and the key.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import InputError
from ..validate import Table, read_toml

RUNTIMES = ("onnxruntime", "litert")
KINDS = ("ssh", "labgrid")  # labgrid: the board behind a place of a labgrid coordinator
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class TargetSpec:
    """One board: where it is, how to log in, and how to run the worker there."""
    name: str
    host: str
    source: Path | None = None            # the file it came from (for messages)
    port: int | None = None               # None: ~/.ssh/config, else 22
    user: str | None = None               # None: ~/.ssh/config, else the local user
    identity_file: Path | None = None     # None: ssh-agent and ~/.ssh/id_* (asyncssh defaults)
    known_hosts: Path | None = None       # None: ~/.ssh/known_hosts
    ssh_config: Path | None = None        # None: ~/.ssh/config
    python: str = "/usr/bin/python3"      # absolute: no login-shell PATH lookup, no rc cost
    work_dir: str = ".cache/edgeprof"     # relative paths are under the remote home
    runtime: str | None = None            # preferred runtime when --runtime is auto
    threads: tuple[int, ...] | None = None
    affinity: tuple[int, ...] | None = None
    env: dict[str, str] = field(default_factory=dict)
    description: str = ""
    connect_timeout_s: float = 10.0
    run_timeout_s: float = 300.0
    # an external meter read on the HOST during sustained runs: an argument list (no shell)
    # whose output's last line is watts, e.g. ["um34c-read", "--watts"]
    energy_command: tuple[str, ...] | None = None
    labgrid: Any = None                   # kind = "labgrid": a labgrid.LabgridPlace; host is
                                          # then read from the place once acquired

    @property
    def address(self) -> str:
        if not self.host and self.labgrid is not None:
            return f"labgrid place {self.labgrid.place} at {self.labgrid.coordinator}"
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}" + (f":{self.port}" if self.port else "")


def parse_cpus(text: Any, where: str) -> tuple[int, ...]:
    """``"0-3"``, ``"0,2"``, ``[0, 2]`` or ``2`` -> sorted CPU numbers."""
    if isinstance(text, bool):
        raise InputError(f"{where}: expected CPUs such as \"0-3\" or [0, 2]")
    if isinstance(text, int):
        items: list[Any] = [text]
    elif isinstance(text, list):
        items = text
    elif isinstance(text, str):
        items = [p.strip() for p in text.split(",") if p.strip()]
    else:
        raise InputError(f"{where}: expected CPUs such as \"0-3\" or [0, 2]")
    cpus: set[int] = set()
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
            cpus.add(item)
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", str(item).strip())
        if not m or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise InputError(f"{where}: {item!r} is not a CPU number or range such as 0-3")
        cpus.update(range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1))
    if not cpus:
        raise InputError(f"{where}: no CPUs given")
    return tuple(sorted(cpus))


_KEYS = {"name", "description", "host", "port", "user", "identity_file", "known_hosts",
         "ssh_config", "python", "work_dir", "runtime", "threads", "affinity", "env",
         "connect_timeout_s", "run_timeout_s", "energy_command"}
_FILE_KEYS = _KEYS | {"kind", "coordinator", "place", "resource"}  # target files only


def _local_path(value: Any, where: str, base: Path) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: expected a file path")
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else (base / p)


class TargetFile(Table):
    """The keys of a target file (values are checked with their context in spec_from_dict,
    which an inventory's host variables go through too)."""
    name: Any = None
    description: Any = None
    kind: Any = None
    host: Any = None
    port: Any = None
    user: Any = None
    identity_file: Any = None
    known_hosts: Any = None
    ssh_config: Any = None
    python: Any = None
    work_dir: Any = None
    runtime: Any = None
    threads: Any = None
    affinity: Any = None
    env: Any = None
    connect_timeout_s: Any = None
    run_timeout_s: Any = None
    energy_command: Any = None
    coordinator: Any = None
    place: Any = None
    resource: Any = None


assert set(TargetFile.model_fields) == _FILE_KEYS


def load_target_file(path: Path) -> TargetSpec:
    """Read and check one target file; any problem is an InputError naming the file and key."""
    path = Path(path)
    raw = read_toml(path, "target file")
    name = path.name[:-len(".toml")] if path.name.endswith(".toml") else path.stem
    from ..validate import check
    check(TargetFile, raw, str(path))  # the keys; their values are checked in spec_from_dict
    if "name" in raw and raw["name"] != name:
        raise InputError(f"{path}: name: {raw['name']!r} must match the file name ({name!r})")
    return spec_from_dict(raw, name, path)


def spec_from_dict(raw: dict[str, Any], name: str, source: Path, origin: str | None = None,
                   keys: Mapping[str, str] | None = None, base: Path | None = None) -> TargetSpec:
    """Check the keys of one target (as a target file gives them) and build its spec. Errors are
    one line ``ORIGIN: KEY: problem``; ``origin`` defaults to ``source``, ``keys`` renames keys
    in messages (an inventory's ``edgeprof_threads``), relative local paths are under ``base``
    (default: ``source``'s folder)."""
    origin = str(source) if origin is None else origin
    keys = keys or {}

    def where(key: str) -> str:
        head, dot, tail = key.partition(".")
        return f"{origin}: {keys.get(head, head)}{dot}{tail}"

    def text(key: str, default: str | None = None) -> str | None:
        v = raw.get(key, default)
        if v is not None and not isinstance(v, str):
            raise InputError(f"{where(key)}: expected a string, got {type(v).__name__}")
        return v

    def number(key: str, default: float, lo: float, hi: float) -> float:
        v = raw.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise InputError(f"{where(key)}: expected a number of seconds from {lo:g} to {hi:g}")
        return float(v)

    if not _NAME.fullmatch(name) or name == "local":
        raise InputError(f"{origin}: {name!r} cannot name a target (letters, digits, . _ -; "
                         "'local' is built in)")
    kind = text("kind", "ssh")
    if kind not in KINDS:
        raise InputError(f"{where('kind')}: {kind!r} is not one of {', '.join(KINDS)}")
    labgrid = None
    if kind == "labgrid":
        from .labgrid import place_from_dict  # the labgrid package itself loads on connect
        labgrid = place_from_dict(raw, where)
    else:
        for key in ("coordinator", "place", "resource"):
            if key in raw:
                raise InputError(f"{where(key)}: only for kind = \"labgrid\"")
    host = text("host")
    if kind == "labgrid" and host is None:
        host = ""  # from the place's NetworkService once acquired
    elif not host or not host.strip() or any(c.isspace() for c in host) or host.startswith("-"):
        raise InputError(f"{where('host')}: required: a host name, address or ~/.ssh/config alias")
    port = raw.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 1 <= port <= 65535):
        raise InputError(f"{where('port')}: expected an integer from 1 to 65535")
    user = text("user")
    if user is not None and (not user or user.startswith("-") or any(c.isspace() for c in user)):
        raise InputError(f"{where('user')}: {user!r} is not a user name")
    python = text("python", "/usr/bin/python3")
    if not python or not python.startswith("/"):
        raise InputError(f"{where('python')}: must be an absolute path on the board, such as "
                         "/usr/bin/python3 (no PATH lookup through a login shell)")
    work_dir = text("work_dir", ".cache/edgeprof") or ""
    if work_dir.startswith("~/"):
        work_dir = work_dir[2:]
    if not work_dir.strip() or work_dir in (".", "/") or "\n" in work_dir:
        raise InputError(f"{where('work_dir')}: expected a folder on the board, such as "
                         ".cache/edgeprof")
    runtime = text("runtime")
    if runtime is not None and runtime not in RUNTIMES:
        raise InputError(f"{where('runtime')}: {runtime!r} is not one of {', '.join(RUNTIMES)}")
    threads = raw.get("threads")
    if threads is not None:
        vals = threads if isinstance(threads, list) else [threads]
        if not vals or any(isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= 256
                           for t in vals):
            raise InputError(f"{where('threads')}: expected an integer or a list of integers "
                             "from 1 to 256")
        threads = tuple(dict.fromkeys(vals))
    affinity = parse_cpus(raw["affinity"], where("affinity")) if "affinity" in raw else None
    env = raw.get("env", {})
    if not isinstance(env, dict):
        raise InputError(f"{where('env')}: expected a table of NAME = \"value\"")
    for k, v in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            raise InputError(f"{where('env.' + k)}: not a valid environment variable name")
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise InputError(f"{where('env.' + k)}: expected a string")
    energy_command = raw.get("energy_command")
    if energy_command is not None:
        if not isinstance(energy_command, list) or not energy_command or not all(
                isinstance(a, str) and a.strip() for a in energy_command):
            raise InputError(f"{where('energy_command')}: expected an argument list run on this "
                             "host without a shell, such as [\"/usr/local/bin/meter\", "
                             "\"--watts\"], whose last output line is watts")
        energy_command = tuple(energy_command)
    base = Path(source).parent if base is None else base
    return TargetSpec(
        name=name, host=host, source=Path(source), port=port, user=user,
        identity_file=_local_path(raw["identity_file"], where("identity_file"), base)
        if "identity_file" in raw else None,
        known_hosts=_local_path(raw["known_hosts"], where("known_hosts"), base)
        if "known_hosts" in raw else None,
        ssh_config=_local_path(raw["ssh_config"], where("ssh_config"), base)
        if "ssh_config" in raw else None,
        python=python, work_dir=work_dir.rstrip("/") or work_dir, runtime=runtime,
        threads=threads, affinity=affinity, env={k: str(v) for k, v in env.items()},
        description=text("description", "") or "",
        connect_timeout_s=number("connect_timeout_s", 10.0, 0.1, 600.0),
        run_timeout_s=number("run_timeout_s", 300.0, 1.0, 86400.0), labgrid=labgrid,
        energy_command=energy_command)


def search_dirs(targets_dir: str | Path | None = None) -> list[Path]:
    """Where target files are looked up, first match wins."""
    dirs = []
    if targets_dir is not None:
        d = Path(targets_dir)
        if not d.is_dir():
            raise InputError(f"--targets-dir {d}: no such folder")
        dirs.append(d)
    dirs.append(Path("targets"))
    try:
        import platformdirs
        dirs.append(Path(platformdirs.user_config_dir("edgeprof")) / "targets")
    except ImportError:  # pragma: no cover - platformdirs is a dependency
        pass
    return dirs


def find_target_file(name: str, targets_dir: str | Path | None = None) -> Path | None:
    for d in search_dirs(targets_dir):
        p = d / f"{name}.toml"
        if p.is_file():
            return p
    return None


def load_target(name: str, targets_dir: str | Path | None = None) -> TargetSpec:
    path = find_target_file(name, targets_dir)
    if path is None:
        looked = ", ".join(str(d) for d in search_dirs(targets_dir))
        known = sorted(list_target_files(targets_dir))
        raise InputError(f"unknown target {name!r}: no {name}.toml in {looked} "
                         f"(known: {', '.join(['local'] + known)})")
    return load_target_file(path)


def list_target_files(targets_dir: str | Path | None = None) -> dict[str, Path]:
    """{name: file} of every target file found, earlier folders shadowing later ones."""
    found: dict[str, Path] = {}
    for d in search_dirs(targets_dir):
        if d.is_dir():
            for p in sorted(d.glob("*.toml")):
                found.setdefault(p.name[:-len(".toml")], p)
    return found
