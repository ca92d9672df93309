"""Tiny real ONNX models built with onnx.helper, for tests and benchmarks (no fixtures needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def mlp(path: Path, dim: int = 64, layers: int = 2, batch: int | str = "N", seed: int = 0) -> Path:
    """x[batch, dim] -> (MatMul + Relu) * layers -> y[batch, dim]."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((dim, dim)) / np.sqrt(dim)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        out = "y" if i == layers - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"m{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, dim])], inits)
    return _save(helper.make_model(graph, opset_imports=OPSET), path)


def tiny_cnn(path: Path, channels: int = 1, size: int = 8, classes: int = 3,
             batch: int | str = "N", seed: int = 0) -> Path:
    """NCHW image classifier: Conv3x3 -> Relu -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, channels, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    fw = rng.standard_normal((classes, 4)).astype(np.float32)
    fb = rng.standard_normal(classes).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (fw, "fw"), (fb, "fb"))]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])], inits)
    return _save(helper.make_model(graph, opset_imports=OPSET), path)


def dynamic_dims(path: Path) -> Path:
    """x[N, L] -> Relu: the length L cannot be guessed."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "L"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "L"])])
    return _save(helper.make_model(graph, opset_imports=OPSET), path)


def unsupported_op(path: Path) -> Path:
    """A node in a custom domain that no runtime implements."""
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example.edgeprof")], "unsup",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=OPSET + [helper.make_opsetid("com.example.edgeprof", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))  # the checker would reject the unknown op: that is the point
    return Path(path)


def two_inputs(path: Path) -> Path:
    """a[N,4] + b[N,4] -> y: a model with several inputs (one npz key per input)."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])], "two",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    return _save(helper.make_model(graph, opset_imports=OPSET), path)


def mobilenet_like(path: Path, size: int = 32, classes: int = 10, seed: int = 0,
                   damage: str | None = None) -> Path:
    """A MobileNet-style net: stem conv, two depthwise-separable blocks with ReLU6 (Clip),
    global average pool, classifier. ``damage`` names one Conv whose weights get a single huge
    outlier, which wrecks its per-tensor int8 quantization (the sensitivity test's culprit)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def conv(name, x, cin, cout, k, stride=1, group=1):
        w = rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / (cin // group * k * k))
        if damage == name:
            w.flat[0] = 200.0 * np.abs(w).max()
        b = rng.standard_normal(cout) * 0.05
        pad = k // 2
        nodes.append(helper.make_node("Conv", [x, const(name + "_w", w), const(name + "_b", b)],
                                      [name], name=name, strides=[stride, stride], group=group,
                                      pads=[pad] * 4))
        out = name + "_relu6"
        nodes.append(helper.make_node("Clip", [name, const(name + "_lo", np.array(0.0)),
                                               const(name + "_hi", np.array(6.0))], [out],
                                      name=name + "_clip"))
        return out

    x = conv("stem", "input", 3, 8, 3, stride=2)
    x = conv("dw1", x, 8, 8, 3, group=8)
    x = conv("pw1", x, 8, 16, 1)
    x = conv("dw2", x, 16, 16, 3, stride=2, group=16)
    x = conv("pw2", x, 16, 32, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"))
    fw = rng.standard_normal((classes, 32)) * 0.3
    nodes.append(helper.make_node("Gemm", ["flat", const("fc_w", fw), const("fc_b", np.zeros(classes))],
                                  ["logits"], name="fc", transB=1))
    graph = helper.make_graph(
        nodes, "mobilenet_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)
    return _save(helper.make_model(graph, opset_imports=OPSET), path)


def with_constant_nodes(path: Path, batch: int | str = "N", seed: int = 0) -> Path:
    """A CNN as torch.onnx.export writes it: the Flatten is a Reshape whose target shape comes
    from a ``Constant`` node, and the classifier's bias is a Constant too. onnxruntime folds
    Constant nodes into initializers on load, so its kernel registry has no Constant."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    fw = rng.standard_normal((4 * 8 * 8, 3)).astype(np.float32) * 0.05
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Constant", [], ["shape"], name="Constant_0",
                         value=numpy_helper.from_array(np.array([-1, 4 * 8 * 8], np.int64))),
        helper.make_node("Reshape", ["r", "shape"], ["f"], name="reshape"),
        helper.make_node("MatMul", ["f", "fw"], ["m"], name="fc"),
        helper.make_node("Constant", [], ["fb"], name="Constant_1",
                         value=numpy_helper.from_array(rng.standard_normal(3).astype(np.float32))),
        helper.make_node("Add", ["m", "fb"], ["logits"], name="bias"),
    ]
    graph = helper.make_graph(
        nodes, "with_constants",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fw, "fw")])
    return _save(helper.make_model(graph, opset_imports=OPSET), path)
