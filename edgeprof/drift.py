"""Drift: is the field data still the data a static int8 model was calibrated on?

A static int8 model bakes in activation ranges from its calibration set; field values outside a
tensor's range saturate (are clipped) and only the quantized model loses accuracy. For every
quantized activation tensor of an ONNX int8-static variant (QDQ: the inputs of QuantizeLinear;
QOperator: the outputs of QuantizeLinear and the QLinear* ops) the representable float range is
``[(qmin - zp) * scale, (qmax - zp) * scale]``; the pre-processed fp32 graph that quantization
actually quantized (kept in the variant folder as ``preprocessed.onnx``) is run with those tensors
added as outputs, on calibration rows and on field rows, and the values that fall more than half a
quantization step outside the range are counted (half a step: what rounding alone would cost).

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

from .data import Dataset, load_npz, row_hashes
from .errors import InputError

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
TRY_RECALIBRATE = ("recalibrate with field rows (edgeprof quantize --calib FIELD_TRAIN.npz, rows "
                   "disjoint from your evaluation data) or use --calib-method percentile")
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
    format: str                         # qdq | qoperator
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


def _scan(feeds: list[dict[str, np.ndarray]], probe: Any, probe_names: list[str],
          measured: dict[str, str], ranges: dict[str, Any], int8: Any, ref: Any,
          layout: str | None) -> _Scan:
    sc = _Scan(list(measured))
    first = next(iter(feeds[0])) if feeds else None
    for batch in feeds:
        values = dict(zip(probe_names, probe.run(probe_names, batch))) if probe_names else {}
        values.update({k: v for k, v in batch.items()})
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
        x = np.asarray(batch[first], dtype=np.float64)
        cv = _channel_view(x, layout)
        sc.ch_sum = cv.sum(axis=1) if sc.ch_sum is None else sc.ch_sum + cv.sum(axis=1)
        sq = (cv * cv).sum(axis=1)
        sc.ch_sq = sq if sc.ch_sq is None else sc.ch_sq + sq
        sc.ch_n += cv.shape[1]
        flat = x.reshape(len(x), -1)
        sc.row_mean.append(flat.mean(axis=1))
        sc.row_std.append(flat.std(axis=1))
        qo = np.asarray(int8.run(None, batch)[0])
        fo = np.asarray(ref.run(None, batch)[0])
        if qo.ndim == 2 and qo.shape[1] > 1:
            sc.q_top.append(qo.argmax(axis=1))
            sc.f_top.append(fo.argmax(axis=1))
        sc.rows += len(x)
    return sc


# -- statistics ------------------------------------------------------------------------------------
def _newcombe(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """95 % CI of p1 - p2 for two independent proportions (Newcombe's hybrid score, method 10)."""
    from .measure.accuracy import wilson_interval
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1)
    l2, u2 = wilson_interval(k2, n2)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def _agreement(base: _Scan, fld: _Scan) -> dict[str, Any]:
    from .measure.accuracy import wilson_interval
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
        raise InputError(f"{name} is a TFLite model: drift reads ONNX int8-static variants; "
                         "full-int8 TFLite is not yet supported")
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
        from onnxruntime.quantization.shape_inference import quant_pre_process
        quant_pre_process(str(parent.path), str(out), skip_symbolic_shape=False)
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


def drift(variant: str | Path, calib: str | Path, field: str | Path,
          cache_dir: str | Path | None = None, rows: int = 500) -> DriftResult:
    """Clipped shares, input drift and output agreement of a static int8 variant on field rows
    against its calibration data (see the module's doc)."""
    import onnx
    from onnx import TensorProto, helper

    from .passes.quantize import calibration_batches
    from .variants.cache import Cache
    from .variants.family import open_variant, spec_for_worker

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

    spec_cal = cfg.get("spec")
    spec_fld = spec_for_worker(v.input_spec, next(iter(fld_ds.x.values())).dtype.name)
    layout = next(iter((spec_cal or spec_fld or {}).values()), {}).get("layout")
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
    args = (probe, probe_names, measured, ranges, int8, ref, layout)
    s_cal = _scan(calibration_batches(parent.path, calib_part, spec_cal, n_cal), *args)
    s_base = (s_cal if base_part is calib_part else
              _scan(calibration_batches(parent.path, base_part, spec_cal, baseline["n"]), *args))
    s_fld = _scan(calibration_batches(parent.path, fld_ds, spec_fld, n_fld), *args)

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
    findings = _findings(tensors, agreement, inp, baseline["role"])
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
              base_role: str) -> list[DriftFinding]:
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
                TRY_RECALIBRATE))
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
                TRY_RECALIBRATE + "; check accuracy on labelled field rows (edgeprof profile "
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
