"""The edgeprof worker: runs one model where it will be deployed (this machine or a board).

This file is copied to boards as it is, so it must stay self-contained: the standard library, numpy
and one runtime (onnxruntime, ai_edge_litert or tflite_runtime). It runs on Python >= 3.9 and
numpy >= 1.19. No psutil or scipy here: memory comes from /proc, statistics are the host's job.

Protocol: newline-delimited JSON. Each request on stdin is an object with ``cmd`` and an optional
``id``; each reply on stdout carries the same ``id`` and ``status`` ``ok``, ``error`` or
``progress``. Commands:

* ``load``: open the model and prepare its inputs (synthetic, seeded, or rows of an npz file put
  through the InputSpec); replies with the model's inputs/outputs, session and first-inference time
  and memory.
* ``import``: import ``runtime`` ahead of ``load`` (memory still counts from before it).
* ``env``: static facts about the machine and a snapshot of its state.
* ``round``: ``n`` timed runs; replies with the raw samples in seconds and state snapshots taken
  before and after, so throttling and frequency changes show up.
* ``predict``: outputs for a batch of raw data (an npz slice or inline arrays).
* ``ops``: per-operator-type time from the runtime's profiler (load with ``op_profile``).
* ``close``: reply and exit.

Arrays cross the protocol as ``{"dtype", "shape", "b64"}`` (raw little-endian bytes, base64).
"""
import time

_T0 = time.perf_counter()  # cold start: numpy's import time is part of what a user meets

import base64  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

_NUMPY_IMPORT_S = time.perf_counter() - _T0

PROTOCOL_VERSION = 1
_IMAGE_LAYOUTS = ("NCHW", "NHWC")


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------

class WorkerFault(Exception):
    """An error whose message is meant for the user as it is."""


def one_line(exc):
    text = str(exc).strip() or exc.__class__.__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[0] if lines else text
    # onnxruntime prefixes messages with "[ONNXRuntimeError] : 1 : FAIL : ..."
    if "[ONNXRuntimeError]" in line:
        parts = line.split(" : ", 3)
        line = parts[-1] if len(parts) == 4 else line
    return line[:500]


def encode_array(a):
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return {"dtype": a.dtype.str.lstrip("<|="), "shape": list(a.shape),
            "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(obj):
    raw = base64.b64decode(obj["b64"])
    return np.frombuffer(raw, dtype=np.dtype(obj["dtype"]).newbyteorder("<")).reshape(obj["shape"])


def read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, ValueError):
        return None


def read_int(path):
    text = read_text(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def memory_bytes():
    """Current and peak resident set size of this process, from /proc (Linux)."""
    rss = hwm = None
    text = read_text("/proc/self/status")
    if text:
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    if hwm is None:
        try:
            import resource
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        except Exception:  # pragma: no cover - non-Linux fallback
            pass
    return rss, hwm


# --------------------------------------------------------------------------------------------
# Environment readers. ``root`` lets tests point them at a fake sysfs/procfs tree.
# --------------------------------------------------------------------------------------------

def _p(root, path):
    return os.path.join(root, path.lstrip("/")) if root not in ("", "/") else path


def cpu_model(root="/"):
    text = read_text(_p(root, "/proc/cpuinfo")) or ""
    found = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            found.setdefault(k.strip(), v.strip())
    for key in ("model name", "Model", "Hardware", "Processor", "cpu model"):
        if found.get(key):
            return found[key]
    dt = read_text(_p(root, "/proc/device-tree/model"))
    return dt.rstrip("\x00") if dt else None


# The CPU flags that decide how fast int8 and fp16 run, spelled as the kernel writes them in
# /proc/cpuinfo (x86 ``flags``; Arm ``Features``, both 64-bit and 32-bit kernels).
X86_FEATURES = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
                "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "f16c", "fma")
ARM_FEATURES = ("neon", "asimd", "asimddp", "i8mm", "sve", "sve2", "bf16", "fphp", "asimdhp")
_X86_INT8_DOT = ("avx512_vnni", "avx_vnni", "amx_int8")
# Feature words only a 32-bit Arm kernel (or the compat view of a 32-bit process) writes
_ARM32_WORDS = ("neon", "vfp", "vfpv3", "vfpv4", "half", "thumb", "edsp", "fastmult")


def cpu_features(root="/"):
    """The CPU's ISA features from /proc/cpuinfo: ``{"arch", "flags", "int8_dot", "fp16_arith",
    "notes"}``; None when /proc/cpuinfo cannot be read.

    ``flags`` are those of X86_FEATURES / ARM_FEATURES present on every CPU, sorted, as the kernel
    writes them. ``int8_dot``: an int8 dot-product instruction (x86 avx512_vnni, avx_vnni or
    amx_int8; Arm asimddp). ``fp16_arith``: fp16 arithmetic (x86 avx512_fp16; Arm fphp or
    asimdhp). Both are None when cpuinfo has no flags/Features line to decide from."""
    text = read_text(_p(root, "/proc/cpuinfo"))
    if text is None:
        return None
    x86 = arm = None  # the words present on every CPU (intersection over processors)
    cpu_arch = None
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, value = line.split(":", 1)
        key = key.strip()
        words = set(value.split())
        if key == "flags":
            x86 = words if x86 is None else x86 & words
        elif key == "Features":
            arm = words if arm is None else arm & words
        elif key == "CPU architecture" and cpu_arch is None:
            cpu_arch = value.strip()
    notes = []
    if x86 is not None:
        arch = "x86_64" if "lm" in x86 else "x86"
        flags = sorted(f for f in X86_FEATURES if f in x86)
        int8_dot = any(f in x86 for f in _X86_INT8_DOT)
        fp16 = "avx512_fp16" in x86
        if "hypervisor" in x86:
            notes.append("virtual machine: the hypervisor may hide features the host CPU has")
    elif arm is not None:
        if any(w in arm for w in _ARM32_WORDS):
            arch = "arm"
        elif "asimd" in arm or "fp" in arm or (cpu_arch or "").startswith("8"):
            arch = "aarch64"
        else:
            arch = "arm"
        flags = sorted(f for f in ARM_FEATURES if f in arm)
        int8_dot = "asimddp" in arm
        fp16 = "fphp" in arm or "asimdhp" in arm
        if arch == "arm":
            notes.append("32-bit Arm: armv7 feature names, neon rather than asimd")
    else:
        arch = platform.machine() if root in ("", "/") else None
        if (cpu_arch or "").startswith("8"):
            arch = "aarch64"
        flags, int8_dot, fp16 = [], None, None
        notes.append("/proc/cpuinfo has no flags or Features line")
    if int8_dot is False:
        notes.append("no int8 dot product: int8 may be slower than fp32")
    return {"arch": arch, "flags": flags, "int8_dot": int8_dot, "fp16_arith": fp16,
            "notes": notes}


def _cpu_dirs(root):
    dirs = glob.glob(_p(root, "/sys/devices/system/cpu/cpu[0-9]*"))
    return sorted(dirs, key=lambda d: int(os.path.basename(d)[3:]))


def cpufreq(root="/"):
    """{cpu index: {"governor", "cur_hz", "max_hz"}} for CPUs that expose cpufreq."""
    out = {}
    for d in _cpu_dirs(root):
        idx = int(os.path.basename(d)[3:])
        fd = os.path.join(d, "cpufreq")
        if not os.path.isdir(fd):
            continue
        cur = read_int(os.path.join(fd, "scaling_cur_freq"))
        mx = read_int(os.path.join(fd, "cpuinfo_max_freq"))
        out[str(idx)] = {"governor": read_text(os.path.join(fd, "scaling_governor")),
                         "cur_hz": cur * 1000 if cur is not None else None,
                         "max_hz": mx * 1000 if mx is not None else None}
    return out


def thermal(root="/"):
    """{zone name: temperature in degrees C} from /sys/class/thermal."""
    out = {}
    for d in sorted(glob.glob(_p(root, "/sys/class/thermal/thermal_zone*"))):
        milli = read_int(os.path.join(d, "temp"))
        if milli is None:
            continue
        name = read_text(os.path.join(d, "type")) or os.path.basename(d)
        out[name + ":" + os.path.basename(d)] = milli / 1000.0
    return out


# Bits of `vcgencmd get_throttled` (Raspberry Pi firmware documentation).
THROTTLE_BITS = {0: "under-voltage", 1: "arm frequency capped", 2: "throttled",
                 3: "soft temperature limit", 16: "under-voltage occurred",
                 17: "arm frequency capping occurred", 18: "throttling occurred",
                 19: "soft temperature limit occurred"}


def parse_throttled(text):
    """``throttled=0x50005`` -> (0x50005, ["under-voltage", ...]); None when unparsable."""
    if not text or "=" not in text:
        return None
    try:
        value = int(text.strip().split("=", 1)[1], 16)
    except ValueError:
        return None
    return value, [name for bit, name in sorted(THROTTLE_BITS.items()) if value >> bit & 1]


def throttled(vcgencmd=None):
    exe = vcgencmd or shutil.which("vcgencmd")
    if not exe:
        return None
    try:
        res = subprocess.run([exe, "get_throttled"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=5, universal_newlines=True)
    except (OSError, subprocess.SubprocessError):
        return None
    parsed = parse_throttled(res.stdout)
    if parsed is None:
        return None
    return {"value": parsed[0], "flags": parsed[1]}


def power(root="/"):
    """Power and energy sensors: hwmon ``power*_input`` (microwatts; INA219/INA226/INA3221 on
    boards) and ``energy*_input`` (microjoules), and RAPL ``energy_uj`` counters under
    /sys/class/powercap (x86, when readable). Returns ({sensor: watts}, {sensor: joules})."""
    watts, joules = {}, {}
    for d in sorted(glob.glob(_p(root, "/sys/class/hwmon/hwmon*"))):
        name = read_text(os.path.join(d, "name")) or os.path.basename(d)
        for f in sorted(glob.glob(os.path.join(d, "power*_input"))):
            v = read_int(f)
            if v is not None:
                watts["%s:%s" % (name, os.path.basename(f)[:-6])] = v / 1e6
        for f in sorted(glob.glob(os.path.join(d, "energy*_input"))):
            v = read_int(f)
            if v is not None:
                joules["%s:%s" % (name, os.path.basename(f)[:-6])] = v / 1e6
    for d in sorted(glob.glob(_p(root, "/sys/class/powercap/*"))):
        v = read_int(os.path.join(d, "energy_uj"))
        if v is None or ":" in os.path.basename(d).split("rapl:", 1)[-1]:
            continue  # package domains only: their subzones are parts of the same energy
        name = read_text(os.path.join(d, "name")) or os.path.basename(d)
        joules["rapl:" + name] = v / 1e6
    return watts, joules


def snapshot(root="/", vcgencmd=None):
    """Cheap state that can drift during a run: frequencies, temperatures, throttling, power."""
    freq = cpufreq(root)
    watts, joules = power(root)
    return {"t_unix_s": time.time(),
            "cur_hz": {k: v["cur_hz"] for k, v in freq.items()} or None,
            "temp_c": thermal(root) or None,
            "throttled": throttled(vcgencmd),
            "power_w": watts or None, "energy_j": joules or None}


def runtime_versions():
    out = {"numpy": np.__version__}
    for mod, key in (("onnxruntime", "onnxruntime"), ("ai_edge_litert", "ai_edge_litert"),
                     ("tflite_runtime", "tflite_runtime")):
        if mod in sys.modules:
            out[key] = getattr(sys.modules[mod], "__version__", "unknown")
            continue
        try:
            m = __import__(mod)
            out[key] = getattr(m, "__version__", "unknown")
        except Exception:
            out[key] = None
    return out


def static_env(root="/"):
    """Machine facts; anything unreadable is None and listed under ``unavailable``."""
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    meminfo = read_text(_p(root, "/proc/meminfo")) or ""
    mem_total = None
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            mem_total = int(line.split()[1]) * 1024
    freq = cpufreq(root)
    governors = sorted({v["governor"] for v in freq.values() if v["governor"]})
    env = {
        "cpu_model": cpu_model(root),
        "cpu_features": cpu_features(root),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "affinity": affinity,
        "governors": governors or None,
        "max_hz": max([v["max_hz"] for v in freq.values() if v["max_hz"]] or [0]) or None,
        "mem_total_bytes": mem_total,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": runtime_versions(),
        "env_threads": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
                        if k in os.environ},
    }
    snap = snapshot(root)
    env["unavailable"] = sorted(
        [k for k in ("cpu_model", "cpu_features", "governors", "max_hz", "mem_total_bytes")
         if env[k] is None]
        + [k for k in ("cur_hz", "temp_c", "throttled") if snap[k] is None]
        + (["power"] if snap["power_w"] is None and snap["energy_j"] is None else []))
    env["snapshot"] = snap
    return env


# --------------------------------------------------------------------------------------------
# InputSpec: raw data -> model input. The single implementation; the host imports it too.
# --------------------------------------------------------------------------------------------

def infer_layout(shape):
    """NCHW when the channel axis looks like dim 1, else NHWC (4-D inputs only)."""
    if len(shape) != 4:
        return None
    c1, c3 = shape[1], shape[3]
    if isinstance(c1, int) and c1 in (1, 3, 4) and not (isinstance(c3, int) and c3 in (1, 3, 4)):
        return "NCHW"
    return "NHWC"


def _layout_fits(raw_shape, model_shape, model_layout, reading, resize):
    """Does raw 4-D data read as ``reading`` (NCHW or NHWC) match the model's channels and size?"""
    if reading == "NCHW":
        c, hw = raw_shape[1], tuple(raw_shape[2:4])
    else:
        c, hw = raw_shape[3], tuple(raw_shape[1:3])
    if len(model_shape) == 4 and model_layout in _IMAGE_LAYOUTS:
        mc = model_shape[1] if model_layout == "NCHW" else model_shape[3]
        mhw = tuple(model_shape[2:4] if model_layout == "NCHW" else model_shape[1:3])
        if isinstance(mc, int):
            if c != mc:
                return False
        elif c not in (1, 3, 4):
            return False
        if not resize and all(isinstance(d, int) for d in mhw) and hw != mhw:
            return False
        return True
    return c in (1, 3, 4)


def infer_data_layout(raw_shape, model_shape, model_layout, declared=None, resize=None):
    """The layout of 4-D raw image data (conventions: Data files). Read from the data's shape
    when exactly one reading (NHWC or NCHW) fits the model's input (its channel count, and its
    height and width unless the InputSpec resizes); else the InputSpec's ``data_layout``; else
    NHWC, the conventions' default for images."""
    if len(raw_shape) != 4:
        return "NHWC"
    fits = [r for r in ("NHWC", "NCHW")
            if _layout_fits(raw_shape, model_shape, model_layout, r, resize)]
    if len(fits) == 1:
        return fits[0]
    return declared or "NHWC"


def default_spec(raw_dtype, model_shape, model_dtype):
    # uint8 images are scaled to [0, 1] for float models; an integer model input takes them as
    # they are (a quantized input is handled by the runtime, which sees float32 here)
    integer_model = np.issubdtype(np.dtype(model_dtype or "float32"), np.integer)
    spec = {"layout": infer_layout(model_shape), "channel_order": "RGB",
            "scale": 1.0 / 255.0 if np.dtype(raw_dtype) == np.uint8 and not integer_model else 1.0,
            "mean": None, "std": None, "dtype": model_dtype, "resize": None}
    return spec


def _resize_bilinear(x, hw):
    """Bilinear resize of NHWC float32 (align_corners=False, like PIL/cv2 without antialias)."""
    n, h, w, c = x.shape
    th, tw = int(hw[0]), int(hw[1])
    if (th, tw) == (h, w):
        return x

    def coords(src, dst):
        pos = (np.arange(dst, dtype=np.float64) + 0.5) * src / dst - 0.5
        pos = np.clip(pos, 0, src - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, src - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, wy = coords(h, th)
    x0, x1, wx = coords(w, tw)
    top = x[:, y0] * (1 - wy)[None, :, None, None] + x[:, y1] * wy[None, :, None, None]
    return top[:, :, x0] * (1 - wx)[None, None, :, None] + top[:, :, x1] * wx[None, None, :, None]


def apply_input_spec(raw, spec):
    """Raw samples (images NHWC uint8/float32, or any float array) -> model input array."""
    x = np.asarray(raw)
    layout = spec.get("layout")
    if layout in _IMAGE_LAYOUTS:
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise WorkerFault("image data must be NHWC (N,H,W,C) or (N,H,W); got shape %s"
                              % (tuple(x.shape),))
        if spec.get("data_layout") == "NCHW":  # data already in channels-first layout
            x = x.transpose(0, 2, 3, 1)
        x = x.astype(np.float32)
        if spec.get("resize"):
            x = _resize_bilinear(x, spec["resize"])
        if spec.get("channel_order") == "BGR" and x.shape[-1] == 3:
            x = x[..., ::-1]
    elif np.issubdtype(x.dtype, np.integer) and np.issubdtype(np.dtype(spec.get("dtype") or "float32"), np.integer):
        return x.astype(spec.get("dtype"))
    else:
        x = x.astype(np.float32)
    scale = spec.get("scale")
    if scale not in (None, 1, 1.0):
        x = x * np.float32(scale)
    if spec.get("mean") is not None:
        x = x - np.asarray(spec["mean"], dtype=np.float32)
    if spec.get("std") is not None:
        x = x / np.asarray(spec["std"], dtype=np.float32)
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    dtype = spec.get("dtype") or "float32"
    if np.issubdtype(np.dtype(dtype), np.floating):
        x = x.astype(dtype)
    elif np.issubdtype(np.dtype(dtype), np.integer):
        # a plain integer input (a quantized one arrives here as float32: the runtime quantizes
        # it with the model's own scale and zero-point, timed apart from inference)
        info = np.iinfo(np.dtype(dtype))
        x = np.clip(np.round(x), info.min, info.max).astype(dtype)
    return np.ascontiguousarray(x)


# --------------------------------------------------------------------------------------------
# Runtimes: one interface over onnxruntime and LiteRT
# --------------------------------------------------------------------------------------------

def _dims(shape):
    return [d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) and d else None)
            for d in shape]


class OrtRuntime:
    name = "onnxruntime"

    def __init__(self, path, threads, op_profile=False):
        try:
            import onnxruntime as ort
        except ImportError:
            raise WorkerFault("onnxruntime is not installed for %s (pip install onnxruntime)"
                              % sys.executable)
        self.version = ort.__version__
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        self._profile_dir = None
        if op_profile:
            self._profile_dir = tempfile.mkdtemp(prefix="edgeprof-ort-")
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(self._profile_dir, "ort")
        try:
            self.sess = ort.InferenceSession(path, sess_options=so,
                                             providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise WorkerFault(_ort_load_message(exc))
        self.inputs = [{"name": i.name, "shape": _dims(i.shape), "dtype": _ort_dtype(i.type)}
                       for i in self.sess.get_inputs()]
        self.outputs = [{"name": o.name, "shape": _dims(o.shape), "dtype": _ort_dtype(o.type)}
                        for o in self.sess.get_outputs()]
        self.resizable = True
        self.io_timed_apart = False

    def set_inputs(self, feeds):
        self.feeds = feeds

    def timed_loop(self, n):
        run, feeds, clock = self.sess.run, self.feeds, time.perf_counter_ns
        out = [0] * n
        for i in range(n):
            t0 = clock()
            run(None, feeds)
            out[i] = clock() - t0
        return out

    def run(self, feeds):
        return self.sess.run(None, feeds)

    def op_profile(self):
        if self._profile_dir is None:
            raise WorkerFault("load the model with op_profile to read operator times")
        path = self.sess.end_profiling()
        try:
            with open(path) as f:
                events = json.load(f)
        finally:
            shutil.rmtree(self._profile_dir, ignore_errors=True)
        per_op = {}
        for ev in events:
            if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
                continue
            op = ev.get("args", {}).get("op_name", "?")
            slot = per_op.setdefault(op, {"total_s": 0.0, "calls": 0})
            slot["total_s"] += ev.get("dur", 0) * 1e-6
            slot["calls"] += 1
        return {"available": True, "per_op": per_op}


def _ort_dtype(type_str):
    table = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
             "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16",
             "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool"}
    return table.get(type_str, type_str)


def _ort_load_message(exc):
    import re
    msg = one_line(exc)
    low = msg.lower()
    m = re.search(r"([\w.]+:)?(\w+)\(-?\d+\) is not a registered function/op", msg) or \
        re.search(r"implementation for (\w+)\(\d+\) node with name '([^']*)'", msg)
    if m or "could not find an implementation" in low or "not_implemented" in low:
        what = ("operator %s%s" % (m.group(1) or "", m.group(2))) if m and "registered" in msg \
            else ("operator %s (node '%s')" % (m.group(1), m.group(2)) if m else "an operator")
        return "onnxruntime %s cannot run this model: %s is not supported (%s)" % (
            _ort_version(), what, msg)
    if "protobuf parsing failed" in low or "invalid_protobuf" in low or "load model" in low:
        return "not a valid ONNX model (truncated or corrupt): " + msg
    return msg


def _ort_version():
    mod = sys.modules.get("onnxruntime")
    return getattr(mod, "__version__", "")


def _litert_load_message(exc):
    text = str(exc)
    if "Flex" in text or "Select TensorFlow op" in text:
        ops = sorted(set(re.findall(r"'(Flex\w+)'|\b(Flex[A-Z]\w+)", text)))
        names = ", ".join(sorted({a or b for a, b in ops}))
        return ("the conversion produced TensorFlow (Flex) operators%s that the TFLite runtime "
                "cannot run; convert without them or pick an ONNX variant"
                % (" (" + names + ")" if names else ""))
    return "the TFLite runtime cannot load this model: " + one_line(exc)


class LiteRtRuntime:
    name = "litert"

    def __init__(self, path, threads, op_profile=False):
        Interpreter = None
        try:
            from ai_edge_litert.interpreter import Interpreter
            import ai_edge_litert as mod
            self.name = "litert"
        except ImportError:
            try:
                from tflite_runtime.interpreter import Interpreter
                import tflite_runtime as mod
                self.name = "tflite_runtime"
            except ImportError:
                raise WorkerFault("no TFLite runtime for %s (pip install ai-edge-litert)"
                                  % sys.executable)
        self.version = getattr(mod, "__version__", "unknown")
        try:
            self.interp = Interpreter(model_path=path, num_threads=int(threads))
            self.interp.allocate_tensors()
        except Exception as exc:
            raise WorkerFault(_litert_load_message(exc))
        self._describe()
        self.io_timed_apart = True
        self.resizable = True

    def _describe(self):
        def info(d):
            q = d.get("quantization_parameters") or {}
            scales = np.asarray(q.get("scales", []), dtype=np.float64)
            zps = np.asarray(q.get("zero_points", []), dtype=np.int64)
            quant = None
            if scales.size and np.issubdtype(d["dtype"], np.integer):
                quant = {"scale": float(scales[0]), "zero_point": int(zps[0]) if zps.size else 0}
            shape = [int(s) for s in d.get("shape_signature", d["shape"])]
            return {"name": d["name"], "index": d["index"],
                    "shape": [s if s >= 0 else None for s in shape],
                    "dtype": np.dtype(d["dtype"]).name, "quant": quant}
        self.in_details = [info(d) for d in self.interp.get_input_details()]
        self.built_shapes = {d["name"]: [int(x) for x in d["shape"]]
                             for d in self.interp.get_input_details()}
        self.out_details = [info(d) for d in self.interp.get_output_details()]
        self.inputs = [{k: v for k, v in d.items() if k != "index"} for d in self.in_details]
        self.outputs = [{k: v for k, v in d.items() if k != "index"} for d in self.out_details]

    def resize(self, shapes):
        """Resize inputs to ``shapes`` (name -> shape); False when the model refuses."""
        current = {d["name"]: list(self.interp.get_input_details()[i]["shape"])
                   for i, d in enumerate(self.in_details)}
        if all(list(shapes[d["name"]]) == current[d["name"]] for d in self.in_details):
            return True
        try:
            for d in self.in_details:
                self.interp.resize_tensor_input(d["index"], list(shapes[d["name"]]), strict=False)
            self.interp.allocate_tensors()
            return True
        except Exception:
            # back to the shapes the model was built with, so it still runs (one batch at a time)
            for d in self.in_details:
                self.interp.resize_tensor_input(d["index"], list(self.built_shapes[d["name"]]))
            self.interp.allocate_tensors()
            return False

    def built_batch(self):
        return min(int(s[0]) for s in self.built_shapes.values() if len(s)) or 1

    def _quantize(self, d, x):
        if d["quant"] is None:
            return x.astype(d["dtype"])
        info = np.iinfo(d["dtype"])
        q = np.round(x / d["quant"]["scale"]) + d["quant"]["zero_point"]
        return np.clip(q, info.min, info.max).astype(d["dtype"])

    def _dequantize(self, d, y):
        if d["quant"] is None:
            return y
        return ((y.astype(np.float32) - d["quant"]["zero_point"]) * d["quant"]["scale"]).astype(np.float32)

    def set_inputs(self, feeds):
        self.feeds = feeds
        self._set(feeds)

    def _set(self, feeds):
        for d in self.in_details:
            self.interp.set_tensor(d["index"], self._quantize(d, feeds[d["name"]]))

    def _get(self):
        return [self._dequantize(d, self.interp.get_tensor(d["index"])) for d in self.out_details]

    def timed_loop(self, n):
        invoke, clock = self.interp.invoke, time.perf_counter_ns
        out = [0] * n
        for i in range(n):
            t0 = clock()
            invoke()
            out[i] = clock() - t0
        return out

    def io_loop(self, n):
        """Time of quantizing/setting inputs and reading/dequantizing outputs, apart from invoke."""
        clock = time.perf_counter_ns
        out = [0] * n
        for i in range(n):
            t0 = clock()
            self._set(self.feeds)
            self._get()
            out[i] = clock() - t0
        return out

    def run(self, feeds):
        self._set(feeds)
        self.interp.invoke()
        return self._get()

    def op_profile(self):
        return {"available": False,
                "reason": "LiteRT's Python API exposes no per-operator profiler; "
                          "use the benchmark_model tool with --enable_op_profiling on the board"}


def detect_format(path):
    with open(path, "rb") as f:
        head = f.read(8)
    return "tflite" if head[4:8] == b"TFL3" else "onnx"


def import_runtime_s(path, runtime):
    """Import the runtime that would open ``path`` and return the seconds it took (about 0 once
    imported). A runtime that is not installed is left for ``open_runtime`` to report."""
    if runtime in (None, "", "auto"):
        runtime = "litert" if detect_format(path) == "tflite" else "onnxruntime"
    t = time.perf_counter()  # (path is only read when the runtime is not named)
    try:
        if runtime == "onnxruntime":
            import onnxruntime  # noqa: F401
        elif runtime in ("litert", "tflite_runtime"):
            try:
                import ai_edge_litert.interpreter  # noqa: F401
            except ImportError:
                import tflite_runtime.interpreter  # noqa: F401
    except ImportError:
        pass
    return time.perf_counter() - t


def open_runtime(path, runtime, threads, op_profile=False):
    fmt = detect_format(path)
    if runtime in (None, "", "auto"):
        runtime = "litert" if fmt == "tflite" else "onnxruntime"
    if runtime == "onnxruntime":
        if fmt == "tflite":
            raise WorkerFault("onnxruntime cannot run a TFLite model")
        return OrtRuntime(path, threads, op_profile)
    if runtime in ("litert", "tflite_runtime"):
        if fmt != "tflite":
            raise WorkerFault("not a TFLite model (no TFL3 identifier)")
        return LiteRtRuntime(path, threads, op_profile)
    raise WorkerFault("unknown runtime %r (onnxruntime, litert)" % runtime)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

def resolve_shape(inp, overrides, batch, flexible_batch=False):
    """Concrete input shape: the model's, with ``--shape`` overrides and the batch on dim 0.
    A fixed batch differing from ``batch`` is an error unless the runtime can resize or loop."""
    name, shape = inp["name"], list(inp["shape"])
    if name in overrides:
        given = [int(d) for d in overrides[name]]
        if len(given) != len(shape):
            raise WorkerFault("--shape %s has %d dims but input '%s' has %d (%s)"
                              % (name, len(given), name, len(shape), _fmt_shape(shape)))
        for want, have in zip(shape, given):
            if isinstance(want, int) and want != have:
                raise WorkerFault("--shape %s=%s conflicts with the model's fixed shape %s"
                                  % (name, "x".join(map(str, given)), _fmt_shape(shape)))
        return given
    if shape and not isinstance(shape[0], int):
        shape[0] = int(batch)
    elif shape and shape[0] != int(batch):
        if not flexible_batch:
            raise WorkerFault("input '%s' has a fixed batch of %d, so batch %d cannot run; "
                              "export the model with a dynamic batch dimension"
                              % (name, shape[0], int(batch)))
        shape[0] = int(batch)
    dynamic = [i for i, d in enumerate(shape) if not isinstance(d, int)]
    if dynamic:
        example = "x".join(str(d) if isinstance(d, int) else "N" for d in shape)
        raise WorkerFault("input '%s' has dynamic dims %s; give them with --shape %s=%s"
                          % (name, _fmt_shape(shape), name, example))
    return shape


def _fmt_shape(shape):
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def synthetic_inputs(inputs, shapes, seed):
    rng = np.random.RandomState(seed)
    feeds = {}
    for inp in inputs:
        shape, dtype = shapes[inp["name"]], inp["dtype"]
        if inp.get("quant") is not None or np.issubdtype(np.dtype(dtype), np.floating):
            feeds[inp["name"]] = rng.uniform(0.0, 1.0, size=shape).astype(
                "float32" if inp.get("quant") is not None else dtype)
        elif dtype == "bool":
            feeds[inp["name"]] = rng.randint(0, 2, size=shape).astype(bool)
        else:
            feeds[inp["name"]] = rng.randint(0, 10, size=shape).astype(dtype)
    return feeds


def load_npz_rows(path, names, start, stop):
    """Rows [start, stop) of each input's array; ``x`` serves a single-input model."""
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise WorkerFault("%s: cannot load (%s); edgeprof never unpickles data" % (path, one_line(exc)))
    except OSError as exc:
        raise WorkerFault("%s: cannot read: %s" % (path, one_line(exc)))
    with data:
        out = {}
        for name in names:
            key = name if name in data.files else ("x" if len(names) == 1 and "x" in data.files else None)
            if key is None:
                raise WorkerFault("%s has no array for input '%s' (keys: %s)"
                                  % (path, name, ", ".join(data.files) or "none"))
            out[name] = data[key][start:stop]
    return out


def prepare_feeds(rt, raw, spec, shapes, layouts=None):
    """Apply the InputSpec to raw rows and check the result against the model's input shapes.
    ``layouts``, when a dict, receives the data layout read for each 4-D image input."""
    feeds = {}
    for inp in rt.inputs:
        name = inp["name"]
        s = dict(spec.get(name) or spec.get("*") or {}) if spec else {}
        if not s:
            s = default_spec(raw[name].dtype, inp["shape"],
                             "float32" if inp.get("quant") is not None else inp["dtype"])
        if s.get("layout") is None and raw[name].ndim >= 3 and len(inp["shape"]) == 4:
            s["layout"] = infer_layout(inp["shape"])
        if s.get("layout") in _IMAGE_LAYOUTS and raw[name].ndim == 4:
            s["data_layout"] = infer_data_layout(raw[name].shape, inp["shape"], s["layout"],
                                                 s.get("data_layout"), s.get("resize"))
            if layouts is not None:
                layouts[name] = s["data_layout"]
        if not s.get("dtype"):
            s["dtype"] = inp["dtype"]
        if inp.get("quant") is not None:
            s["dtype"] = "float32"
        x = apply_input_spec(raw[name], s)
        want = shapes[name]
        if len(x.shape) != len(want) or any(
                isinstance(w, int) and w != h for w, h in zip(want[1:], x.shape[1:])):
            raise WorkerFault("data for input '%s' has shape %s after preprocessing (%s layout) "
                              "but the model expects %s" % (
                                  name, _fmt_shape(list(x.shape)), s.get("layout") or "no",
                                  _fmt_shape(["N"] + list(want[1:])).replace("'", "")))
        feeds[name] = x
    return feeds


# --------------------------------------------------------------------------------------------
# The worker
# --------------------------------------------------------------------------------------------

class Worker:
    def __init__(self, send):
        self.send = send
        self.rt = None
        self.sysfs_root = "/"
        self.rss_before_runtime = None  # this process before any runtime was imported

    def cmd_env(self, req):
        return {"env": static_env(req.get("root") or self.sysfs_root)}

    def _import_runtime(self, req):
        if self.rss_before_runtime is None:
            self.rss_before_runtime = memory_bytes()[0]
        return import_runtime_s(req.get("path"), req.get("runtime"))

    def cmd_import(self, req):
        """Import ``runtime`` (or the one that will open ``path``) ahead of ``load`` (nothing
        is timed then); ``load`` still counts memory from before the import."""
        return {"runtime_import_s": self._import_runtime(req)}

    def cmd_load(self, req):
        if req.get("sysfs_root"):  # a fake /sys and /proc tree (tests)
            self.sysfs_root = req["sysfs_root"]
        runtime_import_s = self._import_runtime(req)
        rss0, _ = memory_bytes()
        t0 = time.perf_counter()
        self.rt = rt = open_runtime(req["path"], req.get("runtime"), req.get("threads", 1),
                                    req.get("op_profile", False))
        session_s = time.perf_counter() - t0
        rss_loaded, _ = memory_bytes()
        flexible = isinstance(rt, LiteRtRuntime)
        if req.get("batch") is None:  # the model's own batch (fixed), else 1
            fixed = [i["shape"][0] for i in rt.inputs if i["shape"] and isinstance(i["shape"][0], int)
                     and i["shape"][0] > 0]
            batch = fixed[0] if fixed else 1
        else:
            batch = int(req["batch"])
        shapes = {i["name"]: resolve_shape(i, req.get("shapes") or {}, batch, flexible)
                  for i in rt.inputs}
        src = req.get("inputs") or {"synthetic": {"seed": 0}}
        if "npz" in src:
            start = int(src.get("start", 0))
            raw = load_npz_rows(src["npz"], [i["name"] for i in rt.inputs], start, start + batch)
            n_rows = min(len(v) for v in raw.values())
            if n_rows == 0:
                raise WorkerFault("%s has no rows" % src["npz"])
            if n_rows < batch:  # repeat rows so a batch larger than the data set still runs
                raw = {k: np.resize(v, (batch,) + v.shape[1:]) for k, v in raw.items()}
            data_layouts = {}
            feeds = prepare_feeds(rt, raw, req.get("spec") or {}, shapes, data_layouts)
            shapes = {k: list(v.shape) for k, v in feeds.items()}
        else:
            data_layouts = {}
            feeds = synthetic_inputs(rt.inputs, shapes, int(src.get("synthetic", {}).get("seed", 0)))
        self.batch_loop = 1
        if isinstance(rt, LiteRtRuntime) and not rt.resize(shapes):
            # a TFLite model that cannot take this batch: run batches of its own size in a loop
            b0 = rt.built_batch()
            self.batch_loop = max(1, -(-batch // b0))
            feeds = {k: v[:b0] for k, v in feeds.items()}
        for k, v in feeds.items():
            if np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v)):
                raise WorkerFault("input '%s' contains NaN or inf after preprocessing" % k)
        rt.set_inputs(feeds)
        t1 = time.perf_counter()
        try:
            rt.run(feeds)
        except Exception as exc:
            raise WorkerFault("inference failed: " + one_line(exc))
        first_s = time.perf_counter() - t1
        in_process_s = time.perf_counter() - _T0
        rss1, hwm1 = memory_bytes()
        return {"runtime": rt.name, "runtime_version": rt.version, "inputs": rt.inputs,
                "outputs": rt.outputs, "feed_shapes": shapes, "data_layouts": data_layouts,
                "runtime_import_s": runtime_import_s, "session_s": session_s,
                "in_process_s": in_process_s,
                "first_inference_s": first_s, "batch_loop": self.batch_loop,
                "rss_before_runtime_bytes": self.rss_before_runtime,
                "rss_before_load_bytes": rss0, "rss_after_load_bytes": rss_loaded,
                "rss_after_first_bytes": rss1, "peak_rss_bytes": hwm1}

    def _need_model(self):
        if self.rt is None:
            raise WorkerFault("no model loaded")
        return self.rt

    def cmd_round(self, req):
        rt = self._need_model()
        n = int(req.get("n", 1))
        if n < 1:
            raise WorkerFault("round needs n >= 1")
        # snapshots=False: no sensor reads around this round (the unsampled half of a sustained
        # run's alternation, which measures what sampling costs)
        sample = req.get("snapshots", True)
        before = snapshot(self.sysfs_root) if sample else None
        if self.batch_loop == 1:
            ns = rt.timed_loop(n)
        else:
            ns = [sum(rt.timed_loop(self.batch_loop)) for _ in range(n)]
        after = snapshot(self.sysfs_root) if sample else None
        reply = {"samples_s": [v * 1e-9 for v in ns], "before": before, "after": after}
        if rt.io_timed_apart and req.get("io_runs", 0):
            reply["io_samples_s"] = [v * 1e-9 for v in rt.io_loop(int(req["io_runs"]))]
        rss, hwm = memory_bytes()
        reply.update(rss_bytes=rss, peak_rss_bytes=hwm)
        return reply

    def cmd_predict(self, req):
        rt = self._need_model()
        names = [i["name"] for i in rt.inputs]
        if "npz" in req:
            raw = load_npz_rows(req["npz"], names, int(req.get("start", 0)), int(req.get("stop", 0)))
        else:
            raw = {k: decode_array(v) for k, v in req["arrays"].items()}
        n = min(len(v) for v in raw.values())
        if n == 0:
            raise WorkerFault("predict got no rows")
        spec = req.get("spec") or {}
        step = int(req.get("batch", 64))
        fixed = [i["shape"][0] for i in rt.inputs if i["shape"] and isinstance(i["shape"][0], int)]
        if fixed and isinstance(rt, OrtRuntime):
            step = fixed[0]  # onnxruntime cannot resize a fixed batch: feed whole batches of it
        outs = []
        for s in range(0, n, step):
            chunk = {k: v[s:s + step] for k, v in raw.items()}
            m = min(len(v) for v in chunk.values())
            if fixed and isinstance(rt, OrtRuntime) and m < step:  # pad the last batch, trim below
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], step - m, axis=0)])
                         for k, v in chunk.items()}
            rows = min(len(v) for v in chunk.values())
            feeds = prepare_feeds(rt, chunk, spec, {i["name"]: [rows] + list(i["shape"][1:])
                                                   for i in rt.inputs})
            if isinstance(rt, LiteRtRuntime) and not rt.resize(
                    {k: list(v.shape) for k, v in feeds.items()}):
                # a model that refuses other batch sizes runs one sample at a time
                rt.resize({k: [1] + list(v.shape[1:]) for k, v in feeds.items()})
                per_row = [rt.run({k: v[r:r + 1] for k, v in feeds.items()}) for r in range(m)]
                res = [np.concatenate([row[j] for row in per_row]) for j in range(len(rt.outputs))]
            else:
                res = [np.array(o, copy=True) for o in rt.run(feeds)]
            outs.append([o[:m] for o in res])
        if isinstance(rt, LiteRtRuntime):  # back to the shapes that `round` times
            rt.resize({k: list(v.shape) for k, v in rt.feeds.items()})
            rt.set_inputs(rt.feeds)
        merged = [np.concatenate([o[j] for o in outs]) for j in range(len(rt.outputs))]
        return {"outputs": {o["name"]: encode_array(a) for o, a in zip(rt.outputs, merged)}}

    def cmd_kernels(self, req):
        """The CPU kernels of this machine's onnxruntime: [domain, op, since_lo, since_hi]."""
        try:
            import onnxruntime as ort  # noqa: F401
            from onnxruntime.capi import onnxruntime_pybind11_state as C
            defs = C.get_all_opkernel_def()
        except Exception as exc:
            return {"available": False, "reason": one_line(exc)}
        out = [[k.domain, k.op_name, k.version_range[0], k.version_range[1]] for k in defs
               if k.provider == "CPUExecutionProvider"]
        return {"available": True, "onnxruntime": ort.__version__, "kernels": out}

    def cmd_ops(self, req):
        return {"ops": self._need_model().op_profile()}

    def handle(self, req):
        cmd = req.get("cmd")
        fn = getattr(self, "cmd_" + str(cmd), None)
        if fn is None:
            raise WorkerFault("unknown command %r" % cmd)
        return fn(req)


def cold_start(req):
    """One cold start as a user meets it, in this fresh process: import the runtime, open the
    model, run one inference. The host times the whole process from spawn to exit."""
    runtime = req.get("runtime")
    import_s = import_runtime_s(req["path"], runtime)
    t = time.perf_counter()
    rt = open_runtime(req["path"], runtime, req.get("threads", 1))
    session_s = time.perf_counter() - t
    batch = int(req.get("batch", 1))
    shapes = {i["name"]: resolve_shape(i, req.get("shapes") or {}, batch,
                                       isinstance(rt, LiteRtRuntime)) for i in rt.inputs}
    feeds = synthetic_inputs(rt.inputs, shapes, 0)
    if isinstance(rt, LiteRtRuntime) and not rt.resize(shapes):
        feeds = {k: v[:rt.built_batch()] for k, v in feeds.items()}  # its own batch size
    t = time.perf_counter()
    rt.run(feeds)
    first_s = time.perf_counter() - t
    return {"numpy_import_s": _NUMPY_IMPORT_S, "runtime_import_s": import_s,
            "session_s": session_s, "first_inference_s": first_s,
            "in_process_s": time.perf_counter() - _T0, "peak_rss_bytes": memory_bytes()[1]}


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--cold-start":
        try:
            out = dict(cold_start(json.loads(sys.argv[2])), status="ok")
        except WorkerFault as exc:
            out = {"status": "error", "error": str(exc)}
        except Exception as exc:
            out = {"status": "error", "error": one_line(exc)}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
        return
    # stdout carries the protocol; anything a library prints must not corrupt it.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # The host owns Ctrl-C: it asks the worker to close, or the worker sees EOF and exits.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def send(obj):
        proto.write(json.dumps(obj, separators=(",", ":")) + "\n")
        proto.flush()

    worker = Worker(send)
    send({"status": "ok", "hello": "edgeprof-worker", "protocol": PROTOCOL_VERSION,
          "pid": os.getpid(), "python": platform.python_version(),
          "numpy_import_s": _NUMPY_IMPORT_S})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        rid = None
        try:
            req = json.loads(line)
            rid = req.get("id")
            if req.get("cmd") == "close":
                send({"id": rid, "status": "ok"})
                break
            reply = worker.handle(req)
            reply.update(id=rid, status="ok")
            send(reply)
        except WorkerFault as exc:
            send({"id": rid, "status": "error", "error": str(exc)})
        except MemoryError:
            send({"id": rid, "status": "error", "error": "out of memory", "type": "MemoryError"})
        except Exception as exc:
            send({"id": rid, "status": "error", "error": one_line(exc),
                  "type": exc.__class__.__name__})


if __name__ == "__main__":
    main()
