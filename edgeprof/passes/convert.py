"""Conversion passes: PyTorch -> ONNX (:mod:`.torch_load`) and ONNX -> TFLite through onnx2tf in
its managed environment (:mod:`.tflite`); here, the parity bars every conversion is held to."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data import Dataset
from .tflite import (PASS_NAME, PRECISIONS, ConverterRun, TflitePass, channels_first,
                     parse_precisions)
from .torch_load import export_onnx, export_with_parity, load_torch_model, parse_shape

__all__ = ["PASS_NAME", "PRECISIONS", "ConverterRun", "TflitePass", "TOLERANCES",
           "check_tolerance", "synthetic_dataset", "parse_precisions", "load_torch_model",
           "export_onnx", "export_with_parity", "parse_shape"]

#: parity bars against the ONNX parent (issue 6): relative max error, or top-1 agreement
TOLERANCES = {"fp32": ("relative_max_error", 1e-4), "fp16": ("relative_max_error", 1e-2),
              "int8-dynamic": ("top1_agreement", 0.97), "int8-static": ("top1_agreement", 0.97),
              "int16x8": ("top1_agreement", 0.97)}
MIN_AGREEMENT_ROWS = 500


# -- parity ---------------------------------------------------------------------------------------

def check_tolerance(precision: str, fidelity: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The issue's parity bar for ``precision`` against the ONNX parent: (verdict, warning)."""
    metric, limit = TOLERANCES[precision]
    per_output = fidelity.get("vs_parent") or {}
    rows = int(fidelity.get("rows", 0))
    role = fidelity.get("data_role", "data")
    verdict: dict[str, Any] = {"metric": metric, "limit": limit, "rows": rows, "values": {}}
    problems: list[str] = []
    for name, m in per_output.items():
        value = m.get(metric)
        used = metric
        if value is None and metric == "top1_agreement":
            used, value = "cosine_mean", m.get("cosine_mean")  # not a classifier output
            verdict["fallback"] = "cosine_mean >= 0.99 (the output has no top-1)"
        if value is None and metric == "relative_max_error":
            value = 0.0 if m.get("max_abs_error") == 0 else None
        verdict["values"][name] = value
        if value is None:
            problems.append(f"{name}: {metric} unavailable")
        elif used == "relative_max_error" and value > limit:
            problems.append(f"{name}: max abs error is {value:.2e} of the output range "
                            f"(limit {limit:g})")
        elif used == "top1_agreement" and value < limit:
            problems.append(f"{name}: top-1 agreement {value:.2%} (limit {limit:.0%})")
        elif used == "cosine_mean" and value < 0.99:
            problems.append(f"{name}: cosine {value:.4f} (limit 0.99)")
    if problems:
        verdict["status"] = "failed"
        return verdict, (f"{precision} misses its parity tolerance against the ONNX parent on "
                         f"{rows} {role} rows: " + "; ".join(problems))
    if metric == "top1_agreement" and (rows < MIN_AGREEMENT_ROWS or role == "synthetic"):
        verdict["status"] = "unverified"
        why = "random inputs" if role == "synthetic" else f"only {rows} rows"
        return verdict, (f"{precision} parity unverified: the top-1 bar needs >= "
                         f"{MIN_AGREEMENT_ROWS} real samples and had {why}; give --data "
                         "(evaluation split)")
    verdict["status"] = "passed"
    return verdict, None


def synthetic_dataset(path: Path, inputs: list[dict[str, Any]], parent_spec: dict[str, Any] | None,
                      rows: int = 64) -> Dataset:
    """Raw stand-in data for the parity check when neither --data nor --calib is given: uint8
    images for image inputs (so the InputSpec applies as it would to real data), else floats."""
    from ..data import file_sha256
    rng = np.random.default_rng(0)
    arrays = {}
    for inp in inputs:
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp["shape"][1:]]
        if len(inp["shape"]) == 4:
            c, h, w = shape if channels_first(inp["shape"], parent_spec) else \
                (shape[2], shape[0], shape[1])
            arrays[inp["name"]] = rng.integers(0, 256, (rows, h, w, c), dtype=np.uint8)
        else:
            arrays[inp["name"]] = rng.standard_normal((rows, *shape)).astype(np.float32)
    if len(arrays) == 1:
        arrays = {"x": next(iter(arrays.values()))}
    np.savez(path, **arrays)
    return Dataset(path=path, x=arrays, sha256=file_sha256(path))
