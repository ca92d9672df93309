"""Drift: is the field data still the data a static int8 model was calibrated on?

A static int8 model bakes in activation ranges from its calibration set; field values outside a
tensor's range saturate (are clipped) and only the quantized model loses accuracy. For every
quantized activation tensor of an ONNX int8-static variant (QDQ: the inputs of QuantizeLinear;
QOperator: the outputs of QuantizeLinear and the QLinear* ops) the representable float range is
``[(qmin - zp) * scale, (qmax - zp) * scale]``; the pre-processed fp32 graph that quantization
actually quantized (kept in the variant folder as ``preprocessed.onnx``) is run with those tensors
added as outputs, on calibration rows and on field rows, and the values that fall more than half a
quantization step outside the range are counted (half a step: what rounding alone would cost).

Full-integer TFLite (int8-static, int16x8) is read the same way: each integer activation tensor's
range comes from its own scale and zero point (the dtype's whole code range), and its values from
the float32 TFLite model of the same converter run (onnx2tf quantizes that very graph, so the
tensors carry the same names and shapes) run through LiteRT with preserved intermediate tensors
(``experimental_preserve_all_tensors``, built-in kernels), fed the rows as the converter
calibrated on them (NHWC float32 through the InputSpec). Saturation codes in the integer model itself are not the measure: a code at qmax may
be a value just inside the range, a ReLU's zeros sit at qmin, and errors of earlier layers add in.
The integer model runs through the worker's own LiteRT runtime (inputs quantized, outputs
dequantized with the model's parameters) for its top-1 agreement with the ONNX root.

The baseline is a held-out split of the calibration file (the rows after the variant's
``calib_rows``) where it has one, else the calibration rows themselves (the record says which):
fresh rows of the calibration distribution clip a little too, so findings compare with it under
stated thresholds (``THRESHOLDS``). Also: input drift (per-channel mean and std shift in units of
the baseline std, ``scipy.stats.ks_2samp`` on per-row mean and std) and the top-1 agreement of the
int8 variant with its fp32 parent (the root, unless quantization was applied to another pass's
output) on field rows against baseline rows. Decisions: "Drift". Nothing here prints.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Dataset, load_npz, row_hashes
from ..errors import InputError

#: findings' thresholds (stated in every message and in the record)
THRESHOLDS: dict[str, float] = {
    # a tensor is flagged when the share of field rows in which it clips (at least one value
    # out of range) is at least clip_rows_min and clip_ratio x that share on the baseline rows,
    # and Fisher's exact test (one-sided, rows) puts the rise below clip_p. Rows, not values:
    # clipping is local (a few pixels' responses), so 0.05 % of a layer's values can be clipped
    # in three rows out of four, and rows are independent where values are not
    "clip_rows_min": 0.05,
    "clip_ratio": 5.0,
    "clip_p": 0.01,
    # output agreement: flagged when it falls by more than this and the 95 % CI of the drop
    # (Newcombe's hybrid score interval) excludes zero
    "agreement_margin": 0.01,
    # input drift: the smaller KS p-value (row mean, row std), Bonferroni-corrected for the two
    "input_p": 0.01,
}
MIN_HELDOUT_ROWS = 20
#: TFLite precisions whose activations carry calibrated ranges
TFLITE_STATIC = ("int8-static", "int16x8")
TRY_RECALIBRATE = ("recalibrate with field rows (edgeprof quantize --calib FIELD_TRAIN.npz, rows "
                   "disjoint from your evaluation data) or use --calib-method percentile")
TRY_RECALIBRATE_TFLITE = ("recalibrate with field rows (edgeprof convert MODEL --to tflite "
                          "--precision int8-static --calib FIELD_TRAIN.npz, rows disjoint from "
                          "your evaluation data; the TFLite converter calibrates min-max only)")
_QRANGE = {2: (0, 255), 3: (-128, 127), 4: (0, 65535), 5: (-32768, 32767)}  # onnx elem types
# QOperator ops: positions of the output's (scale, zero point) among the inputs
_QOP_OUT = {"QLinearConv": (6, 7), "QLinearMatMul": (6, 7), "QLinearAdd": (6, 7),
            "QLinearMul": (6, 7), "QGemm": (7, 8), "QLinearAveragePool": (3, 4),
            "QLinearGlobalAveragePool": (3, 4), "QLinearLeakyRelu": (3, 4),
            "QLinearSigmoid": (3, 4), "QLinearSoftmax": (3, 4), "QLinearConcat": (0, 1)}
_FUSED_ACTIVATIONS = {"Relu", "Clip"}


@dataclass(frozen=True)
class TensorClip:
    tensor: str             # the measured tensor in the pre-processed fp32 graph
    node: str               # the node computing it in the int8 graph (op and name)
    lo: float               # representable float range of its int8 quantization
    hi: float
    calib_share: float      # share of values clipped on the calibration rows
    baseline_share: float   # on the baseline rows (held-out calibration rows, or calib_share)
    field_share: float
    field_low_share: float  # below lo / above hi on field rows
    field_high_share: float
    calib_rows_share: float     # share of rows with at least one clipped value
    baseline_rows_share: float
    field_rows_share: float
    rows_p: float               # Fisher's exact test, one-sided: field rows clip more often
    field_min: float
    field_max: float
    baseline_max: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftFinding:
    code: str               # clipping | agreement_drop | input_drift
    tensor: str | None
    node: str | None
    field_value: float      # clipped share, agreement, or the smallest corrected p-value
    baseline_value: float
    message: str
    try_next: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftResult:
    variant_id: str
    label: str
    format: str                         # qdq | qoperator | tflite int8 | tflite int16x8
    reference_id: str                   # the fp32 model agreement is measured against
    calib: dict[str, Any]
    baseline: dict[str, Any]            # role: held-out | calibration rows; rows, n
    field: dict[str, Any]
    thresholds: dict[str, float]
    overall: dict[str, float]           # pooled clipped shares: calib, baseline, field
    tensors: list[TensorClip]           # ranked by field clipped share, largest first
    input_drift: dict[str, Any]
    agreement: dict[str, Any]
    findings: list[DriftFinding]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema"] = "edgeprof.drift/1"
        return d


# -- the quantized tensors and their ranges --------------------------------------------------------
def _array(inits: dict[str, Any], name: str) -> np.ndarray | None:
    from onnx import numpy_helper
    t = inits.get(name)
    return None if t is None else numpy_helper.to_array(t)


def quantized_ranges(qmodel: Any) -> dict[str, dict[str, Any]]:
    """Tensor name in the int8 graph -> {scale, zero_point, qmin, qmax, lo, hi, node, float_name}
    for every quantized activation (per-tensor parameters; weights and biases are skipped)."""
    g = qmodel.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    found: dict[str, tuple[str, str | None, str]] = {}  # float name -> (scale, zp, int8 name)
    for n in g.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits:
            zp = n.input[2] if len(n.input) > 2 and n.input[2] else None
            name = n.input[0]
            if name.endswith("_QuantizeLinear_Input"):   # a graph output the quantizer renamed
                name = name[: -len("_QuantizeLinear_Input")]
            found.setdefault(name, (n.input[1], zp, n.input[0]))
        elif n.op_type in _QOP_OUT and n.domain in ("", "com.microsoft"):
            s, z = _QOP_OUT[n.op_type]
            if len(n.input) <= s or not n.input[s]:
                continue  # QGemm without output scale: float output
            out = n.output[0]
            name = out[: -len("_quantized")] if out.endswith("_quantized") else out
            found.setdefault(name, (n.input[s], n.input[z] if len(n.input) > z else None, out))
    ranges = {}
    for name, (s_name, z_name, qname) in found.items():
        scale = _array(inits, s_name)
        if scale is None or scale.size != 1:
            continue  # per-channel or computed scales: not an activation range we can read
        zp_t = inits.get(z_name) if z_name else None
        zp = 0 if zp_t is None else int(_array(inits, z_name).reshape(-1)[0])
        qmin, qmax = _QRANGE.get(zp_t.data_type if zp_t is not None else 2, (0, 255))
        scale = float(scale.reshape(-1)[0])
        src = producer.get(qname)
        if src is not None and src.op_type == "QuantizeLinear":  # QOperator: the float input
            src = producer.get(src.input[0])
        node = (f"{src.op_type} {src.name or src.output[0]}" if src is not None
                and src.op_type != "DequantizeLinear" else "graph input")
        ranges[name] = {"scale": scale, "zero_point": zp, "qmin": qmin, "qmax": qmax,
                        "lo": (qmin - zp) * scale, "hi": (qmax - zp) * scale, "node": node}
    return ranges


def _measured_tensor(fmodel: Any, name: str, ranges: dict[str, Any]) -> str:
    """Where to read a quantized tensor in the fp32 graph: a Conv/MatMul output that the int8 graph
    fused with its only consumer, a Relu or Clip, is read after that activation (its saturation at
    zero is the activation's, not clipping)."""
    consumers = [n for n in fmodel.graph.node if name in n.input]
    outputs = {o.name for o in fmodel.graph.output}
    if (len(consumers) == 1 and consumers[0].op_type in _FUSED_ACTIVATIONS
            and name not in outputs and consumers[0].output[0] not in ranges):
        return consumers[0].output[0]
    return name


# -- accumulators ----------------------------------------------------------------------------------
class _Scan:
    """Streaming counts over batches: clipped values per tensor, per-channel moments, per-row
    mean and std of the first input, top-1 classes of the int8 and fp32 models."""

    def __init__(self, names: list[str]):
        self.total = dict.fromkeys(names, 0)
        self.low = dict.fromkeys(names, 0)
        self.high = dict.fromkeys(names, 0)
        self.rows_hit = dict.fromkeys(names, 0)   # rows with at least one clipped value
        self.vmin = dict.fromkeys(names, math.inf)
        self.vmax = dict.fromkeys(names, -math.inf)
        self.ch_sum: np.ndarray | None = None
        self.ch_sq: np.ndarray | None = None
        self.ch_n = 0
        self.row_mean: list[np.ndarray] = []
        self.row_std: list[np.ndarray] = []
        self.q_top: list[np.ndarray] = []
        self.f_top: list[np.ndarray] = []
        self.rows = 0

    def share(self, name: str) -> float:
        return (self.low[name] + self.high[name]) / max(1, self.total[name])

    def pooled(self) -> float:
        return (sum(self.low.values()) + sum(self.high.values())) / max(1, sum(self.total.values()))


def _channel_view(x: np.ndarray, layout: str | None) -> np.ndarray:
    """(channels, values) of a model-ready batch."""
    if x.ndim == 4:
        if layout not in ("NCHW", "NHWC"):  # default spec: read it from the shape
            layout = "NCHW" if x.shape[1] in (1, 3) and x.shape[3] not in (1, 3) else "NHWC"
        axis = 1 if layout == "NCHW" else 3
    elif x.ndim == 2:
        axis = 1
    else:
        return x.reshape(1, -1)
    return np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)


def _count(sc: _Scan, values: dict[str, np.ndarray], measured: dict[str, str],
           ranges: dict[str, Any]) -> None:
    """Values more than half a quantization step outside each tensor's range, per tensor."""
    for qname, fname in measured.items():
        r = ranges[qname]
        v = np.asarray(values[fname], dtype=np.float32)
        half = 0.5 * r["scale"]
        sc.total[qname] += v.size
        out = (v < r["lo"] - half) | (v > r["hi"] + half)
        sc.low[qname] += int(np.count_nonzero(v < r["lo"] - half))
        sc.high[qname] += int(np.count_nonzero(v > r["hi"] + half))
        sc.rows_hit[qname] += int(np.count_nonzero(out.reshape(len(out), -1).any(axis=1))
                                  if v.ndim else out.any())
        if v.size:
            sc.vmin[qname] = min(sc.vmin[qname], float(v.min()))
            sc.vmax[qname] = max(sc.vmax[qname], float(v.max()))


def _moments(sc: _Scan, x: np.ndarray, layout: str | None) -> None:
    """Per-channel sums and per-row mean and std of a model-ready input batch."""
    x = np.asarray(x, dtype=np.float64)
    cv = _channel_view(x, layout)
    sc.ch_sum = cv.sum(axis=1) if sc.ch_sum is None else sc.ch_sum + cv.sum(axis=1)
    sq = (cv * cv).sum(axis=1)
    sc.ch_sq = sq if sc.ch_sq is None else sc.ch_sq + sq
    sc.ch_n += cv.shape[1]
    flat = x.reshape(len(x), -1)
    sc.row_mean.append(flat.mean(axis=1))
    sc.row_std.append(flat.std(axis=1))
    sc.rows += len(x)


def _scan(feeds: list[dict[str, np.ndarray]], probe: Any, probe_names: list[str],
          measured: dict[str, str], ranges: dict[str, Any], int8: Any, ref: Any,
          layout: str | None) -> _Scan:
    sc = _Scan(list(measured))
    first = next(iter(feeds[0])) if feeds else None
    for batch in feeds:
        values = dict(zip(probe_names, probe.run(probe_names, batch))) if probe_names else {}
        values.update({k: v for k, v in batch.items()})
        _count(sc, values, measured, ranges)
        _moments(sc, batch[first], layout)
        qo = np.asarray(int8.run(None, batch)[0])
        fo = np.asarray(ref.run(None, batch)[0])
        if qo.ndim == 2 and qo.shape[1] > 1:
            sc.q_top.append(qo.argmax(axis=1))
            sc.f_top.append(fo.argmax(axis=1))
    return sc


# -- statistics ------------------------------------------------------------------------------------
def _newcombe(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """95 % CI of p1 - p2 for two independent proportions (Newcombe's hybrid score, method 10)."""
    from .accuracy import wilson_interval
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1)
    l2, u2 = wilson_interval(k2, n2)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def _agreement(base: _Scan, fld: _Scan) -> dict[str, Any]:
    from .accuracy import wilson_interval
    if not base.q_top or not fld.q_top:
        return {"metric": None, "note": "the first output is not a class vector: top-1 "
                "agreement not measured"}
    out: dict[str, Any] = {"metric": "top1_agreement"}
    counts = {}
    for role, sc in (("baseline", base), ("field", fld)):
        q, f = np.concatenate(sc.q_top), np.concatenate(sc.f_top)
        k, n = int((q == f).sum()), len(q)
        counts[role] = (k, n)
        out[role] = {"n": n, "agree": k / n, "ci": list(wilson_interval(k, n))}
    (kb, nb), (kf, nf) = counts["baseline"], counts["field"]
    lo, hi = _newcombe(kb, nb, kf, nf)
    out["drop"] = kb / nb - kf / nf
    out["drop_ci"] = [lo, hi]
    return out


def _input_drift(base: _Scan, fld: _Scan) -> dict[str, Any]:
    from scipy import stats
    mb = base.ch_sum / base.ch_n
    sb = np.sqrt(np.maximum(base.ch_sq / base.ch_n - mb * mb, 0))
    mf = fld.ch_sum / fld.ch_n
    sf = np.sqrt(np.maximum(fld.ch_sq / fld.ch_n - mf * mf, 0))
    safe = np.where(sb > 0, sb, 1.0)
    channels = [{"channel": int(c), "baseline_mean": float(mb[c]), "field_mean": float(mf[c]),
                 "mean_shift_sd": float((mf[c] - mb[c]) / safe[c]),
                 "std_ratio": float(sf[c] / sb[c]) if sb[c] > 0 else None}
                for c in range(len(mb))]
    tests = []
    for stat, a, b in (("row_mean", base.row_mean, fld.row_mean),
                       ("row_std", base.row_std, fld.row_std)):
        r = stats.ks_2samp(np.concatenate(a), np.concatenate(b))
        tests.append({"statistic": stat, "test": "scipy.stats.ks_2samp", "ks": float(r.statistic),
                      "p": float(r.pvalue)})
    p_min = min(1.0, min(t["p"] for t in tests) * len(tests))
    return {"channels": channels, "tests": tests, "p_corrected": p_min,
            "note": "channel statistics of the model-ready input (after the InputSpec); shifts "
                    "in units of the baseline std"}


# -- the variant -----------------------------------------------------------------------------------
def _check_variant(v: Any) -> None:
    name = f"{v.short_id} ({v.label})"
    cfg = v.config or {}
    if v.format == "tflite":
        p = cfg.get("precision") or v.pass_name
        if p not in TFLITE_STATIC:
            raise InputError(f"{name} is a TFLite {p} model, not a full-integer one: only "
                             "int8-static (full int8) and int16x8 TFLite variants bake calibration "
                             "ranges in (edgeprof convert --to tflite --precision int8-static "
                             "--calib DATA)")
        return
    if v.pass_name != "quantize" or cfg.get("precision") != "int8-static":
        what = cfg.get("precision") or v.pass_name
        raise InputError(f"{name} is {'an' if what[0] in 'aeiou' else 'a'} {what} variant, not a "
                         "static int8 one: only int8-static bakes calibration ranges in "
                         "(quantize with --precision int8-static first)")


def _preprocessed(v: Any, parent: Any, notes: list[str], scratch: Path) -> Path:
    """The fp32 graph quantization quantized: the kept file, else pre-processing run again."""
    kept = v.extra.get("preprocessed_model")
    if kept and (v.dir / kept).is_file():
        return v.dir / kept
    if any("pre-processing skipped" in n for n in v.notes):
        return parent.path
    out = scratch / "preprocessed.onnx"
    try:
        from ..passes.quantize import pre_process  # (without the torch import)
        pre_process(parent.path, out)
    except Exception:
        return parent.path
    notes.append("this variant predates kept pre-processed graphs: pre-processing was run again "
                 "on its parent (rebuild the variant to read the very graph it quantized)")
    return out


def _subset(ds: Dataset, start: int, stop: int) -> Dataset:
    return Dataset(path=ds.path, x={k: a[start:stop] for k, a in ds.x.items()},
                   y=None if ds.y is None else ds.y[start:stop], sha256=ds.sha256)


def _session(model: Any) -> Any:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    data = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _onnx_scans(v: Any, parent: Any, cache: Any, parts: list[Dataset],
                notes: list[str]) -> tuple[str, dict[str, Any], dict[str, str], list[_Scan]]:
    """ONNX QDQ/QOperator: ranges from the Q/DQ scales and zero points, values read on the kept
    pre-processed fp32 graph with the quantized tensors added as outputs. ``parts``: calibration,
    baseline (the same object when the baseline is the calibration rows) and field rows."""
    import onnx
    from onnx import TensorProto, helper

    from ..passes.quantize import calibration_batches
    from ..variants.family import spec_for_worker

    with tempfile.TemporaryDirectory(prefix="edgeprof-drift-") as tmp:
        pre = _preprocessed(v, parent, notes, Path(tmp))
        qmodel = onnx.load(str(v.path))
        fmodel = onnx.load(str(pre))
    fmt = "qoperator" if any(n.op_type in _QOP_OUT for n in qmodel.graph.node) else "qdq"
    ranges = quantized_ranges(qmodel)
    known = {o for n in fmodel.graph.node for o in n.output} | {i.name for i in fmodel.graph.input}
    missing = [n for n in ranges if n not in known]
    for n in missing:
        del ranges[n]
    if missing:
        notes.append(f"{len(missing)} quantized tensor(s) have no counterpart in the fp32 graph "
                     f"and are not measured (e.g. {missing[0]})")
    if not ranges:
        raise InputError(f"{v.short_id}: found no quantized activation tensor to measure")
    measured = {n: _measured_tensor(fmodel, n, ranges) for n in ranges}
    graph_inputs = {i.name for i in fmodel.graph.input}
    outs = {o.name for o in fmodel.graph.output}
    probe_names = sorted({m for m in measured.values() if m not in graph_inputs})
    for name in probe_names:
        if name not in outs:
            fmodel.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    probe = _session(fmodel.SerializeToString())
    int8, ref = _session(v.path), _session(parent.path)

    calib_part, base_part, fld_part = parts
    spec_cal = v.config.get("spec")
    spec_fld = spec_for_worker(v.input_spec, next(iter(fld_part.x.values())).dtype.name)
    layout = next(iter((spec_cal or spec_fld or {}).values()), {}).get("layout")
    args = (probe, probe_names, measured, ranges, int8, ref, layout)
    s_cal = _scan(calibration_batches(parent.path, calib_part, spec_cal, calib_part.n), *args)
    s_base = (s_cal if base_part is calib_part else
              _scan(calibration_batches(parent.path, base_part, spec_cal, base_part.n), *args))
    s_fld = _scan(calibration_batches(parent.path, fld_part, spec_fld, fld_part.n), *args)
    return fmt, ranges, measured, [s_cal, s_base, s_fld]


# -- full-integer TFLite ---------------------------------------------------------------------------
#: ops that only move values: an output with its input's parameters adds nothing to measure
_TFL_MOVES = {"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS"}
_TFL_ACTIVATION_DTYPES = (np.int8, np.uint8, np.int16)
CHUNK_ROWS = 64


def _interpreter(path: str | Path, preserve: bool = False) -> Any:
    """A LiteRT interpreter; ``preserve``: every intermediate tensor kept readable after invoke,
    on the built-in kernels (the default XNNPACK delegate reuses its buffers)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    kw: dict[str, Any] = {}
    if preserve:
        kw = {"experimental_preserve_all_tensors": True, "experimental_op_resolver_type":
              OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    try:
        it = Interpreter(model_path=str(path), num_threads=1, **kw)
        it.allocate_tensors()
    except Exception as exc:  # LiteRT raises ValueError/RuntimeError with multi-line text
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"LiteRT cannot load {Path(path).name}: {first[:200]}")
    return it


def _node_label(op: str, name: str) -> str:
    """'CONV_2D model/tf.nn.convolution/convolution' from a fused TFLite tensor name (the
    converter joins the fused ops' names with ';', outermost first, constants last)."""
    parts = [p for p in name.split(";") if p and not p.startswith("Const")]
    return f"{op} {parts[-1] if parts else name}"


def tflite_ranges(qpath: str | Path, fpath: str | Path,
                  notes: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """(ranges, measured) of a full-integer TFLite model: its integer activation tensor name ->
    {scale, zero_point, qmin, qmax, lo, hi, node} from the tensor's quantization parameters, and
    -> the float tensor of the float32 TFLite model of the same converter run that holds the
    values it quantizes (the same name and shape; a QUANTIZE op's float input; a DEQUANTIZE
    consumer's float output)."""
    qi, fi = _interpreter(qpath), _interpreter(fpath)
    qt = {t["index"]: t for t in qi.get_tensor_details()}
    try:
        ops = qi._get_ops_details()  # LiteRT's Python API has no public op listing
    except Exception as exc:
        raise InputError(f"LiteRT {type(exc).__name__}: cannot list the operators of "
                         f"{Path(qpath).name}")
    producer = {o: op for op in ops for o in op["outputs"]}
    consumers: dict[int, list[dict[str, Any]]] = {}
    for op in ops:
        for i in op["inputs"]:
            consumers.setdefault(int(i), []).append(op)
    graph_in = {d["index"] for d in qi.get_input_details()}
    floats: dict[str, dict[str, Any]] = {}
    for t in fi.get_tensor_details():
        if t["name"] and np.issubdtype(t["dtype"], np.floating):
            floats.setdefault(t["name"], t)

    def params(t: dict[str, Any]) -> tuple[float, int] | None:
        q = t.get("quantization_parameters") or {}
        s, z = np.asarray(q.get("scales", [])), np.asarray(q.get("zero_points", []))
        if s.size != 1 or not s[0] > 0:
            return None  # per-channel (weights) or not quantized
        return float(s[0]), int(z[0]) if z.size else 0

    ranges: dict[str, dict[str, Any]] = {}
    measured: dict[str, str] = {}
    moved, missing = 0, []
    for idx, t in sorted(qt.items()):
        if t["dtype"] not in _TFL_ACTIVATION_DTYPES or not t["name"] or t["name"] in ranges:
            continue
        p = params(t)
        if p is None or not (idx in graph_in or idx in producer):
            continue  # a constant, or no calibrated range
        prod = producer.get(idx)
        op = prod["op_name"] if prod else "graph input"
        if prod and op in _TFL_MOVES and params(qt[int(prod["inputs"][0])]) == p:
            moved += 1
            continue
        cands = [t["name"]]
        if prod and op == "QUANTIZE":
            cands.insert(0, qt[int(prod["inputs"][0])]["name"])
        cons = consumers.get(idx, [])
        if cons and all(c["op_name"] == "DEQUANTIZE" for c in cons):
            cands.append(qt[int(cons[0]["outputs"][0])]["name"])
        shape = list(t["shape"][1:])
        fname = next((c for c in cands if c in floats
                      and list(floats[c]["shape"][1:]) == shape), None)
        if fname is None:
            missing.append(t["name"])
            continue
        scale, zp = p
        info = np.iinfo(t["dtype"])
        ranges[t["name"]] = {"scale": scale, "zero_point": zp, "qmin": int(info.min),
                             "qmax": int(info.max), "lo": (int(info.min) - zp) * scale,
                             "hi": (int(info.max) - zp) * scale,
                             "node": ("graph input" if idx in graph_in
                                      else _node_label(op, t["name"]))}
        measured[t["name"]] = fname
    if moved:
        notes.append(f"{moved} tensor(s) produced by {'/'.join(sorted(_TFL_MOVES))} with their "
                     "input's scale and zero point hold the same values and are not counted twice")
    if missing:
        notes.append(f"{len(missing)} quantized tensor(s) have no counterpart of the same name and "
                     f"shape in the float32 TFLite model and are not measured (e.g. {missing[0]})")
    return ranges, measured


def _float_tflite(v: Any, cache: Any) -> Path:
    """The float32 TFLite model of the converter run the variant came from: the graph the
    converter quantized (the run's own file, else an fp32 sibling variant of the same run)."""
    key = v.extra.get("converter_run") or ""
    own = cache.root / "data" / key / "model_float32.tflite"
    if key and own.is_file():
        return own
    for s in cache.all():
        if (key and s.format == "tflite" and s.parent == v.parent
                and (s.config or {}).get("precision") == "fp32"
                and s.extra.get("converter_run") == key and s.path.is_file()):
            return s.path
    raise InputError(f"{v.short_id} ({v.label}): the float32 TFLite model of its converter run "
                     f"{key[:12] or '?'} is no longer in the cache ({cache.root / 'data'}); drift "
                     "reads float activations from it: convert the parent to TFLite again in this "
                     "cache")


def _probe_run(it: Any, feeds: dict[str, np.ndarray],
               fetch: dict[str, int]) -> dict[str, np.ndarray]:
    """Run the float probe on a batch (resized to it; row by row if the model refuses) and read
    the ``fetch`` tensors (name -> index) that preserve_all_tensors kept."""
    n = len(next(iter(feeds.values())))
    ins = it.get_input_details()
    try:
        for d in ins:
            it.resize_tensor_input(d["index"], [n, *feeds[d["name"]].shape[1:]], strict=False)
        it.allocate_tensors()
        steps = [slice(0, n)]
    except Exception:
        for d in ins:
            it.resize_tensor_input(d["index"], [1, *feeds[d["name"]].shape[1:]], strict=False)
        it.allocate_tensors()
        steps = [slice(i, i + 1) for i in range(n)]
    got: dict[str, list[np.ndarray]] = {k: [] for k in fetch}
    for sl in steps:
        for d in ins:
            it.set_tensor(d["index"], np.ascontiguousarray(feeds[d["name"]][sl], dtype=np.float32))
        it.invoke()
        for k, idx in fetch.items():
            got[k].append(it.get_tensor(idx))
    return {k: np.concatenate(a) if len(a) > 1 else a[0] for k, a in got.items()}


def _int8_run(rt: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The first output of the integer model through the worker's own runtime (inputs quantized
    and outputs dequantized with the model's parameters, as on a target)."""
    n = len(next(iter(feeds.values())))
    if rt.resize({k: [n, *a.shape[1:]] for k, a in feeds.items()}):
        return np.asarray(rt.run(feeds)[0])
    rt.resize({k: [1, *a.shape[1:]] for k, a in feeds.items()})
    return np.concatenate([np.asarray(rt.run({k: a[i:i + 1] for k, a in feeds.items()})[0])
                           for i in range(n)])


def _tflite_scans(v: Any, parent: Any, cache: Any, parts: list[Dataset],
                  notes: list[str]) -> tuple[str, dict[str, Any], dict[str, str], list[_Scan]]:
    """Full-integer TFLite: ranges from the tensors' quantization parameters; values read on the
    float32 TFLite model of the same converter run through LiteRT with every tensor preserved,
    fed the rows the way the converter calibrated (NHWC float32 through the InputSpec); the
    integer model runs through the worker's runtime for top-1 agreement with the ONNX root."""
    from ..modelinfo import onnx_inputs
    from ..passes.quantize import calibration_batches
    from ..passes.tflite import calibration_arrays
    from ..targets.worker import LiteRtRuntime, WorkerFault
    from ..variants.family import spec_for_worker

    fpath = _float_tflite(v, cache)
    ranges, measured = tflite_ranges(v.path, fpath, notes)
    if not ranges:
        raise InputError(f"{v.short_id}: found no quantized activation tensor to measure")
    notes.append("activations read on the float32 TFLite model of the same converter run (the "
                 "graph the converter quantized); ranges from the integer model's tensor scales "
                 "and zero points")
    probe = _interpreter(fpath, preserve=True)
    index = {t["name"]: t["index"] for t in reversed(probe.get_tensor_details()) if t["name"]}
    fetch = {m: index[m] for m in set(measured.values())}
    try:
        int8 = LiteRtRuntime(str(v.path), 1)
    except WorkerFault as exc:
        raise InputError(f"{v.short_id}: {exc}")
    ref = _session(parent.path)
    inputs = onnx_inputs(parent.path)
    names = {d["name"] for d in int8.inputs}
    if names != {i["name"] for i in inputs}:
        raise InputError(f"{v.short_id}: the TFLite inputs ({', '.join(sorted(names))}) do not "
                         f"carry the ONNX input names ({', '.join(i['name'] for i in inputs)}); "
                         "convert again with this edgeprof")
    spec_cal = v.config.get("spec")
    dtype = next(iter(parts[2].x.values())).dtype.name
    specs = [(spec_cal, spec_cal), (spec_cal, spec_cal),
             (spec_for_worker(v.input_spec, dtype), spec_for_worker(parent.input_spec, dtype))]

    def scan(part: Dataset, spec_t: Any, spec_o: Any) -> _Scan:
        sc = _Scan(list(measured))
        q_top = []
        for s in range(0, part.n, CHUNK_ROWS):
            chunk = _subset(part, s, s + CHUNK_ROWS)
            feeds = calibration_arrays(inputs, chunk, chunk.n, spec_t)
            try:
                values = _probe_run(probe, feeds, fetch)
                q_top.append(_int8_run(int8, feeds))
            except (RuntimeError, ValueError) as exc:  # LiteRT's errors are multi-line
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise InputError(f"{v.short_id}: LiteRT failed on rows of {part.path.name}: "
                                 f"{first[:200]}")
            _count(sc, values, measured, ranges)
            x = feeds[inputs[0]["name"]]
            _moments(sc, x, "NHWC" if x.ndim == 4 else None)
        qo = np.concatenate(q_top)
        if qo.ndim == 2 and qo.shape[1] > 1:
            fo = np.concatenate([np.asarray(ref.run(None, b)[0]) for b in
                                 calibration_batches(parent.path, part, spec_o, part.n)])
            sc.q_top.append(qo.argmax(axis=1))
            sc.f_top.append(fo[: part.n].argmax(axis=1))
        return sc

    calib_part, base_part, fld_part = parts
    s_cal = scan(calib_part, *specs[0])
    s_base = s_cal if base_part is calib_part else scan(base_part, *specs[1])
    s_fld = scan(fld_part, *specs[2])
    precision = v.config.get("precision")
    return (f"tflite {'int8' if precision == 'int8-static' else precision}", ranges, measured,
            [s_cal, s_base, s_fld])


def drift(variant: str | Path, calib: str | Path, field: str | Path,
          cache_dir: str | Path | None = None, rows: int = 500) -> DriftResult:
    """Clipped shares, input drift and output agreement of a static int8 variant on field rows
    against its calibration data (see the module's doc)."""
    from ..variants.cache import Cache
    from ..variants.family import open_variant

    if not 10 <= rows <= 100_000:
        raise InputError(f"--rows {rows} is out of range (10 to 100000)")
    cache = Cache(cache_dir)
    v, root = open_variant(cache, str(variant))
    _check_variant(v)
    cfg = v.config
    cal_ds, fld_ds = load_npz(calib), load_npz(field)
    want = cfg.get("calib_sha256", "")
    if cal_ds.sha256 != want:
        raise InputError(f"--calib {Path(calib).name} is not the calibration data of {v.short_id} "
                         f"(sha256 {cal_ds.sha256[:12]}, the variant was calibrated on "
                         f"{want[:12]}): pass the file it was quantized with")
    calib_rows = int(cfg.get("calib_rows") or 0)
    if not 0 < calib_rows <= cal_ds.n:
        raise InputError(f"--calib {Path(calib).name} has {cal_ds.n} rows; {v.short_id} was "
                         f"calibrated on {calib_rows}")
    overlap = row_hashes(cal_ds) & row_hashes(fld_ds)
    if overlap:
        raise InputError(f"{len(overlap)} rows of --field {Path(field).name} also appear in "
                         f"--calib {Path(calib).name}: field rows must be new to compare them "
                         "with the calibration data")
    parent = cache.checked(cache.get(v.parent) or root)
    notes: list[str] = []
    held = cal_ds.n - calib_rows
    n_cal = min(rows, calib_rows)
    calib_part = _subset(cal_ds, 0, n_cal)
    if held >= MIN_HELDOUT_ROWS:
        n_base = min(rows, held)
        base_part = _subset(cal_ds, calib_rows, calib_rows + n_base)
        baseline = {"role": "held-out calibration rows", "rows": [calib_rows, calib_rows + n_base],
                    "n": n_base}
    else:
        base_part = calib_part
        baseline = {"role": "calibration rows (the file has no held-out rows)", "rows": [0, n_cal],
                    "n": n_cal}
        notes.append(f"{Path(calib).name} holds {held} row(s) beyond the {calib_rows} used for "
                     "calibration: the baseline is the calibration rows themselves, which clip "
                     "less than fresh rows would")
    n_fld = min(rows, fld_ds.n)
    fld_part = _subset(fld_ds, 0, n_fld)
    scans = _tflite_scans if v.format == "tflite" else _onnx_scans
    fmt, ranges, measured, (s_cal, s_base, s_fld) = scans(
        v, parent, cache, [calib_part, base_part, fld_part], notes)

    from scipy import stats
    tensors = []
    for q in ranges:
        r = ranges[q]
        tot = max(1, s_fld.total[q])
        kf, kb = s_fld.rows_hit[q], s_base.rows_hit[q]
        p_rows = float(stats.fisher_exact([[kf, s_fld.rows - kf], [kb, s_base.rows - kb]],
                                          alternative="greater")[1])
        tensors.append(TensorClip(
            tensor=measured[q], node=r["node"], lo=r["lo"], hi=r["hi"],
            calib_share=s_cal.share(q), baseline_share=s_base.share(q),
            field_share=s_fld.share(q), field_low_share=s_fld.low[q] / tot,
            field_high_share=s_fld.high[q] / tot,
            calib_rows_share=s_cal.rows_hit[q] / max(1, s_cal.rows),
            baseline_rows_share=kb / max(1, s_base.rows), field_rows_share=kf / max(1, s_fld.rows),
            rows_p=p_rows, field_min=s_fld.vmin[q],
            field_max=s_fld.vmax[q], baseline_max=s_base.vmax[q]))
    tensors.sort(key=lambda t: (-t.field_share, t.tensor))
    overall = {"calib": s_cal.pooled(), "baseline": s_base.pooled(), "field": s_fld.pooled()}
    agreement = _agreement(s_base, s_fld)
    inp = _input_drift(s_base, s_fld)
    findings = _findings(tensors, agreement, inp, baseline["role"],
                         TRY_RECALIBRATE_TFLITE if v.format == "tflite" else TRY_RECALIBRATE)
    return DriftResult(
        variant_id=v.id, label=v.label, format=fmt, reference_id=parent.id,
        calib={"path": str(cal_ds.path), "sha256": cal_ds.sha256, "calib_rows": calib_rows,
               "rows_read": n_cal},
        baseline=baseline,
        field={"path": str(fld_ds.path), "sha256": fld_ds.sha256, "n": n_fld},
        thresholds=dict(THRESHOLDS), overall=overall, tensors=tensors, input_drift=inp,
        agreement=agreement, findings=findings, notes=notes)


def _pct(x: float) -> str:
    return f"{x * 100:.2g} %" if 0 < x < 0.001 else f"{x * 100:.1f} %"


def _findings(tensors: list[TensorClip], agreement: dict[str, Any], inp: dict[str, Any],
              base_role: str, recalibrate: str = TRY_RECALIBRATE) -> list[DriftFinding]:
    t = THRESHOLDS
    out: list[DriftFinding] = []
    base = base_role.split(" (")[0]
    rule = (f"flagged when at least {_pct(t['clip_rows_min'])} of field rows clip, "
            f"{t['clip_ratio']:g} x the share of {base}, Fisher p < {t['clip_p']:g}")
    for c in tensors:  # already ranked by field clipped share
        if (c.field_rows_share >= t["clip_rows_min"]
                and c.field_rows_share >= t["clip_ratio"] * c.baseline_rows_share
                and c.rows_p < t["clip_p"]):
            side = ("above" if c.field_high_share >= c.field_low_share else "below")
            edge = c.hi if side == "above" else c.lo
            out.append(DriftFinding(
                "clipping", c.tensor, c.node, c.field_share, c.baseline_share,
                f"{_pct(c.field_share)} of activations of node {c.node} ({c.tensor}) clipped on "
                f"field data ({_pct(c.baseline_share)} on {base}), in {_pct(c.field_rows_share)} "
                f"of field rows ({_pct(c.baseline_rows_share)} of {base}, Fisher p = "
                f"{c.rows_p:.2g}); mostly {side} its int8 range edge {edge:.4g} (field "
                f"{'max' if side == 'above' else 'min'} "
                f"{c.field_max if side == 'above' else c.field_min:.4g}); {rule}",
                recalibrate))
    if agreement.get("metric"):
        b, f = agreement["baseline"]["agree"], agreement["field"]["agree"]
        lo = agreement["drop_ci"][0]
        if agreement["drop"] > t["agreement_margin"] and lo > 0:
            out.append(DriftFinding(
                "agreement_drop", None, None, f, b,
                f"int8 top-1 agreement with fp32 falls to {_pct(f)} on field rows from {_pct(b)} "
                f"on {base} (drop 95 % CI {_pct(lo)} to "
                f"{_pct(agreement['drop_ci'][1])}; flagged above {_pct(t['agreement_margin'])} "
                "with a CI that excludes zero)",
                recalibrate + "; check accuracy on labelled field rows (edgeprof profile "
                "--data)"))
    if inp["p_corrected"] < t["input_p"]:
        ch = max(inp["channels"], key=lambda c: abs(c["mean_shift_sd"]))
        test = min(inp["tests"], key=lambda x: x["p"])
        out.append(DriftFinding(
            "input_drift", None, None, inp["p_corrected"], t["input_p"],
            f"field inputs differ from the calibration data: KS test on per-row "
            f"{test['statistic'].split('_')[1]} p = {inp['p_corrected']:.2g} (Bonferroni over "
            f"2, flagged below {t['input_p']:g}); channel {ch['channel']} mean shifted by "
            f"{ch['mean_shift_sd']:+.2f} sd, std x {ch['std_ratio'] or float('nan'):.2f}",
            "collect calibration rows from the field (new camera, lighting, microphone) and "
            "quantize again; check accuracy on labelled field rows"))
    return out
