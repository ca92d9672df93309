"""PyTorch models given as ``--torch module:factory`` (or ``path/to/file.py:factory``), with
``--weights W.pt`` and ``--example-shape``: import the factory, load a state dict with
``weights_only=True``, check the example shape, export to ONNX opset 17 (TorchScript exporter,
``dynamo=False``), and for ``edgeprof convert --to onnx`` check the export against PyTorch.

The one place edgeprof loads and exports PyTorch models (structured pruning, sweeps, attacks and
``convert`` all use it). Every failure the user can cause is a one-line ``InputError``. torch is
imported only inside functions, so importing this module costs nothing without the torch extra."""
from __future__ import annotations

import importlib
import importlib.util
import io
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

TORCH_MISSING = ("PyTorch is not installed: pip install torch==2.13.0 (the CPU build; a plain "
                 "`torch` pulls a multi-GB CUDA build), or pip install 'edgeprof[torch]'")
ONNX_OPSET = 17
#: export parity: max abs error relative to the output range (the fp32 bar of the TFLite pass)
PARITY_REL_TOL = 1e-4


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
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
        raise InputError(f"{flag} {text!r}: expected positive sizes like 1x3x224x224")
    return dims


def _import_module(spec: str, mod_name: str):
    """A dotted module (the working directory is importable too, so ``mymodel:build`` finds
    ./mymodel.py) or a ``.py`` file."""
    if mod_name.endswith(".py"):
        path = Path(mod_name)
        if not path.is_file():
            raise InputError(f"--torch {spec}: no such file {path}")
        name = f"edgeprof_user_model_{abs(hash(str(path.resolve())))}"
        mspec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(mspec)
        sys.modules[name] = module
        mspec.loader.exec_module(module)
        return module
    added = os.getcwd() not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(mod_name)
    finally:
        if added:
            sys.path.remove(os.getcwd())


def import_factory(spec: str):
    """``package.module:function`` or ``path/to/file.py:function`` -> the callable."""
    if ":" not in spec:
        raise InputError(f"--torch {spec!r}: expected module:factory, e.g. "
                         "edgeprof.demo.model:fashion_cnn")
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr:
        raise InputError(f"--torch {spec!r}: expected module:factory")
    require_torch()
    try:
        module = _import_module(spec, mod_name)
    except InputError:
        raise
    except ImportError as exc:
        raise InputError(f"--torch {spec}: cannot import {mod_name} "
                         f"({type(exc).__name__}: {_first_line(exc)})") from None
    except Exception as exc:  # the user's module failed while importing
        raise InputError(f"--torch {spec}: importing {mod_name} failed: "
                         f"{type(exc).__name__}: {_first_line(exc)}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"--torch {spec}: {mod_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"--torch {spec}: {attr} is a {type(obj).__name__}, not a factory "
                         "function")
    return obj


def build_module(spec: str):
    """Call the factory (seeded, so an untrained factory model is the same model on every run,
    without touching the global RNG); it must return a ``torch.nn.Module``."""
    torch = require_torch()
    factory = import_factory(spec)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module = factory()
    except Exception as exc:
        raise InputError(f"--torch {spec}: calling the factory failed: {type(exc).__name__}: "
                         f"{_first_line(exc)}") from None
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"--torch {spec} returned a {type(module).__name__}, not a "
                         "torch.nn.Module")
    return module


def _summarize(line: str) -> str:
    """'Missing key(s) in state_dict: "a", "b", ...' -> 'missing 14 keys (a, b, c, ...)'."""
    m = re.match(r"(Missing|Unexpected) key\(s\) in state_dict: (.*)", line)
    if not m:
        return line.rstrip(".")
    keys = re.findall(r'"([^"]+)"', m.group(2))
    shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
    return f"{m.group(1).lower()} {len(keys)} key{'s' if len(keys) != 1 else ''} ({shown})"


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
    except Exception as exc:  # unpickling refused, truncated file, not a torch file at all
        raise InputError(f"--weights {p.name}: not a loadable state dict (edgeprof loads with "
                         f"weights_only=True): {_first_line(exc)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise InputError(f"--weights {p.name}: holds a {type(state).__name__}, not a state dict "
                         "of tensors (save it with torch.save(model.state_dict(), path))")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        details = [_summarize(ln.strip()) for ln in str(exc).splitlines()[1:] if ln.strip()]
        raise InputError(f"--weights {p.name} do not fit the model: "
                         + ("; ".join(details[:3]) if details else _first_line(exc))[:400]
                         + (f" (and {len(details) - 3} more)" if len(details) > 3 else "")
                         ) from None


def _tensors(out, spec: str) -> list:
    torch = require_torch()
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    if not outs or not all(isinstance(o, torch.Tensor) for o in outs):
        raise InputError(f"{spec} returns a {type(out).__name__}; edgeprof needs a tensor or a "
                         "tuple of tensors")
    return outs


def check_example(module, shape: tuple[int, ...], spec: str = "the model") -> list:
    """Run the module (eval mode, no grad) on zeros of ``shape``; the outputs, or a one-line
    error when the model rejects that shape."""
    torch = require_torch()
    module.eval()
    s = "x".join(map(str, shape))
    try:
        with torch.no_grad():
            out = module(torch.zeros(*shape, dtype=torch.float32))
    except Exception as exc:
        raise InputError(f"{spec} rejects an input of shape {s} (--example-shape): "
                         f"{type(exc).__name__}: {_first_line(exc)}") from None
    return _tensors(out, spec)


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
    """The whole ``--torch/--weights/--example-shape`` triple, checked; the module in eval mode."""
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
                names: list[str] | None = None, static_batch: bool = False) -> dict[str, Any]:
    """ONNX opset 17 with the TorchScript exporter (``dynamo=False``: no onnxscript needed),
    traced on zeros, with a dynamic batch axis on every input and output unless
    ``static_batch``. Returns the input/output names and export settings."""
    torch = require_torch()
    module.eval()
    if names is None:
        names = output_names([list(o.shape) for o in check_example(module, example_shape)])
    axes = None if static_batch else {n: {0: "batch"} for n in ["input", *names]}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy-exporter notice: deliberate
            torch.onnx.export(module, (torch.zeros(*example_shape, dtype=torch.float32),),
                              str(dest) if isinstance(dest, (str, Path)) else dest,
                              dynamo=False, opset_version=ONNX_OPSET, input_names=["input"],
                              output_names=names, dynamic_axes=axes, do_constant_folding=True)
    except Exception as exc:
        raise InputError(f"ONNX export failed (opset {ONNX_OPSET}): {type(exc).__name__}: "
                         f"{_first_line(exc)}") from None
    return {"input_names": ["input"], "output_names": list(names), "opset": ONNX_OPSET,
            "example_shape": list(example_shape), "dynamic_batch": not static_batch}


def export_with_parity(model: TorchModel, dest: Path, static_batch: bool = False
                       ) -> dict[str, Any]:
    """:func:`export_onnx` to a file, checked by onnx and against PyTorch in onnxruntime: the
    export info with ``parity``."""
    info = export_onnx(model.module, model.example_shape, dest, output_names(model.output_shapes),
                       static_batch)
    import onnx
    try:
        onnx.checker.check_model(str(dest))
    except Exception as exc:
        raise InputError(f"the exported ONNX model is invalid: {_first_line(exc)}") from None
    info["parity"] = parity(model.module, dest, model.example_shape, info["output_names"],
                            static_batch)
    return info


def parity(module, onnx_path: Path, shape: tuple[int, ...], names: list[str],
           static_batch: bool) -> dict[str, Any]:
    """Max abs error of onnxruntime against PyTorch on seeded random input (and at another batch
    size when the batch axis is dynamic, which proves the axis really is dynamic)."""
    import numpy as np
    import onnxruntime as ort
    torch = require_torch()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batches = [shape[0]] if static_batch else sorted({shape[0], shape[0] + 2})
    rng = np.random.default_rng(1)
    worst_abs, worst_rel, checks = 0.0, 0.0, []
    for b in batches:
        x = rng.random((b, *shape[1:]), dtype=np.float32)
        with torch.no_grad():
            ref = [t.numpy() for t in _tensors(module(torch.from_numpy(x)), "the model")]
        try:
            got = sess.run(names, {"input": x})
        except Exception as exc:
            raise InputError(f"onnxruntime cannot run the exported model at batch {b}: "
                             f"{_first_line(exc)}") from None
        for name, r, g in zip(names, ref, got):
            err = float(np.abs(r.astype(np.float64) - g).max()) if r.size else 0.0
            span = float(r.max() - r.min()) if r.size else 0.0
            rel = err / span if span > 0 else 0.0
            checks.append({"batch": b, "output": name, "max_abs_error": err,
                           "relative_max_error": rel})
            worst_abs, worst_rel = max(worst_abs, err), max(worst_rel, rel)
    return {"max_abs_error": worst_abs, "relative_max_error": worst_rel,
            "tolerance_relative": PARITY_REL_TOL, "passed": worst_rel <= PARITY_REL_TOL,
            "checks": checks, "runtime": f"onnxruntime {ort.__version__}",
            "torch": torch.__version__}
