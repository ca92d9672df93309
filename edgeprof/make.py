"""The pass commands as library functions: quantize, prune and convert a model into cached
variants, with fidelity (and a task metric) against the parent and the fp32 root. The CLI's
``quantize``, ``prune`` and ``convert`` commands parse flags, call these and render what they
return; the sweep builds its variants through the same passes (``sweeps.build``).

Each returns ``edgeprof.api.Variant`` values (``reused`` says the cache already held it) and
prints nothing: messages (a converter being installed) go to ``progress(message, fraction)``."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import InputError

Progress = Callable[[str, float], None]
PathLike = str | Path


def _names(x: str | Sequence[str] | None) -> list[str]:
    if x is None:
        return []
    items = x.split(",") if isinstance(x, str) else list(x)
    return [t.strip() for t in items if t and t.strip()]


def _typed(cache: Any, v: Any, reused: bool):
    from .api import Variant
    return Variant.from_cached(v, reused, cache.lineage(v))


def _fidelity_data(calib: PathLike | None, data: PathLike | None, metric: str | None,
                   extra: Sequence[tuple[str, Any]] = ()) -> tuple[Any, Any, Any, Any]:
    """(calibration set, evaluation set, the set fidelity is measured on, the metric); the
    metric and its data are checked before any pass runs, and calibration or fine-tuning data
    overlapping the evaluation data is refused."""
    from .data import check_disjoint, load_npz
    from .measure.fidelity import check_metric_data
    from .metrics import get_metric

    chosen = get_metric(metric) if metric else None
    cal = load_npz(calib) if calib else None
    ev = load_npz(data) if data else None
    if ev is not None:
        for what, ds in (("calibration", cal), *extra):
            if ds is not None:
                check_disjoint(ds, ev, what)
    check_metric_data(chosen, ev or cal)
    return cal, ev, ev or cal, chosen


def _apply(cache: Any, parent: Any, root: Any, p: Any, fid_ds: Any, is_eval: bool, rows: int,
           scratch: Path, metric: Any) -> tuple[Any, bool]:
    """Run pass ``p`` on ``parent`` with fidelity (against the parent and the root, on
    ``fid_ds``: evaluation data, else calibration rows) and the task metric when given."""
    from .measure.fidelity import FidelityEvaluator, add_task_metric
    from .passes.base import apply_pass

    ev = hook = None
    if fid_ds is not None:
        ev = FidelityEvaluator(fid_ds, rows, scratch)
        hook = ev.hook(parent, root, "evaluation" if is_eval else "calibration")
    try:
        v, reused = apply_pass(cache, parent, p, hook)
        add_task_metric(cache, ev, metric, v, parent, root)
    finally:
        if ev is not None:
            ev.close()
    return v, reused


def quantize(model: PathLike, precision: str, *, calib: PathLike | None = None,
             data: PathLike | None = None, per_channel: bool = True, format: str = "qdq",
             calib_method: str = "minmax", calib_rows: int = 200, types: str = "S8S8",
             reduce_range: bool = False, weight_type: str = "uint8",
             exclude_nodes: str | Sequence[str] | None = None,
             exclude_ops: str | Sequence[str] | None = None, sensitivity: bool = False,
             sensitivity_rows: int = 64, metric: str | None = None,
             preprocess: PathLike | None = None, fidelity_rows: int = 500,
             cache_dir: PathLike | None = None):
    """A cached int8 (static/dynamic) or fp16 variant of an ONNX model (a path or a variant id
    prefix), with its fidelity against the parent and the fp32 root on ``data`` (else the
    calibration rows), the task ``metric`` when given, and per-layer ``sensitivity``."""
    from .passes.quantize import QuantizePass, calibration_batches
    from .variants.cache import Cache
    from .variants.family import open_variant, spec_for_worker

    if sensitivity and precision != "int8-static":
        raise InputError("--sensitivity analyses int8-static quantization")
    cache = Cache(Path(cache_dir) if cache_dir else None)
    parent, root = open_variant(cache, str(model), Path(preprocess) if preprocess else None)
    if parent.format != "onnx":
        raise InputError(f"{parent.label}: quantize takes an ONNX model; TFLite precisions come "
                         "from `edgeprof convert --to tflite --precision ...`")
    cal, ev_ds, fid_ds, chosen = _fidelity_data(calib, data, metric)
    raw_dtype = next(iter(cal.x.values())).dtype.name if cal else "uint8"
    p = QuantizePass(precision=precision, per_channel=per_channel, format=format,
                     calib_method=calib_method, calib=cal, calib_rows=calib_rows,
                     spec=spec_for_worker(root.input_spec, raw_dtype),
                     exclude_nodes=_names(exclude_nodes), exclude_ops=_names(exclude_ops),
                     types=types, reduce_range=reduce_range, dynamic_weight_type=weight_type)
    with tempfile.TemporaryDirectory(prefix="edgeprof-q-") as scratch:
        v, reused = _apply(cache, parent, root, p, fid_ds, ev_ds is not None, fidelity_rows,
                           Path(scratch), chosen)
        if sensitivity:
            from .passes.sensitivity import layer_sensitivity
            spec = spec_for_worker(root.input_spec, raw_dtype)
            cal_x = calibration_batches(parent.path, cal, spec, min(calib_rows, 64))
            evf = calibration_batches(parent.path, fid_ds, spec_for_worker(
                root.input_spec, next(iter(fid_ds.x.values())).dtype.name), sensitivity_rows)
            v.extra["sensitivity"] = layer_sensitivity(parent.path, cal_x, evf, per_channel,
                                                       format, calib_method)
            cache.update(v)
    return _typed(cache, v, reused)


def prune(model: PathLike | None = None, *, sparsity: float | str | None = None,
          channels: float | str | None = None, scope: str | None = None,
          torch: str | None = None, weights: PathLike | None = None,
          example_shape: str | Sequence[int] | None = None, importance: str = "l1",
          keep_layers: str | Sequence[str] | None = None, round_to: int | None = None,
          finetune: PathLike | None = None, epochs: int = 1, lr: float = 1e-3, seed: int = 0,
          data: PathLike | None = None, calib: PathLike | None = None,
          fidelity_rows: int = 500, metric: str | None = None,
          preprocess: PathLike | None = None, cache_dir: PathLike | None = None,
          progress: Progress | None = None):
    """Unstructured magnitude pruning of an ONNX ``model`` (``sparsity``: zeroed weights, no
    speed-up in onnxruntime, a smaller compressed file), or structured channel pruning of a
    PyTorch model (``torch="module:factory"``, ``channels``) with optional fine-tuning on
    ``finetune`` data (cross-entropy for a single-output classifier, else distillation)."""
    from .passes.prune import check_fraction
    from .units import parse_fraction
    from .variants.cache import Cache
    from .variants.family import open_variant, spec_for_worker

    structured = torch is not None
    if structured == (model is not None):
        raise InputError("give either MODEL (.onnx, with --sparsity) or --torch MODULE:FACTORY "
                         "(with --channels)")
    if structured:
        if channels is None:
            raise InputError("--torch prunes channels: give --channels FRACTION (e.g. 0.5)")
        if sparsity is not None:
            raise InputError("--sparsity zeroes weights of an ONNX MODEL; with --torch use "
                             "--channels")
        if example_shape is None:
            raise InputError("--torch needs --example-shape, e.g. 1x1x28x28")
    else:
        if sparsity is None:
            raise InputError("give --sparsity FRACTION (e.g. 0.5) to prune MODEL's weights")
        for flag, val in (("--channels", channels), ("--finetune", finetune),
                          ("--weights", weights), ("--example-shape", example_shape),
                          ("--keep-layers", keep_layers), ("--round-to", round_to)):
            if val is not None:
                raise InputError(f"{flag} belongs to structured pruning of a PyTorch model "
                                 "(--torch MODULE:FACTORY)")
    flag = "--channels" if structured else "--sparsity"
    amount = channels if structured else sparsity
    frac = check_fraction(amount if isinstance(amount, float) else parse_fraction(str(amount), flag),
                          flag)
    from .data import load_npz
    ft_ds = load_npz(finetune) if finetune else None
    cal, ev_ds, fid_ds, chosen = _fidelity_data(calib, data, metric, (("fine-tuning", ft_ds),))
    cache = Cache(Path(cache_dir) if cache_dir else None)
    say = progress or (lambda desc, frac: None)
    with tempfile.TemporaryDirectory(prefix="edgeprof-prune-") as scratch:
        say("loading the model", 0.0)
        if structured:
            from .inputspec import load_spec
            from .passes.structured import ChannelPrunePass, FineTune, export_root
            from .passes.torch_load import load_torch_model, require_torch_pruning

            require_torch_pruning()
            shape = example_shape if isinstance(example_shape, str) else \
                "x".join(str(int(d)) for d in example_shape)
            tm = load_torch_model(torch, Path(weights) if weights else None, shape)
            spec = load_spec(preprocess).to_dict() if preprocess else None
            first = ft_ds or ev_ds or cal
            raw_dtype = next(iter(first.x.values())).dtype.name if first else "uint8"
            ft = FineTune(ft_ds, epochs=epochs, lr=lr, seed=seed) if ft_ds is not None else None
            p = ChannelPrunePass(tm, frac, importance=importance, scope=scope or "layer",
                                 keep_layers=_names(keep_layers), round_to=round_to,
                                 finetune=ft, eval_data=ev_ds,
                                 spec=spec_for_worker(spec, raw_dtype), progress=progress)
            # every input is checked: only now is anything written to the cache
            parent = root = export_root(cache, tm, spec)
        else:
            from .passes.prune import PrunePass
            p = PrunePass(frac, scope or "global")
            parent, root = open_variant(cache, str(model), Path(preprocess) if preprocess else None)
            if parent.format != "onnx":
                raise InputError(f"{parent.label}: unstructured pruning takes an ONNX model")
        v, reused = _apply(cache, parent, root, p, fid_ds, ev_ds is not None, fidelity_rows,
                           Path(scratch), chosen)
    return _typed(cache, v, reused)


def export_torch(torch: str, *, example_shape: str, weights: PathLike | None = None,
                 static_batch: bool = False, preprocess: PathLike | None = None,
                 cache_dir: PathLike | None = None):
    """PyTorch -> ONNX: the factory's model exported (dynamic batch unless ``static_batch``),
    checked for parity against PyTorch on random input, registered as a root variant
    (``extra["torch_export"]`` holds opset, parity and the factory)."""
    from .inputspec import load_spec
    from .models import open_model
    from .passes.torch_load import export_with_parity, load_torch_model
    from .variants.cache import Cache

    if not example_shape:
        raise InputError("--torch needs --example-shape, e.g. 1x3x224x224")
    cache = Cache(Path(cache_dir) if cache_dir else None)
    spec = load_spec(preprocess).to_dict() if preprocess else None
    model = load_torch_model(torch, Path(weights) if weights else None, example_shape)
    with tempfile.TemporaryDirectory(prefix="edgeprof-export-") as tmp:
        path = Path(tmp) / f"{torch.rpartition(':')[2]}.onnx"
        info = export_with_parity(model, path, static_batch)
        src = f"torch {torch}" + (f" weights {weights}" if weights else " (untrained: no --weights)")
        v = cache.register_root(open_model(path), input_spec=spec, source=src)
    info["factory"] = torch
    info["weights"] = str(weights) if weights else None
    v.extra["torch_export"] = info
    cache.update(v)
    return _typed(cache, v, False)


def convert(model: PathLike, *, precision: str | Sequence[str] = "fp32",
            per_channel: bool = True, calib: PathLike | None = None, calib_rows: int = 200,
            data: PathLike | None = None, fidelity_rows: int = 500, metric: str | None = None,
            preprocess: PathLike | None = None, install: bool = True,
            cache_dir: PathLike | None = None, progress: Progress | None = None) -> list:
    """ONNX -> TFLite in up to five precisions (fp32, fp16, int8-dynamic, int8-static,
    int16x8) from one converter run, each a cached variant checked for parity against its
    ONNX parent (``fidelity["tolerance"]``: the verdict) and scored with ``metric`` when
    given. The converter's own environment is installed on first use unless ``install`` is
    False."""
    from .measure.fidelity import FidelityEvaluator, add_task_metric
    from .modelinfo import onnx_inputs
    from .passes.base import apply_pass
    from .passes.convert import check_tolerance, synthetic_dataset
    from .passes.tflite import (QUANTIZED, ConverterRun, TflitePass, check_convertible,
                                parse_precisions)
    from .variants.cache import Cache
    from .variants.family import open_variant, spec_for_worker

    precisions = parse_precisions(precision if isinstance(precision, str) else ",".join(precision))
    cache = Cache(Path(cache_dir) if cache_dir else None)
    parent, root = open_variant(cache, str(model), Path(preprocess) if preprocess else None)
    if parent.format != "onnx":
        raise InputError(f"{parent.label}: convert --to tflite takes an ONNX model "
                         f"(this variant is {parent.format})")
    check_convertible(parent.path, f"{parent.short_id} ({parent.label})")
    cal, ev_ds, _, chosen = _fidelity_data(calib, data, metric)
    raw_dtype = next(iter(cal.x.values())).dtype.name if cal else "uint8"
    run = ConverterRun(cache=cache, parent=parent, calib=cal, calib_rows=calib_rows,
                       quantize=any(p in QUANTIZED for p in precisions), per_channel=per_channel,
                       worker_spec=spec_for_worker(parent.input_spec, raw_dtype),
                       say=lambda msg: progress(msg, 0.0) if progress else None,
                       install=install)
    passes = [TflitePass(p, run) for p in precisions]  # option errors before any work
    out = []
    with tempfile.TemporaryDirectory(prefix="edgeprof-c-") as scratch:
        fid_ds, role = ev_ds, "evaluation"
        if fid_ds is None:
            fid_ds, role = cal, "calibration"
        if fid_ds is None:
            fid_ds, role = synthetic_dataset(Path(scratch) / "synthetic.npz",
                                             onnx_inputs(parent.path), parent.input_spec), "synthetic"
        ev = FidelityEvaluator(fid_ds, fidelity_rows, Path(scratch))
        base = ev.hook(parent, root, role)

        def fidelity(path: Path, v: Any) -> dict[str, Any]:
            res = base(path, v)
            verdict, warning = check_tolerance(v.config["precision"], res)
            res["tolerance"] = verdict
            if warning:
                v.notes.append(warning)
            return res

        with ev:
            for i, p in enumerate(passes):
                if progress:
                    progress(f"TFLite {p.precision}", i / len(passes))
                v, reused = apply_pass(cache, parent, p, fidelity)
                add_task_metric(cache, ev, chosen, v, parent, root)
                out.append(_typed(cache, v, reused))
    return out  # extra["converter_run"]: the run's key (its run.json: time, files, log)
