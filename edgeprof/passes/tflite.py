"""ONNX -> TFLite through onnx2tf, run as a subprocess in its own managed environment.

One converter run yields every precision (fp32, fp16, dynamic-range int8, full int8, int16x8),
so a run is cached on its own under ``<cache>/data/<run key>/`` and each precision becomes one
variant of the ``convert-tflite`` pass copied from it: asking for five precisions converts once.

Offline by construction: the converter's environment points every proxy variable at a closed
loopback port and a ``sitecustomize`` refuses name lookups and connections beyond this machine;
onnx2tf's sample calibration file (which it downloads for 4-D 3-channel inputs even with
``-cind``) is placed in its working directory, and calibration data always comes from ``--calib``.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data import Dataset
from ..errors import InputError
from ..tools import (ONNX2TF_VERSION, TENSORFLOW_VERSION, ensure_tool, logs_dir, timestamp,
                     tool_env, write_guard)
from ..variants.cache import Cache, Variant, canonical_json
from .base import PASS_CALLS

PASS_NAME = "convert-tflite"
RUN_COUNTER = "onnx2tf-run"
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static", "int16x8")
QUANTIZED = ("int8-dynamic", "int8-static", "int16x8")
NEEDS_CALIB = ("int8-static", "int16x8")
#: precision -> onnx2tf's output file suffix (``<stem>_<suffix>.tflite``)
OUTPUT_SUFFIX = {"fp32": "float32", "fp16": "float16", "int8-dynamic": "dynamic_range_quant",
                 "int8-static": "full_integer_quant", "int16x8": "integer_quant_with_int16_act"}
DESCRIPTION = {
    "fp32": "float32 weights and activations",
    "fp16": "float16 weights, float32 input/output; LiteRT's CPU kernels compute in float32, so "
            "expect a smaller file, not a faster model",
    "int8-dynamic": "dynamic-range: int8 weights, float32 activations and input/output; "
                    "activations are quantized on the fly",
    "int8-static": "full integer: int8 weights and activations calibrated on --calib, int8 "
                   "input/output",
    "int16x8": "int16 activations, int8 weights, calibrated on --calib; float32 input/output",
}
FULL_INT8_NOTE = ("full-int8 model: int8 input/output tensors; the worker quantizes inputs and "
                  "dequantizes outputs with the model's scale/zero-point (timed apart from "
                  "invoke), so the InputSpec stays float32 and all variants take the same raw data")
INT16_SLOW_NOTE = ("int16x8 runs on LiteRT's reference kernels (XNNPACK does not take 16x8 "
                   "models): the demo CNN measured about 30x slower than fp32 on x86; it buys "
                   "accuracy, not speed, unless the target's delegate (an NPU) supports 16x8")
SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


# Run in the converter's environment after onnx2tf: TFLite tensors get the ONNX input/output names
# (onnx2tf leaves "serving_default_x:0" / "PartitionedCall:0", and may reorder inputs), so data
# keyed by input name feeds every variant and fidelity compares outputs by their ONNX names.
# onnx2tf's own -coion needs the flatc binary, which it would download.
RENAME_IO = '''\
import json, sys
from tensorflow.lite.tools import flatbuffer_utils as fu

job = json.loads(sys.argv[1])
inputs, outputs, report = job["inputs"], job["outputs"], {}


def plain(name):
    if name.startswith("serving_default_"):
        name = name[len("serving_default_"):]
    return name[:-2] if name.endswith(":0") else name


for path in job["files"]:
    m = fu.read_model(path)
    sg = m.subgraphs[0]
    sd = m.signatureDefs[0] if m.signatureDefs else None
    if sd is not None:
        for tm in sd.inputs:
            key = tm.name.decode()
            if key in inputs:
                sg.tensors[tm.tensorIndex].name = key.encode()
        for k, tm in enumerate(sd.outputs):
            key = tm.name.decode()
            if key not in outputs and key.startswith("output_") and key[7:].isdigit() \\
                    and int(key[7:]) < len(outputs):
                key = outputs[int(key[7:])]
            if key in outputs:
                sg.tensors[tm.tensorIndex].name = tm.name = key.encode()
    else:
        for i in sg.inputs:
            key = plain(sg.tensors[i].name.decode())
            if key in inputs:
                sg.tensors[i].name = key.encode()
        if len(sg.outputs) == len(outputs):
            for i, key in zip(sg.outputs, outputs):
                sg.tensors[i].name = key.encode()
    fu.write_model(m, path)
    report[path] = {"inputs": [sg.tensors[i].name.decode() for i in sg.inputs],
                    "outputs": [sg.tensors[i].name.decode() for i in sg.outputs]}
print(json.dumps(report))
'''


def tool_versions() -> dict[str, str]:
    return {"onnx2tf": ONNX2TF_VERSION, "tensorflow": TENSORFLOW_VERSION}


def parse_precisions(text: str) -> list[str]:
    out = []
    for p in (t.strip() for t in text.split(",")):
        if not p:
            continue
        if p not in PRECISIONS:
            raise InputError(f"--precision {p!r}: TFLite precisions are {', '.join(PRECISIONS)}")
        if p not in out:
            out.append(p)
    if not out:
        raise InputError("--precision: give at least one of " + ", ".join(PRECISIONS))
    return out


# -- the ONNX side ---------------------------------------------------------------------------------

def check_convertible(path: Path, name: str) -> None:
    """onnx2tf quantizes on its own: an already-quantized or fp16 ONNX model is refused."""
    import onnx

    from .quantize import QUANT_OPS
    m = onnx.load(str(path), load_external_data=False)
    quant = [n.op_type for n in m.graph.node if n.op_type in QUANT_OPS]
    fp16 = [i for i in m.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    if quant or fp16:
        what = f"{len(quant)} {quant[0]} node(s)" if quant else f"{len(fp16)} fp16 tensors"
        raise InputError(f"{name} is already quantized ({what}); convert its fp32 parent and "
                         "pick the TFLite precision with --precision")


def static_batch_copy(src: Path, dst: Path) -> list[dict[str, Any]]:
    """onnx2tf wants static shapes: batch 1 on every input (the worker resizes the TFLite model
    for larger batches, or loops). Other dynamic dims cannot be guessed: refused."""
    import onnx
    m = onnx.load(str(src))
    inits = {i.name for i in m.graph.initializer}
    inputs = []
    for v in m.graph.input:
        if v.name in inits:
            continue
        dims = v.type.tensor_type.shape.dim
        for i, d in enumerate(dims):
            if not d.HasField("dim_value") or d.dim_value <= 0:
                if i != 0:
                    raise InputError(f"input '{v.name}' has a dynamic dim {i} "
                                     f"({d.dim_param or '?'}); onnx2tf needs static shapes: "
                                     "export the model with a fixed input size")
                d.Clear()
                d.dim_value = 1
        inputs.append({"name": v.name, "shape": [d.dim_value for d in dims],
                       "elem_type": v.type.tensor_type.elem_type})
    for v in m.graph.output:
        dims = v.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1
    del m.graph.value_info[:]  # stale intermediate shapes with a symbolic batch; onnx2tf re-infers
    onnx.save(m, str(dst))
    return inputs


def channels_first(shape: list[int | None], input_spec: dict[str, Any] | None) -> bool:
    if len(shape) != 4:
        return False
    layout = (input_spec or {}).get("layout")
    if layout:
        return layout == "NCHW"
    from ..targets.worker import infer_layout
    return infer_layout(shape) == "NCHW"


def nhwc_input_spec(parent_spec: dict[str, Any] | None) -> dict[str, Any]:
    """The TFLite variant's InputSpec: the parent's, channels-last; float32 even for full int8
    (the worker quantizes with the model's scale/zero-point)."""
    from ..inputspec import InputSpec
    base = dict(parent_spec) if parent_spec else InputSpec().to_dict()
    base["layout"] = "NHWC"
    base["dtype"] = "float32"
    return base


def calibration_arrays(inputs: list[dict[str, Any]], calib: Dataset, rows: int,
                       worker_spec: dict[str, Any] | None) -> dict[str, np.ndarray]:
    """Raw calibration rows through the InputSpec into the converter's layout (NHWC float32):
    the same code the worker runs, so calibration sees what inference will see."""
    from ..targets.worker import WorkerFault, apply_input_spec, default_spec
    out = {}
    for inp in inputs:
        key = inp["name"] if inp["name"] in calib.x else "x"
        if key not in calib.x or (key == "x" and len(inputs) > 1):
            raise InputError(f"{calib.path}: no array for input '{inp['name']}' (keys: "
                             f"{', '.join(calib.x)})")
        raw = calib.x[key][:rows]
        s = dict((worker_spec or {}).get(inp["name"]) or (worker_spec or {}).get("*") or {})
        if not s:
            s = default_spec(raw.dtype, inp["shape"], "float32")
        if len(inp["shape"]) == 4:
            s["layout"] = "NHWC"
        s["dtype"] = "float32"
        try:
            x = apply_input_spec(raw, s)
        except WorkerFault as exc:
            raise InputError(f"calibration data {calib.path.name}: {exc}")
        want = list(inp["shape"][1:])
        if len(inp["shape"]) == 4:
            want = [want[1], want[2], want[0]]  # NCHW model -> NHWC converter input
        if list(x.shape[1:]) != want:
            raise InputError(f"calibration data {calib.path.name} gives input '{inp['name']}' "
                             f"rows of shape {list(x.shape[1:])} after preprocessing; the "
                             f"converted model takes {want} (NHWC)")
        out[inp["name"]] = x.astype(np.float32)
    return out


def synthetic_calibration(inputs: list[dict[str, Any]], rows: int = 8) -> dict[str, np.ndarray]:
    """Stand-in data for a run that needs only dynamic-range int8 (weights-only: the data does
    not reach the weights, but onnx2tf's quantizing step wants some)."""
    rng = np.random.default_rng(0)
    out = {}
    for inp in inputs:
        shape = list(inp["shape"][1:])
        if len(shape) == 3:
            shape = [shape[1], shape[2], shape[0]]
        out[inp["name"]] = rng.random((rows, *shape), dtype=np.float32)
    return out


# -- one converter run ----------------------------------------------------------------------------

@dataclass
class ConverterRun:
    """One onnx2tf invocation on ``parent``; its outputs cached under ``<cache>/data/<key>/``."""
    cache: Cache
    parent: Variant
    calib: Dataset | None = None
    calib_rows: int = 200
    quantize: bool = False
    per_channel: bool = True
    worker_spec: dict[str, Any] | None = None
    say: Callable[[str], None] = field(default=lambda _m: None)
    install: bool = True

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"parent": self.parent.id, "converter": "onnx2tf",
                               "quantize": self.quantize, "static_batch": 1}
        if self.quantize:
            cfg["quant_type"] = "per-channel" if self.per_channel else "per-tensor"
            if self.calib is not None:
                cfg.update(calib_sha256=self.calib.sha256,
                           calib_rows=min(self.calib_rows, self.calib.n), spec=self.worker_spec)
            else:
                cfg["calib"] = "synthetic (dynamic-range only)"
        return cfg

    @property
    def key(self) -> str:
        payload = canonical_json({"run": self.config(), "tools": tool_versions()})
        return hashlib.sha256(payload.encode()).hexdigest()

    @property
    def dir(self) -> Path:
        return self.cache.root / "data" / self.key

    def info(self) -> dict[str, Any]:
        return json.loads((self.dir / "run.json").read_text())

    def ensure(self) -> Path:
        if (self.dir / "run.json").is_file():
            return self.dir
        data = self.cache.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        with open(data / f".{self.key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two processes asking for one run: one converts
            if (self.dir / "run.json").is_file():
                return self.dir
            env = tool_env("tflite", self.cache.root)
            if not env.ready:
                if not self.install:
                    raise InputError("the TFLite converter is not installed: run `edgeprof tools "
                                     f"install tflite` (it goes to {env.dir})")
                env = ensure_tool("tflite", self.cache.root, self.say)
            work = Path(tempfile.mkdtemp(prefix=".run-", dir=data))
            try:
                self._convert(env, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return self.dir

    def _convert(self, env, work: Path) -> None:
        inputs = static_batch_copy(self.parent.path, work / "model.onnx")
        cmd = [str(env.bin / "onnx2tf"), "-i", "model.onnx", "-o", "out"]
        calib_info: dict[str, Any] = {}
        if self.quantize:
            if self.calib is not None:
                arrays = calibration_arrays(inputs, self.calib, self.calib_rows, self.worker_spec)
            else:
                arrays = synthetic_calibration(inputs)
            cmd += ["-oiqt", "-qt", "per-channel" if self.per_channel else "per-tensor"]
            for i, (name, arr) in enumerate(arrays.items()):
                f = work / f"calib_{i}.npy"
                np.save(f, arr)
                cmd += ["-cind", name, f.name, "0.0", "1.0"]  # data arrive normalized
                calib_info[name] = list(arr.shape)
        if any(len(i["shape"]) == 4 for i in inputs):
            # onnx2tf loads this for 4-D 3-channel inputs whatever -cind says, else downloads it
            rng = np.random.default_rng(0)
            np.save(work / SAMPLE_FILE, rng.random((20, 128, 128, 3), dtype=np.float32))
        guard = write_guard(work / "guard")
        log_path = logs_dir(self.cache.root) / f"onnx2tf-{self.parent.short_id}-{timestamp()}.log"
        self.say(f"converting {self.parent.label} with onnx2tf {ONNX2TF_VERSION} "
                 f"({'all precisions' if self.quantize else 'fp32, fp16'}); log: {log_path}")
        PASS_CALLS[RUN_COUNTER] += 1
        t0 = time.perf_counter()
        with open(log_path, "w") as log:
            log.write("$ " + " ".join(cmd) + f"\n(cwd {work})\n")
            log.flush()
            rc = subprocess.run(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                env=env.subprocess_env(extra_pythonpath=guard)).returncode
        run_s = time.perf_counter() - t0
        out = work / "out"
        produced = sorted(p.name for p in out.glob("*.tflite")) if out.is_dir() else []
        if rc != 0 or "model_float32.tflite" not in produced:
            raise InputError(f"TFLite conversion of {self.parent.short_id} ({self.parent.label}) "
                             f"failed: {diagnose(log_path, self.parent.path, rc)}; "
                             f"converter log: {log_path}")
        names = self._rename_io(env, work, [out / n for n in produced], guard)
        result = work / "result"
        result.mkdir()
        for name in produced:
            os.replace(out / name, result / name)
        (result / "run.json").write_text(json.dumps({
            "key": self.key, "config": self.config(), "tools": tool_versions(),
            "tool_env": str(env.dir), "command": cmd, "converter_s": run_s, "log": str(log_path),
            "files": produced, "inputs": inputs, "calibration_shapes": calib_info,
            "io_names": names,
            "created_utc": timestamp()}, indent=1))
        try:
            os.rename(result, self.dir)
        except OSError:
            if not (self.dir / "run.json").is_file():
                raise


    def _rename_io(self, env, work: Path, files: list[Path], guard: Path) -> dict[str, Any]:
        """ONNX names onto the TFLite input/output tensors; a failure is recorded, not fatal."""
        import onnx
        m = onnx.load(str(work / "model.onnx"), load_external_data=False)
        inits = {i.name for i in m.graph.initializer}
        job = {"inputs": [i.name for i in m.graph.input if i.name not in inits],
               "outputs": [o.name for o in m.graph.output], "files": [str(f) for f in files]}
        (work / "rename_io.py").write_text(RENAME_IO)
        res = subprocess.run([str(env.python), "rename_io.py", json.dumps(job)], cwd=work,
                             capture_output=True, text=True, stdin=subprocess.DEVNULL,
                             env=env.subprocess_env(extra_pythonpath=guard))
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["?"])[-1]
            return {"error": f"ONNX names not copied to the TFLite tensors: {last[:200]}"}
        report = json.loads(res.stdout.strip().splitlines()[-1])
        return {Path(k).name: v for k, v in report.items()}


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_EXC = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit)):\s*(.*)$")


def diagnose(log_path: Path, onnx_path: Path, rc: int) -> str:
    """The failing operator (type and node) and the reason, read from the converter's log."""
    try:
        text = _ANSI.sub("", log_path.read_text(errors="replace"))
    except OSError:
        return f"onnx2tf exited with {rc} and left no log"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "edgeprof offline guard" in text or "127.0.0.1', port=9" in text or \
            "port=9): Failed" in text or "Unable to connect to proxy" in text:
        url = re.search(r"(https?://\S+|host='([^']+)')", text)
        target = url.group(2) or url.group(1) if url else "the network"
        return (f"onnx2tf tried to download from {target}, which edgeprof blocks "
                "(conversion must work offline)")
    exc = next((m for m in (_EXC.match(ln) for ln in reversed(lines)) if m), None)
    reason = f"{exc.group(1).rsplit('.', 1)[-1]}: {exc.group(3)[:200]}" if exc else ""
    types = _node_types(onnx_path)
    m = re.search(r"ERROR:\s*(\S+) OP is not yet implemented", text)
    if m:
        op = m.group(1)
        nodes = [n for n, t in types.items() if t == op]
        where = f" (node '{nodes[0]}')" if nodes else ""
        return f"operator {op}{where} is not supported by onnx2tf {ONNX2TF_VERSION}"
    names = re.findall(r"ERROR:\s*onnx_op_name:\s*(\S+)", text)
    if names:
        node = names[-1]
        op = types.get(node) or types.get(re.sub(r"^wa/", "/", node))
        what = f"operator {op} (node '{node}')" if op else f"node '{node}'"
        return f"onnx2tf could not convert {what}" + (f": {reason}" if reason else "")
    if reason:
        return f"onnx2tf exited with {rc}: {reason}"
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    last = (errors or lines or ["no output"])[-1]
    return f"onnx2tf exited with {rc}: {last[:240]}"


def _node_types(onnx_path: Path) -> dict[str, str]:
    try:
        import onnx
        m = onnx.load(str(onnx_path), load_external_data=False)
    except Exception:
        return {}
    return {n.name or f"{n.op_type}_{i}": n.op_type for i, n in enumerate(m.graph.node)}


# -- the pass -------------------------------------------------------------------------------------

@dataclass
class TflitePass:
    """One precision of a converter run, as a variant of the ONNX parent."""
    precision: str
    converter: ConverterRun
    name: str = PASS_NAME
    out_format: str = "tflite"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision {self.precision!r}: TFLite precisions are "
                             f"{', '.join(PRECISIONS)}")
        if self.precision in NEEDS_CALIB and self.converter.calib is None:
            raise InputError(f"{self.precision} needs calibration data: --calib DATA (train split)")
        if self.precision in QUANTIZED and not self.converter.quantize:
            raise InputError(f"{self.precision} needs a quantizing converter run")

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"precision": self.precision, "converter": "onnx2tf",
                               "static_batch": 1, "layout": "NHWC",
                               "output": OUTPUT_SUFFIX[self.precision]}
        if self.precision in QUANTIZED:
            cfg["quant_type"] = "per-channel" if self.converter.per_channel else "per-tensor"
        if self.precision in NEEDS_CALIB:
            cfg.update(calib_sha256=self.converter.calib.sha256,
                       calib_rows=min(self.converter.calib_rows, self.converter.calib.n),
                       spec=self.converter.worker_spec)
        return cfg

    def tool_versions(self) -> dict[str, str]:
        return tool_versions()

    def label(self) -> str:
        return f"tflite {self.precision}"

    def run(self, parent: Variant, out_path: Path) -> dict[str, Any]:
        d = self.converter.ensure()
        src = d / f"model_{OUTPUT_SUFFIX[self.precision]}.tflite"
        if not src.is_file():
            raise InputError(f"the converter run {d} has no {src.name}")
        shutil.copyfile(src, out_path)
        info = self.converter.info()
        notes = {"int8-static": [FULL_INT8_NOTE],
                 "int16x8": [INT16_SLOW_NOTE]}.get(self.precision, [])
        if "error" in info.get("io_names", {}):
            notes.append(info["io_names"]["error"] + "; data must be keyed by the TFLite names")
        for inp in info["inputs"]:
            if len(inp["shape"]) in (3, 5):
                notes.append(f"input '{inp['name']}' is rank {len(inp['shape'])}: onnx2tf made it "
                             "channels-last, which the InputSpec cannot express; feed it "
                             "channels-last data")
        ranks4 = [i for i in info["inputs"] if len(i["shape"]) == 4]
        spec = nhwc_input_spec(parent.input_spec) if ranks4 else parent.input_spec
        return {"input_spec": spec, "notes": notes,
                "extra": {"description": DESCRIPTION[self.precision],
                          "converter_run": info["key"], "converter_file": src.name,
                          "converter_s": info["converter_s"], "converter_log": info["log"],
                          "converter_command": info["command"]}}
