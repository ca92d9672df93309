"""Managed tool environments: big converters that must not share the core stack's interpreter.

``onnx2tf`` pins old numpy/onnx/protobuf and pulls TensorFlow (about 1.9 GB), so it lives in its
own virtual environment under ``<tools>/onnx2tf-<version>/`` and runs as a subprocess. ``<tools>``
is ``EDGEPROF_TOOLS_DIR`` when set (one prepared copy shared by every cache, e.g. by CI), else
``<cache root>/tools``. An environment is complete only once its ``edgeprof-tool.json`` marker is
written (last); a half-installed one is removed and rebuilt. A lock file keeps two installers
from racing. Tools run offline: every proxy variable points at a closed loopback port and an
offline guard (``sitecustomize``) refuses lookups and connections beyond this machine.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import InputError

MARKER = "edgeprof-tool.json"
#: a closed loopback port: with these proxies any HTTP(S) request fails at once and loudly
CLOSED_PROXY = "http://127.0.0.1:9"

PIP_VERSION = "26.3"
ONNX2TF_VERSION = "1.29.24"
TENSORFLOW_VERSION = "2.21.0"
# Verified together on Debian 12 / CPython 3.11 / x86_64 (November 2026). Step 1 is a full lock
# of what pip resolved for the stack notes' recipe plus what onnx2tf imports but does not get from
# it (psutil, onnxruntime, ai-edge-litert); step 2 installs tf-keras and onnx2tf without their own
# pins (onnx2tf's metadata pins numpy 1.26, onnx 1.19, protobuf 4 and would break the set).
ONNX2TF_STEPS: tuple[tuple[str, ...], ...] = (
    ("absl-py==2.5.1", "ai-edge-litert==2.3.0", "astunparse==1.6.3", "backports.strenum==1.2.8",
     "certifi==2026.10.19.post1", "charset-normalizer==3.5.3", "flatbuffers==25.12.19",
     "gast==0.7.0", "google-pasta==0.2.0", "grpcio==1.85.3", "h5py==3.14.0", "idna==3.20",
     "keras==3.15.1", "libclang==18.1.1", "markdown-it-py==4.3.0", "mdurl==0.1.2",
     "ml_dtypes==0.6.0", "namex==0.1.0", "numpy==2.4.6", "onnx==1.23.2",
     "onnx_graphsurgeon==0.6.1", "onnxruntime==1.32.0", "onnxsim==0.8.1",
     "opencv-python-headless==5.0.0.93", "opt_einsum==3.4.0", "optree==0.20.0",
     "packaging==26.4", "protobuf==7.36.2", "psutil==7.2.2", "Pygments==2.21.0",
     "requests==2.34.2", "rich==15.0.0", "six==1.17.0", "sne4onnx==2.0.1", "sng4onnx==2.0.1",
     f"tensorflow-cpu=={TENSORFLOW_VERSION}", "termcolor==3.3.0", "tqdm==4.70.1",
     "typing_extensions==4.16.0", "urllib3==2.8.0", "wrapt==2.5.2"),
    ("--no-deps", "tf-keras==2.21.0", f"onnx2tf=={ONNX2TF_VERSION}"),
)
ONNX2TF_PROBE = ("import json, onnx2tf, tensorflow, onnx, onnxruntime, onnxsim; "
                 "print(json.dumps({'onnx2tf': onnx2tf.__version__, "
                 "'tensorflow': tensorflow.__version__, 'onnx': onnx.__version__, "
                 "'onnxruntime': onnxruntime.__version__}))")


#: the offline guard: ``sitecustomize`` on PYTHONPATH of every tool run (and its subprocesses)
GUARD = '''\
# Written by edgeprof: the converter must work offline. Any lookup or connection beyond this
# machine fails at once with this message instead of hanging or silently downloading.
import socket as _s

_MSG = "edgeprof offline guard: the converter tried to reach %s; conversion must run offline"


def _local(host):
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    return host in (None, "", "localhost", "::1", "0.0.0.0") or str(host).startswith("127.")


_getaddrinfo = _s.getaddrinfo


def _guarded_getaddrinfo(host, *args, **kwargs):
    if not _local(host):
        raise OSError(_MSG % host)
    return _getaddrinfo(host, *args, **kwargs)


_connect, _connect_ex = _s.socket.connect, _s.socket.connect_ex


def _guarded_connect(self, address):
    if self.family in (_s.AF_INET, _s.AF_INET6) and not _local(address[0]):
        raise OSError(_MSG % (address[0],))
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    if self.family in (_s.AF_INET, _s.AF_INET6) and not _local(address[0]):
        raise OSError(_MSG % (address[0],))
    return _connect_ex(self, address)


_s.getaddrinfo = _guarded_getaddrinfo
_s.socket.connect = _guarded_connect
_s.socket.connect_ex = _guarded_connect_ex
'''


def write_guard(directory: Path) -> Path:
    """A folder holding the offline guard as ``sitecustomize.py``: put it on PYTHONPATH."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(GUARD)
    return directory


@dataclass(frozen=True)
class ToolSpec:
    key: str                       # the word users type: `edgeprof tools install tflite`
    name: str
    version: str
    steps: tuple[tuple[str, ...], ...]
    probe: str                     # Python run in the environment; prints its versions as JSON
    size_hint: str
    purpose: str

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.version}"


TOOLS: dict[str, ToolSpec] = {
    "tflite": ToolSpec("tflite", "onnx2tf", ONNX2TF_VERSION, ONNX2TF_STEPS, ONNX2TF_PROBE,
                       "about 1.9 GB", "ONNX -> TFLite converter (onnx2tf + TensorFlow)"),
}

IMAGECORRUPTIONS_VERSION = "1.1.2"
# The reference the corruption benchmark compares against, the environment that wrote
# tests/fixtures/corruptions/reference.npz (its versions are recorded there). Step 1 is a full lock
# of what pip resolved on CPython 3.11 / x86_64 (November 2026); setuptools < 81 because
# imagecorruptions imports pkg_resources. Step 2 without dependencies: its metadata asks for
# opencv-python (the GUI build) where the headless one serves.
IMAGECORRUPTIONS_STEPS: tuple[tuple[str, ...], ...] = (
    ("setuptools==80.10.2", "numpy==2.4.6", "scipy==1.17.1", "scikit-image==0.26.0",
     "pillow==13.0.0", "opencv-python-headless==5.0.0.93", "imageio==2.38.1", "lazy-loader==0.6",
     "networkx==3.6.1", "packaging==26.4", "tifffile==2026.3.3"),
    ("--no-deps", f"imagecorruptions=={IMAGECORRUPTIONS_VERSION}"),
)
IMAGECORRUPTIONS_PROBE = (
    "import json, warnings; warnings.simplefilter('ignore'); from importlib import metadata; "
    "import numpy; numpy.float_ = numpy.float64; import imagecorruptions, cv2, skimage, PIL; "
    "print(json.dumps({p: metadata.version(p) for p in ('imagecorruptions', 'numpy', 'scipy', "
    "'scikit-image', 'pillow', 'opencv-python-headless')}))")

#: Environments of reference implementations, used by the benchmarks (not user-facing tools:
#: ``edgeprof tools`` does not list them); installed and located like TOOLS.
REFERENCES: dict[str, ToolSpec] = {
    "imagecorruptions": ToolSpec("imagecorruptions", "imagecorruptions", IMAGECORRUPTIONS_VERSION,
                                 IMAGECORRUPTIONS_STEPS, IMAGECORRUPTIONS_PROBE, "about 250 MB",
                                 "reference image corruptions (imagecorruptions, for the benchmark)"),
}


def tools_dir(cache_root: Path) -> Path:
    env = os.environ.get("EDGEPROF_TOOLS_DIR")
    return Path(env) if env else Path(cache_root) / "tools"


def logs_dir(cache_root: Path) -> Path:
    """Converter and installer logs stay under the cache, whoever owns the environments."""
    d = Path(cache_root) / "tools" / "logs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def timestamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def spec_for(key: str) -> ToolSpec:
    if key not in TOOLS:
        raise InputError(f"unknown tool {key!r}; known: {', '.join(TOOLS)}")
    return TOOLS[key]


@dataclass(frozen=True)
class ToolEnv:
    spec: ToolSpec
    dir: Path

    @property
    def bin(self) -> Path:
        return self.dir / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    @property
    def marker(self) -> Path:
        return self.dir / MARKER

    @property
    def ready(self) -> bool:
        if not (self.marker.is_file() and self.python.exists()):
            return False
        try:
            return json.loads(self.marker.read_text()).get("steps") == _steps_json(self.spec)
        except (OSError, ValueError):
            return False

    def info(self) -> dict:
        try:
            return json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return {}

    def versions(self) -> dict[str, str]:
        return dict(self.info().get("versions", {}))

    def subprocess_env(self, extra_pythonpath: Path | None = None) -> dict[str, str]:
        """The environment a tool runs in: its venv first on PATH (onnx2tf calls ``onnxsim``),
        every proxy variable pointing at a closed port, no user site-packages, no GPU."""
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("no_proxy", "all_proxy", "pythonpath", "pythonhome",
                                    "virtual_env")}
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY",
                  "all_proxy"):
            env[k] = CLOSED_PROXY
        env["PATH"] = str(self.bin) + os.pathsep + os.environ.get("PATH", "")
        env["VIRTUAL_ENV"] = str(self.dir)
        env["PYTHONNOUSERSITE"] = "1"
        env["CUDA_VISIBLE_DEVICES"] = "-1"
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        if extra_pythonpath is not None:
            env["PYTHONPATH"] = str(extra_pythonpath)
        return env


def _steps_json(spec: ToolSpec) -> list[list[str]]:
    return [list(s) for s in spec.steps]


def tool_env(key: str, cache_root: Path) -> ToolEnv:
    spec = REFERENCES[key] if key in REFERENCES else spec_for(key)
    return ToolEnv(spec, tools_dir(cache_root) / spec.dirname)


def installed(cache_root: Path) -> list[tuple[ToolSpec, ToolEnv]]:
    return [(s, tool_env(k, cache_root)) for k, s in TOOLS.items()]


def _run_logged(cmd: list[str], log, env: dict[str, str] | None = None) -> int:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                          stdin=subprocess.DEVNULL).returncode


def _tail(path: Path, n: int = 1) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def ensure_tool(key: str, cache_root: Path, say: Callable[[str], None] | None = None,
                force: bool = False) -> ToolEnv:
    """The ready environment of tool ``key``, installed first when missing (needs PyPI; the
    tools themselves never reach the network when they run)."""
    env = tool_env(key, cache_root)
    if env.ready and not force:
        return env
    say = say or (lambda _msg: None)
    spec = env.spec
    try:
        env.dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"tools directory {env.dir.parent}: cannot create: {exc.strerror or exc}")
    lock_path = env.dir.parent / f".{spec.dirname}.lock"
    with open(lock_path, "w") as lock:
        if force:
            fcntl.flock(lock, fcntl.LOCK_EX)
        elif not _try_lock(lock):
            say(f"another process is installing {spec.dirname}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
            if env.ready:
                return env
        if env.ready and not force:
            return env
        if env.dir.exists():
            shutil.rmtree(env.dir)  # half installed, stale pins, or --force
        log_path = logs_dir(cache_root) / f"install-{spec.dirname}-{timestamp()}.log"
        say(f"installing the {spec.purpose} into {env.dir} ({spec.size_hint}, several minutes); "
            f"log: {log_path}")
        with open(log_path, "w") as log:
            base = getattr(sys, "_base_executable", None) or sys.executable
            pip = [str(env.python), "-m", "pip", "install", "--disable-pip-version-check",
                   "--no-input"]
            steps = [("create the virtual environment", [base, "-m", "venv", str(env.dir)]),
                     ("pip " + PIP_VERSION, [*pip, "pip==" + PIP_VERSION])]
            steps += [(f"install {len([a for a in s if not a.startswith('-')])} pinned packages"
                       + (" without their dependencies" if "--no-deps" in s else ""), [*pip, *s])
                      for s in spec.steps]
            for i, (what, cmd) in enumerate(steps, 1):
                say(f"  step {i}/{len(steps)}: {what}")
                rc = _run_logged(cmd, log)
                if rc != 0:
                    raise InputError(f"installing {spec.dirname} failed at step {i} ({what}, "
                                     f"exit {rc}): {_tail(log_path)[:300]}; log: {log_path}")
            probe = subprocess.run([str(env.python), "-c", spec.probe], capture_output=True,
                                   text=True, env=env.subprocess_env())
            log.write(probe.stdout + probe.stderr)
            if probe.returncode != 0:
                last = (probe.stderr.strip().splitlines() or ["?"])[-1]
                raise InputError(f"{spec.dirname} installed but does not import: {last[:300]}; "
                                 f"log: {log_path}")
            versions = json.loads(probe.stdout.strip().splitlines()[-1])
        tmp = env.marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"tool": spec.key, "name": spec.name, "version": spec.version,
                                   "steps": _steps_json(spec), "versions": versions,
                                   "python": sys.version.split()[0],
                                   "installed_utc": timestamp(), "log": str(log_path)}, indent=1))
        tmp.replace(env.marker)
        say(f"installed {spec.dirname}: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return env


def _try_lock(f) -> bool:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def remove_tool(key: str, cache_root: Path) -> bool:
    env = tool_env(key, cache_root)
    if not env.dir.exists():
        return False
    shutil.rmtree(env.dir)
    return True


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total
