"""Unstructured magnitude pruning of an ONNX model: the smallest |w| of every Conv, Gemm and MatMul
weight initializer become zero (numpy on the initializers; biases untouched).

Selection is exact and deterministic: with n weights in scope and k = round(sparsity * n), the k
smallest |w| are zeroed; among weights equal to the k-th smallest, those first in flat order (scope
order: initializers in graph order, each C-contiguous) go first. ``scope="layer"`` does this per
tensor, ``scope="global"`` once over all of them.

Zeros cost the same as any other number in onnxruntime's dense kernels: the file is as large and as
slow as before; only its compressed size drops. The variant says so (``SPEED_NOTE``).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..variants.cache import Variant

PRUNABLE_OPS = ("Conv", "Gemm", "MatMul")
SCOPES = ("global", "layer")
SPEED_NOTE = (
    "unstructured sparsity does not make onnxruntime faster: its dense kernels multiply zeros "
    "like any other weight (90 % sparse measured the same speed as dense), and the file keeps its "
    "size; only the compressed (zlib) size drops. For speed remove whole channels: "
    "edgeprof prune --torch module:factory --channels 0.5")


def check_fraction(value: float, flag: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{flag} {value!r}: expected a fraction between 0 and 1") from None
    if not 0.0 < v < 1.0:
        raise InputError(f"{flag} {value}: must lie strictly between 0 and 1 "
                         "(the fraction to remove, e.g. 0.5)")
    return v


def prunable_weights(model) -> dict[str, dict[str, Any]]:
    """Float weight initializers of Conv/Gemm/MatMul (not biases), in graph order:
    name -> {"op", "nodes"}."""
    from onnx import TensorProto

    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    inits = {i.name: i for i in model.graph.initializer}
    out: dict[str, dict[str, Any]] = {}
    for node in model.graph.node:
        if node.op_type not in PRUNABLE_OPS:
            continue
        # Conv/Gemm: X, W, [B]; MatMul: A, B. Index 2 (a bias) is never pruned.
        for name in node.input[:2]:
            init = inits.get(name)
            if init is None or init.data_type not in floats or len(init.dims) < 2:
                continue
            entry = out.setdefault(name, {"op": node.op_type, "nodes": []})
            entry["nodes"].append(node.name or node.op_type)
    return out


def magnitude_mask(abs_values: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask (True = prune) of exactly ``k`` smallest entries of a flat array; ties at the
    threshold are broken by position (first ones first)."""
    n = abs_values.size
    if k <= 0:
        return np.zeros(n, dtype=bool)
    if k >= n:
        return np.ones(n, dtype=bool)
    threshold = np.partition(abs_values, k - 1)[k - 1]
    mask = abs_values < threshold
    ties = np.flatnonzero(abs_values == threshold)
    mask[ties[: k - int(mask.sum())]] = True
    return mask


def prune_arrays(arrays: dict[str, np.ndarray], sparsity: float, scope: str) -> dict[str, np.ndarray]:
    """The pruned copies of ``arrays`` (insertion order is the scope order)."""
    if scope == "layer":
        out = {}
        for name, a in arrays.items():
            flat = np.abs(a.astype(np.float64)).ravel()
            mask = magnitude_mask(flat, int(round(sparsity * flat.size)))
            out[name] = np.where(mask.reshape(a.shape), np.zeros((), a.dtype), a)
        return out
    flat = np.concatenate([np.abs(a.astype(np.float64)).ravel() for a in arrays.values()])
    mask = magnitude_mask(flat, int(round(sparsity * flat.size)))
    out, start = {}, 0
    for name, a in arrays.items():
        m = mask[start:start + a.size].reshape(a.shape)
        out[name] = np.where(m, np.zeros((), a.dtype), a)
        start += a.size
    return out


@dataclass
class PrunePass:
    sparsity: float
    scope: str = "global"
    name: str = "prune"
    out_format: str = "onnx"

    def __post_init__(self) -> None:
        self.sparsity = check_fraction(self.sparsity, "--sparsity")
        if self.scope not in SCOPES:
            raise InputError(f"--scope {self.scope!r} must be global or layer")

    def config(self) -> dict[str, Any]:
        return {"sparsity": self.sparsity, "scope": self.scope}

    def tool_versions(self) -> dict[str, str]:
        import onnx
        return {"onnx": onnx.__version__}

    def label(self) -> str:
        return f"sparsity {self.sparsity:.0%} {self.scope}"

    def run(self, parent: Variant, out_path: Path) -> dict[str, Any]:
        import onnx
        from onnx import numpy_helper

        if parent.format != "onnx":
            raise InputError(f"{parent.label}: prune takes an ONNX model")
        model = onnx.load(str(parent.path))
        targets = prunable_weights(model)
        if not targets:
            raise InputError(f"{parent.short_id} ({parent.label}) has no Conv/Gemm/MatMul weights "
                             "held as float initializers (a quantized model? prune its fp32 parent)")
        inits = {i.name: i for i in model.graph.initializer}
        arrays = {n: numpy_helper.to_array(inits[n]) for n in targets}
        pruned = prune_arrays(arrays, self.sparsity, self.scope)
        layers, zeros_total, n_total = [], 0, 0
        for name, a in pruned.items():
            inits[name].CopyFrom(numpy_helper.from_array(a, name))
            zeros = int(a.size - np.count_nonzero(a))
            zeros_total += zeros
            n_total += int(a.size)
            layers.append({"tensor": name, "op": targets[name]["op"], "nodes": targets[name]["nodes"],
                           "shape": list(a.shape), "params": int(a.size), "zeros": zeros,
                           "sparsity": zeros / a.size})
        onnx.save(model, str(out_path))
        data = out_path.read_bytes()
        parent_data = parent.path.read_bytes()
        notes = [SPEED_NOTE]
        dead = [x["tensor"] for x in layers if x["zeros"] == x["params"]]
        if dead:
            notes.append(f"global pruning zeroed every weight of {', '.join(dead[:5])}: "
                         "those layers now output only their bias; consider --scope layer")
        return {"notes": notes, "extra": {
            "sparsity_requested": self.sparsity,
            "sparsity_achieved": zeros_total / n_total,
            "pruned_params": n_total, "zero_params": zeros_total, "layers": layers,
            "model_bytes": len(data), "zlib_bytes": len(zlib.compress(data, 6)),
            "parent_model_bytes": len(parent_data),
            "parent_zlib_bytes": len(zlib.compress(parent_data, 6))}}
