"""Quantization of ONNX models: int8 static and dynamic (onnxruntime.quantization, with its
pre-processing) and fp16 (onnxconverter-common). Conventions: words and flags."""
from __future__ import annotations

import functools
import hashlib
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..data import Dataset
from ..errors import InputError
from ..variants.cache import Derived, Variant, canonical_json, root_of

PRECISIONS = ("int8-static", "int8-dynamic", "fp16")
FORMATS = ("qdq", "qoperator")
CALIB_METHODS = ("minmax", "entropy", "percentile")
#: activation/weight integer types: S8S8 (edgeprof's default), U8S8 (onnxruntime's x86 default
#: for QDQ; its u8s8 kernels can saturate on x86 without VNNI: see reduce_range), U8U8
TYPES = {"S8S8": ("int8", "int8"), "U8S8": ("uint8", "int8"), "U8U8": ("uint8", "uint8")}
QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
             "MatMulInteger", "DynamicQuantizeLinear", "QLinearAdd", "QGemm"}
DYNAMIC_SLOW_NOTE = (
    "int8-dynamic quantizes Conv as ConvInteger, which onnxruntime runs 3-12x slower than fp32 "
    "on CPUs (MobileNetV2 measured 24-82 ms against 6.7 ms fp32 on this kind of machine): for a "
    "convolutional model prefer int8-static; dynamic int8 pays off for MatMul-heavy models")
#: options given to onnxruntime's calibrator (part of the ranges' identity)
CALIB_OPTIONS: dict[str, Any] = {}
CALIB_BATCH = 16
log = logging.getLogger("edgeprof")

# onnxruntime/tools/__init__.py, whole: it imports torch (seconds) for a PyTorch export helper
# that quantization never uses. Only while it reads exactly so is the import deferred.
_ORT_TOOLS_INIT = (
    "import importlib.util",
    'have_torch = importlib.util.find_spec("torch")',
    "if have_torch:",
    "from .pytorch_export_helpers import infer_input_info  # noqa: F401")


def _ort_tools_without_torch() -> None:
    """Register the package ``onnxruntime.tools`` with its one export loaded on first use, so
    that pre-processing (symbolic shape inference lives there) does not import torch."""
    if "onnxruntime.tools" in sys.modules:
        return
    import importlib.util
    try:
        spec = importlib.util.find_spec("onnxruntime.tools")
        lines = [ln.strip() for ln in Path(spec.origin).read_text().splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")]
    except (ImportError, AttributeError, OSError, TypeError, ValueError):
        return
    if spec is None or spec.loader is None or tuple(lines) != _ORT_TOOLS_INIT:
        return  # another onnxruntime: import it as it is

    mod = importlib.util.module_from_spec(spec)

    def __getattr__(name: str) -> Any:
        if name == "have_torch":
            return importlib.util.find_spec("torch")
        if name == "infer_input_info":
            from onnxruntime.tools.pytorch_export_helpers import infer_input_info
            return infer_input_info
        raise AttributeError(f"module 'onnxruntime.tools' has no attribute {name!r}")
    mod.__getattr__ = __getattr__  # type: ignore[attr-defined]
    mod.importlib = importlib  # type: ignore[attr-defined]
    sys.modules["onnxruntime.tools"] = mod
    import onnxruntime
    onnxruntime.tools = mod  # type: ignore[attr-defined]


def shapes_complete(src: Path) -> bool:
    """Whether onnx's own shape inference gives every tensor a node computes a type and a
    shape of known rank whose every dimension is a number or a name the model gave. Symbolic
    shape inference then has nothing to add that quantization reads (the quantized graphs come
    out identical apart from ``value_info``; tests/passes check it), and skipping it spares
    importing sympy (~0.8 s). Graphs with subgraphs (If, Loop, Scan) always get it."""
    import onnx
    try:
        model = onnx.load(str(src), load_external_data=False)
        graph = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 - anything odd: let symbolic inference decide
        return False
    typed = {v.name: v.type for v in [*graph.value_info, *graph.output, *graph.input]}
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute):
            return False
        for out in filter(None, node.output):
            t = typed.get(out)
            if t is None or not t.HasField("tensor_type"):
                return False
            tt = t.tensor_type
            if not tt.elem_type or not tt.HasField("shape") or any(
                    not (d.HasField("dim_value") or d.HasField("dim_param"))
                    or d.dim_param.startswith("unk__") for d in tt.shape.dim):
                return False  # onnx names a dimension it could not infer "unk__<n>"
    return True


def pre_process(src: Path, dst: Path) -> None:
    """onnxruntime's quantization pre-processing (shape inference and basic graph
    optimisation), without the torch import it otherwise triggers; symbolic shape inference
    only where onnx's own leaves a shape unknown (``shapes_complete``)."""
    _ort_tools_without_torch()
    from onnxruntime.quantization.shape_inference import quant_pre_process
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=shapes_complete(src))


def _opset_for_per_channel(src: Path, out_path: Path, per_channel: bool,
                           notes: list[str]) -> Path:
    """Per-channel QDQ writes DequantizeLinear with ``axis``, which needs opset 13: an older
    model (e.g. a Keras export at opset 12) is converted to opset 13 first (onnx's version
    converter), with a note; otherwise the quantized file would not load."""
    import onnx

    m = onnx.load(str(src))
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 13)
    if not per_channel or opset >= 13:
        return src
    from onnx import version_converter
    try:
        up = version_converter.convert_version(m, 13)
    except Exception as exc:  # noqa: BLE001 - onnx raises several kinds
        notes.append(f"opset {opset} model could not be converted to opset 13 for per-channel "
                     f"quantization ({str(exc).splitlines()[0][:120]}); use --per-tensor")
        return src
    dst = out_path.with_name("preprocessed.onnx")  # the graph quantized (drift reads it)
    onnx.save(up, str(dst))
    notes.append(f"opset {opset} model converted to opset 13: per-channel quantization needs it")
    return dst


def tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    v = {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}
    try:
        import onnxconverter_common
        v["onnxconverter_common"] = onnxconverter_common.__version__
    except ImportError:  # pragma: no cover
        pass
    return v


@functools.lru_cache(maxsize=1)
def _cpu_kernels() -> list[list[Any]]:
    """onnxruntime's CPU kernels (domain, op, first and last opset): listed once per process."""
    from onnxruntime.capi import onnxruntime_pybind11_state as C
    return [[k.domain, k.op_name, *k.version_range] for k in C.get_all_opkernel_def()
            if k.provider == "CPUExecutionProvider"]


def check_quantizable(path: Path, precision: str, name: str | None = None) -> dict[str, Any]:
    """Refuse already-quantized models and models whose operators onnxruntime lacks (named)."""
    import onnx

    from ..modelinfo import onnx_support
    model = onnx.load(str(path), load_external_data=False)
    name = name or path.name
    quant = [n for n in model.graph.node if n.op_type in QUANT_OPS]
    if quant:
        raise InputError(f"{name} is already quantized ({len(quant)} {quant[0].op_type} "
                         "node(s) and more); quantize its fp32 parent instead")
    fp16 = [i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    if fp16:
        raise InputError(f"{name} already holds fp16 weights ({len(fp16)} tensors); "
                         "quantize its fp32 parent instead")
    support = onnx_support(str(path), _cpu_kernels())
    if not support["supported"]:
        names = ", ".join(f"{m['op']} (node '{m['node']}')" for m in support["missing"][:5])
        raise InputError(f"{name} has operators onnxruntime cannot run, so it cannot be "
                         f"calibrated or checked: {names}")
    return {"convs": sum(n.op_type == "Conv" for n in model.graph.node),
            "matmuls": sum(n.op_type in ("MatMul", "Gemm") for n in model.graph.node),
            "node_names": [n.name for n in model.graph.node],
            "op_types": sorted({n.op_type for n in model.graph.node})}


def equal_batch(n: int, batch: int) -> int:
    """The largest batch size <= ``batch`` that divides ``n`` rows into equal batches."""
    return next(d for d in range(max(1, min(batch, n)), 0, -1) if n % d == 0)


def calibration_batches(path: Path, data: Dataset, spec: dict[str, Any] | None, rows: int,
                        batch: int = 16, equal: bool = False) -> list[dict[str, np.ndarray]]:
    """Model-ready calibration feeds: raw rows through the InputSpec (the worker's own code).

    A model with a fixed batch B gets whole batches of B (a last partial batch is filled with
    rows from the start). ``equal``: every batch the same size (onnxruntime's histogram
    calibrators, entropy and percentile, stack the outputs of all batches into one array)."""
    from ..targets.worker import default_spec, prepare_feeds

    from ..modelinfo import onnx_inputs
    inputs = onnx_inputs(path)

    class _Rt:  # the minimal description prepare_feeds needs
        pass
    rt = _Rt()
    rt.inputs = [{"name": i["name"], "shape": i["shape"], "dtype": "float32"} for i in inputs]
    n = min(rows, data.n)
    fixed = [i["shape"][0] for i in inputs if i["shape"] and isinstance(i["shape"][0], int)]
    step = fixed[0] if fixed else (equal_batch(n, batch) if equal else batch)
    out = []
    for s in range(0, n, step):
        raw = {}
        for i in inputs:
            key = i["name"] if i["name"] in data.x else "x"
            if key not in data.x:
                raise InputError(f"{data.path}: no array for input '{i['name']}' (keys: "
                                 f"{', '.join(data.x)})")
            rows_ = data.x[key][:n]
            idx = np.arange(s, s + step) % n if fixed else np.arange(s, min(s + step, n))
            raw[i["name"]] = rows_[idx]
        sp = spec or {"*": default_spec(next(iter(raw.values())).dtype,
                                        inputs[0]["shape"], "float32")}
        shapes = {i["name"]: [len(next(iter(raw.values())))] + list(i["shape"][1:]) for i in inputs}
        from ..targets.worker import WorkerFault
        try:
            out.append(prepare_feeds(rt, raw, sp, shapes))
        except WorkerFault as exc:
            raise InputError(f"calibration data {data.path.name}: {exc}")
    return out


def _opset(path: Path) -> int | None:
    """The default-domain opset of a model file (per-channel QDQ may have raised it to 13)."""
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)


def _has_calibration_cache(quantize_static: Any) -> bool:
    """Whether this onnxruntime's quantize_static can save and reuse activation ranges."""
    import inspect
    try:
        return "calibration_cache_path" in inspect.signature(quantize_static).parameters
    except (TypeError, ValueError):
        return False


def _ranges_readable(path: Path, method: Any) -> bool:
    """Cached ranges onnxruntime can load, of the calibration method asked for."""
    from onnxruntime.quantization.calibrate import load_tensors_data
    try:
        return load_tensors_data(path).calibration_method == method
    except Exception as exc:  # a torn or foreign file: calibrate again
        why = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        log.warning("cached activation ranges %s unreadable (%s); calibrating again",
                    path.parent.name[:12], why)
        return False


class _Reader:
    """onnxruntime CalibrationDataReader over prepared feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._feeds = feeds
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


@dataclass
class QuantizePass:
    precision: str
    per_channel: bool = True
    format: str = "qdq"
    calib_method: str = "minmax"
    calib: Dataset | None = None
    calib_rows: int = 200
    spec: dict[str, Any] | None = None          # worker spec for the calibration data
    exclude_nodes: list[str] = field(default_factory=list)
    exclude_ops: list[str] = field(default_factory=list)
    types: str = "S8S8"                          # int8-static: activation/weight types
    reduce_range: bool = False                   # 7-bit weights: no u8s8 saturation without VNNI
    dynamic_weight_type: str = "uint8"           # int8-dynamic weights
    name: str = "quantize"
    out_format: str = "onnx"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision {self.precision!r}: ONNX quantization offers "
                             f"{', '.join(PRECISIONS)} (int16x8 is TFLite only: see convert)")
        if self.format not in FORMATS:
            raise InputError(f"--format {self.format!r} must be qdq or qoperator")
        if self.calib_method not in CALIB_METHODS:
            raise InputError(f"--calib-method {self.calib_method!r} must be one of "
                             f"{', '.join(CALIB_METHODS)}")
        if self.precision == "int8-static" and self.calib is None:
            raise InputError("int8-static needs calibration data: --calib DATA (train split)")
        if not 1 <= self.calib_rows <= 100_000:
            raise InputError(f"--calib-rows {self.calib_rows} is out of range (1 to 100000)")
        self.types = str(self.types).upper()
        if self.types not in TYPES:
            raise InputError(f"--types {self.types!r} must be one of {', '.join(TYPES)} "
                             "(activations then weights; onnxruntime has no S8U8 kernels)")
        if self.dynamic_weight_type not in ("uint8", "int8"):
            raise InputError(f"--weight-type {self.dynamic_weight_type!r} must be uint8 or int8")

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"precision": self.precision}
        if self.precision == "int8-static":
            act, wt = TYPES[self.types]
            cfg.update(per_channel=self.per_channel, format=self.format,
                       calib_method=self.calib_method, calib_sha256=self.calib.sha256,
                       calib_rows=min(self.calib_rows, self.calib.n), spec=self.spec,
                       activation_type=act, weight_type=wt)
        elif self.precision == "int8-dynamic":
            cfg.update(per_channel=self.per_channel, weight_type=self.dynamic_weight_type)
        else:
            cfg.update(keep_io_types=True)
        if self.reduce_range and self.precision != "fp16":
            cfg["reduce_range"] = True  # only when set: ids of earlier variants stay valid
        if self.exclude_nodes:
            cfg["exclude_nodes"] = sorted(self.exclude_nodes)
        if self.exclude_ops:
            cfg["exclude_ops"] = sorted(self.exclude_ops)
        return cfg

    def tool_versions(self) -> dict[str, str]:
        return tool_versions()

    def label(self) -> str:
        if self.precision == "int8-static":
            s = f"int8-static {self.format} {'per-channel' if self.per_channel else 'per-tensor'}"
            s += f" {self.calib_method}" if self.calib_method != "minmax" else ""
            s += f" {self.types}" if self.types != "S8S8" else ""
        elif self.precision == "int8-dynamic":
            s = "int8-dynamic" + (" per-channel" if self.per_channel else "")
            s += " s8-weights" if self.dynamic_weight_type == "int8" else ""
        else:
            s = "fp16"
        if self.reduce_range and self.precision != "fp16":
            s += " reduce-range"
        if self.exclude_nodes or self.exclude_ops:
            s += " mixed"
        return s

    # -- shared work ----------------------------------------------------------------------------
    def ranges_key(self, parent: Variant, preprocessed: bool, opset: int | None = None) -> str:
        """Identity of the activation ranges: what calibration depends on (the graph calibrated:
        the parent, pre-processed or not, at its opset; the data; the method), not the weights'
        granularity, the format, the integer types, reduce_range or the excluded nodes
        (onnxruntime calibrates every tensor of the quantizable ops)."""
        assert self.calib is not None
        return hashlib.sha256(canonical_json({
            "parent": parent.id, "preprocessed": preprocessed, "opset": opset,
            "calib_sha256": self.calib.sha256,
            "rows": min(self.calib_rows, self.calib.n), "spec": self.spec, "batch": CALIB_BATCH,
            "method": self.calib_method, "method_options": CALIB_OPTIONS,
            "tools": tool_versions()}).encode()).hexdigest()

    def _pre_process(self, parent: Variant, pre: Path, root: Path | None) -> None:
        """The pre-processed graph of ``parent`` at ``pre``: done once per parent and onnxruntime
        and copied from the cache (root/preprocessed/<key>/) for the next variants."""
        key = hashlib.sha256(canonical_json({"parent": parent.id, "tools": tool_versions()})
                             .encode()).hexdigest()
        store = Derived(root, "preprocessed") if root is not None else None
        cached = store.get(key, "preprocessed.onnx") if store is not None else None
        if cached is not None:
            shutil.copyfile(cached, pre)
            return
        pre_process(parent.path, pre)
        external = [f for f in pre.parent.iterdir() if f.name.startswith(pre.name + ".")
                    or f.name.endswith(".onnx.data")]
        if store is not None and not external:  # a graph with external data is not shared
            store.put(key, pre, "preprocessed.onnx")

    # -- running ------------------------------------------------------------------------------
    def _excluded(self, path: Path, facts: dict[str, Any]) -> list[str]:
        unknown = [n for n in self.exclude_nodes if n not in facts["node_names"]]
        if unknown:
            raise InputError(f"--exclude-nodes: no node named {', '.join(unknown)} in the model")
        bad_ops = [o for o in self.exclude_ops if o not in facts["op_types"]]
        if bad_ops:
            raise InputError(f"--exclude-ops: the model has no {', '.join(bad_ops)} nodes "
                             f"(it has {', '.join(facts['op_types'])})")
        import onnx
        m = onnx.load(str(path), load_external_data=False)
        return sorted(set(self.exclude_nodes) | {n.name for n in m.graph.node
                                                 if n.op_type in self.exclude_ops})

    def run(self, parent: Variant, out_path: Path) -> dict[str, Any]:
        facts = check_quantizable(parent.path, self.precision, f"{parent.short_id} ({parent.label})")
        notes: list[str] = []
        excluded = self._excluded(parent.path, facts)
        if self.precision == "fp16":
            import onnx
            from onnxconverter_common import float16
            m = onnx.load(str(parent.path))
            m16 = float16.convert_float_to_float16(m, keep_io_types=True,
                                                   node_block_list=excluded or None)
            onnx.save(m16, str(out_path))
            return {"notes": notes}
        from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                              quantize_dynamic, quantize_static)
        pre = out_path.with_name("preprocessed.onnx")
        root = root_of(parent)
        try:
            self._pre_process(parent, pre, root)
            src = pre
        except Exception as exc:  # pre-processing is an optimisation; quantization works without
            notes.append(f"quantization pre-processing skipped: {str(exc).splitlines()[0][:160]}")
            src = parent.path
        src = _opset_for_per_channel(src, out_path, self.per_channel, notes)
        if self.precision == "int8-dynamic":
            if facts["convs"]:
                notes.append(DYNAMIC_SLOW_NOTE)
            quantize_dynamic(str(src), str(out_path), per_channel=self.per_channel,
                             reduce_range=self.reduce_range,
                             weight_type=QuantType.QUInt8 if self.dynamic_weight_type == "uint8"
                             else QuantType.QInt8, nodes_to_exclude=excluded or None)
        else:
            qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
            method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                      "percentile": CalibrationMethod.Percentile}[self.calib_method]
            key = self.ranges_key(parent, src == pre, _opset(src))
            # onnxruntime before calibration_cache_path (added in 2026) calibrates every time
            shared = _has_calibration_cache(quantize_static)
            store = Derived(root, "calibration") if root is not None and shared else None
            ranges = store.get(key, "ranges.json") if store is not None else None
            if ranges is not None and not _ranges_readable(ranges, method):
                store.discard(key)
                ranges = None
            reader = None
            if ranges is None:  # calibrate: onnxruntime writes the ranges it computed here
                feeds = calibration_batches(parent.path, self.calib, self.spec, self.calib_rows,
                                            batch=CALIB_BATCH, equal=self.calib_method != "minmax")
                reader = _Reader(feeds)
                ranges = out_path.with_name("calibration.json")
            quantize_static(
                str(src), str(out_path), reader,
                quant_format=QuantFormat.QDQ if self.format == "qdq" else QuantFormat.QOperator,
                per_channel=self.per_channel, reduce_range=self.reduce_range,
                activation_type=qtype[TYPES[self.types][0]],
                weight_type=qtype[TYPES[self.types][1]], calibrate_method=method,
                nodes_to_exclude=excluded or None,
                calibration_providers=["CPUExecutionProvider"], extra_options=dict(CALIB_OPTIONS),
                **({"calibration_cache_path": str(ranges)} if shared else {}))
            if reader is not None and shared:
                if store is not None:
                    store.put(key, ranges, "ranges.json")
                ranges.unlink(missing_ok=True)
        extra: dict[str, Any] = {"excluded_nodes": excluded}
        if self.precision == "int8-static":
            # the activation ranges (cache root/calibration/<key>/) shared by every int8-static
            # variant of this parent calibrated alike, whatever its granularity, format, types
            extra["calibration_ranges"] = key
        if self.precision == "int8-static" and src == pre and pre.is_file():
            # kept in the variant folder: the graph quantization actually quantized (edgeprof
            # drift reads clipped shares on its tensors; see decisions, "Drift")
            extra["preprocessed_model"] = pre.name
        else:
            pre.unlink(missing_ok=True)
        for leftover in out_path.parent.glob("*.onnx.data"):
            if not (extra.get("preprocessed_model") and leftover.name.startswith(pre.name)):
                leftover.unlink()
        return {"notes": notes, "extra": extra}
