"""PyTorch -> ONNX: a model factory (``module:function``, optionally with a state dict) exported by
the TorchScript-based exporter at opset 17, then checked against PyTorch on random input.

torch is imported here only, inside the functions: the rest of edgeprof runs without it.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

OPSET = 17
TORCH_HINT = ("PyTorch is not installed in this environment; install the CPU build with "
              "`pip install torch==2.13.0` (or `pip install 'edgeprof[torch]'`)")
#: export parity: max abs error relative to the output range (the fp32 bar of the TFLite pass)
PARITY_REL_TOL = 1e-4


def import_torch():
    try:
        import torch
    except ImportError:
        raise InputError(TORCH_HINT)
    return torch


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.lower().replace(",", "x").split("x") if d.strip())
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise InputError(f"--example-shape {text!r}: expected positive sizes like 1x3x224x224")
    return dims


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def load_factory(spec: str):
    """``package.module:function`` or ``path/to/file.py:function`` -> the callable."""
    if ":" not in spec:
        raise InputError(f"--torch {spec!r}: expected module:factory, e.g. "
                         "edgeprof.demo.model:fashion_cnn")
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr:
        raise InputError(f"--torch {spec!r}: expected module:factory")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.is_file():
                raise InputError(f"--torch {spec}: no such file {path}")
            name = f"edgeprof_user_model_{abs(hash(str(path.resolve())))}"
            mspec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(mspec)
            sys.modules[name] = module
            mspec.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except InputError:
        raise
    except ImportError as exc:
        if getattr(exc, "name", None) == "torch":
            raise InputError(TORCH_HINT)
        raise InputError(f"--torch {spec}: cannot import {mod_name}: {_one_line(exc)}")
    except Exception as exc:  # the user's module failed while importing
        raise InputError(f"--torch {spec}: importing {mod_name} failed: "
                         f"{type(exc).__name__}: {_one_line(exc)}")
    fn = getattr(module, attr, None)
    if fn is None:
        raise InputError(f"--torch {spec}: {mod_name} has no attribute {attr!r}")
    if not callable(fn):
        raise InputError(f"--torch {spec}: {attr} is a {type(fn).__name__}, not a factory function")
    return fn


def build_model(factory: str, weights: Path | None):
    """The factory's nn.Module in eval mode, with ``weights`` loaded strictly."""
    torch = import_torch()
    fn = load_factory(factory)
    torch.manual_seed(0)  # an untrained factory model is the same model on every run
    try:
        model = fn()
    except Exception as exc:
        raise InputError(f"--torch {factory}: calling the factory failed: "
                         f"{type(exc).__name__}: {_one_line(exc)}")
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"--torch {factory} returned a {type(model).__name__}, not a "
                         "torch.nn.Module")
    if weights is not None:
        load_weights(model, Path(weights))
    return model.eval()


def load_weights(model, path: Path) -> None:
    torch = import_torch()
    if not path.is_file():
        raise InputError(f"--weights {path}: no such file")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated file, not a torch file at all
        raise InputError(f"--weights {path}: not a loadable state dict (edgeprof loads with "
                         f"weights_only=True): {_one_line(exc)}")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"--weights {path}: holds a {type(state).__name__}, not a state dict "
                         "of tensors (save it with torch.save(model.state_dict(), path))")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        details = [_summarize(ln.strip()) for ln in str(exc).splitlines()[1:] if ln.strip()]
        raise InputError(f"--weights {path} do not fit the model: "
                         + ("; ".join(details[:3]) if details else _one_line(exc))[:400]
                         + (f" (and {len(details) - 3} more)" if len(details) > 3 else ""))


def _summarize(line: str) -> str:
    """'Missing key(s) in state_dict: "a", "b", ...' -> 'missing 14 keys (a, b, c, ...)'."""
    m = re.match(r"(Missing|Unexpected) key\(s\) in state_dict: (.*)", line)
    if not m:
        return line.rstrip(".")
    keys = re.findall(r'"([^"]+)"', m.group(2))
    shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
    return f"{m.group(1).lower()} {len(keys)} key{'s' if len(keys) != 1 else ''} ({shown})"


def _outputs(result) -> list:
    torch = import_torch()
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, (list, tuple)) and all(isinstance(r, torch.Tensor) for r in result):
        return list(result)
    raise InputError(f"the model returns a {type(result).__name__}; export needs a tensor or a "
                     "tuple of tensors")


def export_onnx(model, shape: tuple[int, ...], out: Path, static_batch: bool = False) -> dict[str, Any]:
    """Export ``model`` for inputs of ``shape``; returns names and the parity check."""
    torch = import_torch()
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(shape, generator=gen)
    try:
        with torch.no_grad():
            ref = _outputs(model(example))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"the model rejects an input of shape {'x'.join(map(str, shape))}: "
                         f"{type(exc).__name__}: {_one_line(exc)}")
    output_names = ["output"] if len(ref) == 1 else [f"output_{i}" for i in range(len(ref))]
    dynamic = None if static_batch else {n: {0: "batch"} for n in ["input", *output_names]}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(out), dynamo=False, opset_version=OPSET,
                              input_names=["input"], output_names=output_names,
                              dynamic_axes=dynamic, do_constant_folding=True)
    except Exception as exc:
        raise InputError(f"torch.onnx.export failed (opset {OPSET}): {type(exc).__name__}: "
                         f"{_one_line(exc)}")
    import onnx
    try:
        onnx.checker.check_model(str(out))
    except Exception as exc:
        raise InputError(f"the exported ONNX model is invalid: {_one_line(exc)}")
    return {"input_names": ["input"], "output_names": output_names, "opset": OPSET,
            "example_shape": list(shape), "dynamic_batch": not static_batch,
            "parity": parity(model, out, shape, output_names, static_batch)}


def parity(model, onnx_path: Path, shape: tuple[int, ...], output_names: list[str],
           static_batch: bool) -> dict[str, Any]:
    """Max abs error of onnxruntime against PyTorch on seeded random input (and at another batch
    size when the batch axis is dynamic, which proves the axis really is dynamic)."""
    torch = import_torch()
    import onnxruntime as ort
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batches = [shape[0]] if static_batch else sorted({shape[0], shape[0] + 2})
    rng = np.random.default_rng(1)
    worst_abs, worst_rel, checks = 0.0, 0.0, []
    for b in batches:
        x = rng.random((b, *shape[1:]), dtype=np.float32)
        with torch.no_grad():
            ref = [t.numpy() for t in _outputs(model(torch.from_numpy(x)))]
        try:
            got = sess.run(output_names, {"input": x})
        except Exception as exc:
            raise InputError(f"onnxruntime cannot run the exported model at batch {b}: "
                             f"{_one_line(exc)}")
        for name, r, g in zip(output_names, ref, got):
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
