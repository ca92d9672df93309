"""PyTorch models given as ``--torch module:factory`` (+ ``--weights W.pt``, ``--example-shape``):
import the factory, load a state dict with ``weights_only=True``, check the example shape, export
to ONNX. Every failure the user can cause is a one-line ``InputError``. torch is imported only
inside functions, so importing this module costs nothing without the torch extra."""
from __future__ import annotations

import importlib
import io
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

TORCH_MISSING = ("PyTorch is not installed: pip install 'edgeprof[torch]' "
                 "(torch==2.13.0 on these machines: a plain `torch` pulls a multi-GB CUDA build)")
ONNX_OPSET = 17


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:240]


def require_torch():
    """The torch module, or a one-line message saying what to install."""
    try:
        import torch
    except ImportError:
        raise InputError(TORCH_MISSING) from None
    return torch


def require_torch_pruning():
    require_torch()
    try:
        import torch_pruning
    except ImportError:
        raise InputError("structured pruning needs torch-pruning: pip install 'edgeprof[torch]' "
                         "(or pip install torch-pruning==1.6.1 beside torch==2.13.0)") from None
    return torch_pruning


def parse_shape(text: str, flag: str = "--example-shape") -> tuple[int, ...]:
    """``1x1x28x28`` -> (1, 1, 28, 28): positive integers only."""
    parts = str(text).lower().replace(",", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise InputError(f"{flag} {text!r}: expected dimensions like 1x3x224x224") from None
    if not dims or any(d <= 0 for d in dims):
        raise InputError(f"{flag} {text!r}: every dimension must be a positive integer")
    return dims


def import_factory(spec: str):
    """``package.module:function`` -> the callable. The working directory is importable too, so
    ``--torch mymodel:build`` finds ./mymodel.py."""
    if ":" not in spec:
        raise InputError(f"--torch {spec!r}: expected module:factory, e.g. "
                         "edgeprof.demo.model:fashion_cnn")
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise InputError(f"--torch {spec!r}: expected module:factory")
    require_torch()
    added = os.getcwd() not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except Exception as exc:  # ImportError, or the module's own code failing
        raise InputError(f"--torch {spec}: cannot import module {mod_name!r} "
                         f"({type(exc).__name__}: {_first_line(exc)})") from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"--torch {spec}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"--torch {spec}: {attr!r} is not callable")
    return obj


def build_module(spec: str):
    """Call the factory; it must return a ``torch.nn.Module``."""
    torch = require_torch()
    factory = import_factory(spec)
    try:
        module = factory()
    except Exception as exc:
        raise InputError(f"--torch {spec}: the factory raised {type(exc).__name__}: "
                         f"{_first_line(exc)}") from None
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"--torch {spec}: the factory returned {type(module).__name__}, "
                         "not a torch.nn.Module")
    return module


def load_weights(module, weights: Path) -> None:
    """Load a state dict (``torch.load(..., weights_only=True)``: user files are never
    unpickled); a checkpoint ``{"state_dict": ...}`` is accepted too. Strict: every key and
    shape must fit the module."""
    torch = require_torch()
    p = Path(weights)
    if not p.is_file():
        raise InputError(f"--weights {p}: no such file")
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"--weights {p.name}: not a loadable state dict with weights_only=True "
                         f"({_first_line(exc)})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise InputError(f"--weights {p.name}: holds a {type(state).__name__}, not a state dict "
                         "(save model.state_dict())")
    try:
        result = module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:3]) if len(lines) > 1 else _first_line(exc)
        raise InputError(f"--weights {p.name} do not fit the module: {detail[:300]}") from None
    del result


def check_example(module, shape: tuple[int, ...], spec: str = "the model"):
    """Run the module (eval mode, no grad) on zeros of ``shape``; the outputs, or a one-line
    error when the model rejects that shape."""
    torch = require_torch()
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(*shape, dtype=torch.float32))
    except Exception as exc:
        raise InputError(f"--example-shape {'x'.join(map(str, shape))}: {spec} rejects it "
                         f"({type(exc).__name__}: {_first_line(exc)})") from None
    outs = out if isinstance(out, (tuple, list)) else (out,)
    if not outs or not all(isinstance(o, torch.Tensor) for o in outs):
        raise InputError(f"{spec} returns {type(out).__name__}; edgeprof needs a tensor or a "
                         "tuple of tensors")
    return outs


@dataclass
class TorchModel:
    """A loaded PyTorch model and where it came from (for lineage)."""
    module: Any
    factory: str
    example_shape: tuple[int, ...]
    weights_sha256: str | None
    output_shapes: list[list[int]]

    def source(self) -> dict[str, Any]:
        return {"factory": self.factory, "weights_sha256": self.weights_sha256,
                "example_shape": list(self.example_shape)}


def load_torch_model(factory: str, weights: Path | None, example_shape: str | tuple[int, ...]
                     ) -> TorchModel:
    """The whole ``--torch/--weights/--example-shape`` triple, checked."""
    shape = parse_shape(example_shape) if isinstance(example_shape, str) else tuple(example_shape)
    module = build_module(factory)
    sha = None
    if weights is not None:
        load_weights(module, weights)
        from ..data import file_sha256
        sha = file_sha256(Path(weights))
    outs = check_example(module, shape, f"--torch {factory}")
    return TorchModel(module=module, factory=factory, example_shape=shape, weights_sha256=sha,
                      output_shapes=[list(o.shape) for o in outs])


def output_names(output_shapes: list[list[int]]) -> list[str]:
    """``logits`` for the usual single (N, classes) output (the demo's name, so exporting the
    demo model reproduces the bundled ONNX file byte for byte), else ``output``/``output_i``."""
    if len(output_shapes) == 1:
        return ["logits" if len(output_shapes[0]) == 2 else "output"]
    return [f"output_{i}" for i in range(len(output_shapes))]


def export_onnx(module, example_shape: tuple[int, ...], dest: Path | io.BytesIO,
                names: list[str] | None = None) -> None:
    """ONNX opset 17 with the TorchScript exporter (``dynamo=False``: no onnxscript needed) and
    a dynamic batch axis on every input and output."""
    torch = require_torch()
    module.eval()
    if names is None:
        outs = check_example(module, example_shape)
        names = output_names([list(o.shape) for o in outs])
    axes = {"input": {0: "batch"}, **{n: {0: "batch"} for n in names}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy-exporter notice: deliberate
            torch.onnx.export(module, (torch.zeros(*example_shape, dtype=torch.float32),),
                              str(dest) if isinstance(dest, (str, Path)) else dest,
                              dynamo=False, opset_version=ONNX_OPSET, input_names=["input"],
                              output_names=names, dynamic_axes=axes, do_constant_folding=True)
    except Exception as exc:
        raise InputError(f"ONNX export failed: {type(exc).__name__}: {_first_line(exc)}") from None
