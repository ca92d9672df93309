"""Per-layer quantization sensitivity: quantize ONE layer at a time (all others stay float) and
measure how far the model output moves from fp32. The error each layer adds on its own tells a
user which layers to keep in float (``--exclude-nodes``) when int8 lost accuracy."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..measure.fidelity import output_metrics
from .quantize import _Reader

QUANTIZABLE = ("Conv", "Gemm", "MatMul", "ConvTranspose")


def _run(path: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, f)[0] for f in feeds])


def layer_sensitivity(model_path: Path, calib_feeds: list[dict[str, np.ndarray]],
                      eval_feeds: list[dict[str, np.ndarray]], per_channel: bool = True,
                      quant_format: str = "qdq", calib_method: str = "minmax",
                      progress: Callable[[str, float], None] | None = None) -> list[dict[str, Any]]:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    progress = progress or (lambda d, f: None)
    with tempfile.TemporaryDirectory(prefix="edgeprof-sens-") as tmp:
        work = Path(tmp) / "named.onnx"
        m = onnx.load(str(model_path))
        for i, n in enumerate(m.graph.node):  # the quantizer selects nodes by name
            if not n.name:
                n.name = f"{n.op_type}_{i}"
        onnx.save(m, str(work))
        try:
            from .quantize import pre_process  # (without the torch import)
            pre = Path(tmp) / "pre.onnx"
            pre_process(work, pre)
        except Exception:
            pre = work
        nodes = [(n.name, n.op_type) for n in onnx.load(str(pre)).graph.node
                 if n.op_type in QUANTIZABLE]
        ref = _run(pre, eval_feeds)
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[calib_method]
        rows = []
        for i, (name, op) in enumerate(nodes):
            progress(f"sensitivity {name}", i / max(1, len(nodes)))
            out = Path(tmp) / f"q{i}.onnx"
            quantize_static(str(pre), str(out), _Reader(calib_feeds),
                            quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
                            per_channel=per_channel, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8, nodes_to_quantize=[name],
                            calibrate_method=method, calibration_providers=["CPUExecutionProvider"])
            met = output_metrics(ref, _run(out, eval_feeds))
            rows.append({"node": name, "op": op, **{k: met.get(k) for k in
                         ("sqnr_db", "top1_agreement", "max_abs_error", "cosine_mean")}})
    # worst first: lowest SQNR (an exact layer has no noise at all and goes last)
    rows.sort(key=lambda r: float("inf") if r["sqnr_db"] is None else r["sqnr_db"])
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    return rows
