"""Model insight: format, opset, inputs/outputs, operator counts, parameters, MACs, dtypes, and
whether the target's runtime supports every operator (caught before anything is uploaded)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .models import ModelRef

# ops whose multiply-accumulates we count; everything else is cheap next to them in CNNs/MLPs
_MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "ConvInteger", "MatMulInteger",
            "QLinearConv", "QLinearMatMul")


def _shape_of(vi) -> list[int | None]:
    dims = vi.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]


def _elem_type_name(t: int) -> str:
    import onnx
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t)).name
    except Exception:
        return str(t)


def _io(values, initializer_names: set[str]) -> list[dict[str, Any]]:
    out = []
    for v in values:
        if v.name in initializer_names:
            continue
        dims = []
        for d in v.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        out.append({"name": v.name, "shape": dims,
                    "dtype": _elem_type_name(v.type.tensor_type.elem_type)})
    return out


def _prod(xs: list[int | None]) -> int | None:
    if any(x is None for x in xs):
        return None
    return int(np.prod(xs, dtype=np.int64)) if xs else 1


def _node_macs(node, shapes: dict[str, list[int | None]]) -> int | None:
    op = node.op_type
    attrs = {a.name: a for a in node.attribute}
    out = shapes.get(node.output[0])
    if out is None:
        return None
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        w = shapes.get(node.input[3 if op == "QLinearConv" else 1])
        if not w or len(w) < 3:
            return None
        per_out = _prod(w[1:])  # Cin/group * kh * kw
        total = _prod(out)
        return None if per_out is None or total is None else per_out * total
    if op == "ConvTranspose":  # weight (Cin, Cout/group, kh, kw): every input value is spread
        x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
        n_in = _prod(x) if x else None
        k = _prod(w[1:]) if w else None
        return None if n_in is None or k is None else n_in * k
    if op in ("Gemm",):
        a = shapes.get(node.input[0])
        if not a or len(a) != 2:
            return None
        trans_a = attrs["transA"].i if "transA" in attrs else 0
        k = a[0] if trans_a else a[1]
        total = _prod(out)
        return None if k is None or total is None else k * total
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        a = shapes.get(node.input[0])
        if not a:
            return None
        k = a[-1]
        total = _prod(out)
        return None if k is None or total is None else k * total
    return 0


def onnx_inputs(path: str | Path) -> list[dict[str, Any]]:
    """The graph inputs that are not initializers: name, shape (None for dynamic), elem type."""
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    out = []
    for v in m.graph.input:
        if v.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None
                for d in v.type.tensor_type.shape.dim]
        out.append({"name": v.name, "shape": dims, "elem_type": v.type.tensor_type.elem_type})
    return out


def model_batch(path: str | Path) -> int | None:
    """The batch a model is built for: the first fixed leading dimension of an ONNX model's
    inputs, a TFLite model's input batch unless its signature leaves it open (-1); None when
    the batch is dynamic (or the file unreadable: the worker reports that)."""
    p = Path(path)
    try:
        if p.suffix == ".tflite":
            try:
                from ai_edge_litert.interpreter import Interpreter
            except ImportError:  # pragma: no cover
                from tflite_runtime.interpreter import Interpreter
            d = Interpreter(model_path=str(p)).get_input_details()[0]
            sig = list(d.get("shape_signature", d["shape"]))
            return None if not sig or sig[0] < 0 else int(d["shape"][0])
        for i in onnx_inputs(p):
            if i["shape"] and isinstance(i["shape"][0], int) and i["shape"][0] > 0:
                return int(i["shape"][0])
    except Exception:
        return None
    return None


def onnx_info(path: str, batch: int = 1) -> dict[str, Any]:
    import onnx
    from onnx import shape_inference

    model = onnx.load(path)
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    params = sum(int(np.prod(i.dims, dtype=np.int64)) for i in graph.initializer)
    dtypes: Counter = Counter()
    for i in graph.initializer:
        dtypes[_elem_type_name(i.data_type)] += int(np.prod(i.dims, dtype=np.int64))
    # shape inference with a concrete batch so MACs can be counted
    for v in graph.input:
        dims = v.type.tensor_type.shape.dim
        if v.name not in inits and dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    macs: int | None = 0
    unknown: list[str] = []
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        shapes = {v.name: _shape_of(v) for v in list(inferred.graph.value_info)
                  + list(inferred.graph.input) + list(inferred.graph.output)}
    except Exception:
        shapes = {}
    for i in graph.initializer:
        shapes[i.name] = list(i.dims)
    for node in graph.node:
        if node.op_type not in _MAC_OPS:
            continue
        m = _node_macs(node, shapes)
        if m is None:
            unknown.append(node.name or node.op_type)
        elif macs is not None:
            macs += m
    model_io = onnx.load(path)  # the inputs as declared (dynamic dims kept)
    return {
        "format": "onnx", "ir_version": model.ir_version, "opsets": opsets,
        "producer": f"{model.producer_name} {model.producer_version}".strip() or None,
        "inputs": _io(model_io.graph.input, inits), "outputs": _io(model_io.graph.output, set()),
        "nodes": len(graph.node),
        "op_counts": dict(Counter(n.op_type if not n.domain or n.domain == "ai.onnx"
                                  else f"{n.domain}:{n.op_type}" for n in graph.node).most_common()),
        "params": params, "weight_dtypes": dict(dtypes),
        "macs": None if unknown and macs == 0 else macs, "macs_batch": batch,
        "macs_unknown_nodes": unknown,
    }


#: operators onnxruntime turns into initializers while loading a model, so its kernel registry
#: has no entry for them (torch.onnx.export leaves Constant nodes in most models)
FOLDED_ON_LOAD = frozenset({"Constant"})


def onnx_support(path: str, kernels: list[list[Any]]) -> dict[str, Any]:
    """Which nodes have no CPU kernel (and no function body to expand) in the target's
    onnxruntime. ``kernels``: [domain, op, since_start, since_end] from the worker."""
    import onnx
    from onnx import defs

    model = onnx.load(path, load_external_data=False)
    opsets = {(o.domain or ""): o.version for o in model.opset_import}
    table: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for domain, op, lo, hi in kernels:
        table.setdefault((domain or "", op), []).append((lo, hi))
    missing = []
    for node in model.graph.node:
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        if domain == "" and node.op_type in FOLDED_ON_LOAD:
            continue
        version = opsets.get(domain)
        since = version
        try:
            schema = defs.get_schema(node.op_type, max_inclusive_version=version or 1,
                                     domain=domain)
            since = schema.since_version
            has_function = schema.has_function or getattr(schema, "has_context_dependent_function", False)
        except Exception:
            has_function = False
        ranges = table.get((domain, node.op_type), [])
        if since is not None and any(lo <= since <= hi for lo, hi in ranges):
            continue
        if has_function:
            continue
        missing.append({"node": node.name, "op": (f"{domain}:" if domain else "") + node.op_type,
                        "version": since})
    return {"supported": not missing, "missing": missing}


def tflite_info(path: str) -> dict[str, Any]:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover
        from tflite_runtime.interpreter import Interpreter
    interp = Interpreter(model_path=path)
    ops = [o["op_name"] for o in interp._get_ops_details()]
    details = interp.get_tensor_details()
    produced = {t for o in interp._get_ops_details() for t in o["outputs"]}
    inputs = {d["index"] for d in interp.get_input_details()}
    params, dtypes = 0, Counter()
    for d in details:
        if d["index"] in produced or d["index"] in inputs:
            continue
        n = int(np.prod(d["shape"], dtype=np.int64)) if len(d["shape"]) else 1
        params += n
        dtypes[np.dtype(d["dtype"]).name] += n

    def io(ds):
        return [{"name": d["name"], "shape": [int(s) if s >= 0 else None
                                              for s in d.get("shape_signature", d["shape"])],
                 "dtype": np.dtype(d["dtype"]).name,
                 "quant": (d["quantization"] if d["quantization"][0] else None)} for d in ds]
    return {"format": "tflite", "inputs": io(interp.get_input_details()),
            "outputs": io(interp.get_output_details()), "nodes": len(ops),
            "op_counts": dict(Counter(ops).most_common()), "params": params,
            "weight_dtypes": dict(dtypes), "macs": None, "macs_unknown_nodes": ["(TFLite)"]}


def model_info(ref: ModelRef, batch: int = 1) -> dict[str, Any]:
    info = onnx_info(str(ref.path), batch) if ref.format == "onnx" else tflite_info(str(ref.path))
    info.update(name=ref.name, variant_id=ref.id, sha256=ref.sha256, model_bytes=ref.model_bytes,
                zlib_bytes=ref.zlib_bytes)
    return info
