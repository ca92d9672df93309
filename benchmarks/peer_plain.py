"""The peer job as a plain onnxruntime script (what an Olive user's workflow boils down to, with no
peer tool installed): static int8 with per-channel and per-tensor x MinMax and Percentile
calibration (quantize_static four times, each calibrating again), then latency at batch 1 / 1
thread (a simple timed loop), top-1 accuracy on the test data and file size, for fp32 and the four
candidates.

    python -m benchmarks.peer_plain MODEL.onnx CALIB.npz EVAL.npz [--scale S --mean M --std D]

Raw rows (uint8 NHWC images) become model input as ``(x * scale - mean) / std`` in NCHW, the
demo's InputSpec. Settings follow edgeprof's defaults so that both do the same work: 200
calibration rows in batches of 16 (equal batches for percentile), S8S8 QDQ, the model
pre-processed once (onnxruntime's quant_pre_process).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

#: the four candidates of the peer job: (name, per_channel, calibration method)
CANDIDATES = (("int8 per-channel minmax", True, "MinMax"),
              ("int8 per-tensor minmax", False, "MinMax"),
              ("int8 per-channel percentile", True, "Percentile"),
              ("int8 per-tensor percentile", False, "Percentile"))
CALIB_ROWS = 200
WARMUP_RUNS = 20
TIMED_RUNS = 1000


def to_input(x: np.ndarray, scale: float, mean: float, std: float) -> np.ndarray:
    x = x.astype(np.float32) * np.float32(scale)
    x = (x - np.float32(mean)) / np.float32(std)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x


class Reader:
    """A CalibrationDataReader over batches of rows."""

    def __init__(self, name: str, x: np.ndarray, batch: int):
        self.batches = [{name: x[i:i + batch]} for i in range(0, len(x), batch)]
        self.it = iter(self.batches)

    def get_next(self):
        return next(self.it, None)


def session(path: Path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def latency_p50_s(path: Path, x1: np.ndarray) -> float:
    s = session(path)
    name = s.get_inputs()[0].name
    for _ in range(WARMUP_RUNS):
        s.run(None, {name: x1})
    times = np.empty(TIMED_RUNS)
    for i in range(TIMED_RUNS):
        t0 = time.perf_counter()
        s.run(None, {name: x1})
        times[i] = time.perf_counter() - t0
    return float(np.median(times))


def accuracy(path: Path, x: np.ndarray, y: np.ndarray, batch: int = 250) -> float:
    s = session(path)
    name = s.get_inputs()[0].name
    pred = np.concatenate([s.run(None, {name: x[i:i + batch]})[0].argmax(1)
                           for i in range(0, len(x), batch)])
    return float((pred == y).mean())


def run(model: Path, calib: Path, evaluation: Path, work: Path, scale: float = 1 / 255,
        mean: float = 0.0, std: float = 1.0, rows: int = CALIB_ROWS,
        quiet: bool = False) -> list[dict]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with np.load(calib) as c, np.load(evaluation) as e:
        xc = to_input(c["x"][:rows], scale, mean, std)
        xe, ye = to_input(e["x"], scale, mean, std), e["y"]
    name = session(model).get_inputs()[0].name
    pre = work / "pre.onnx"
    quant_pre_process(str(model), str(pre), skip_symbolic_shape=False)
    models = [("fp32", model)]
    for label, per_channel, method in CANDIDATES:
        out = work / (label.replace(" ", "_") + ".onnx")
        m = getattr(CalibrationMethod, method)
        # percentile stacks the outputs of all batches: equal batches (as edgeprof does)
        batch = 16 if m == CalibrationMethod.MinMax else \
            max(d for d in range(1, 17) if len(xc) % d == 0)
        quantize_static(str(pre), str(out), Reader(name, xc, batch), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=m,
                        calibration_providers=["CPUExecutionProvider"])
        models.append((label, out))
    rows = []
    for label, path in models:
        rows.append({"model": label, "p50_s": latency_p50_s(path, xe[:1]),
                     "accuracy": accuracy(path, xe, ye), "bytes": os.path.getsize(path)})
        if not quiet:
            r = rows[-1]
            print(f"  {label:<30} p50 {r['p50_s'] * 1e6:8.1f} us  top-1 {r['accuracy']:.4f}  "
                  f"{r['bytes'] / 1024:7.0f} KiB")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("calib", type=Path)
    ap.add_argument("eval", type=Path)
    ap.add_argument("--scale", type=float, default=1 / 255)
    ap.add_argument("--mean", type=float, default=0.0)
    ap.add_argument("--std", type=float, default=1.0)
    ap.add_argument("--calib-rows", type=int, default=CALIB_ROWS)
    a = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        run(a.model, a.calib, a.eval, Path(d), a.scale, a.mean, a.std, a.calib_rows)
    print(f"wall time {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
