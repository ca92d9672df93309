"""From a sweep recipe to a cached variant: root -> optional pruning -> precision/format.
Each step is a pass through ``apply_pass``, so everything built once is reused."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

from ..data import Dataset
from ..errors import InputError
from ..measure.fidelity import FidelityEvaluator
from ..passes.base import apply_pass
from ..variants.cache import Cache, Variant
from ..variants.family import spec_for_worker
from .plan import Plan, Recipe


class Builder:
    def __init__(self, cache: Cache, plan: Plan, root: Variant, calib: Dataset | None,
                 evaluation: Dataset | None, finetune: Dataset | None, scratch: Path):
        self.cache, self.plan, self.root = cache, plan, root
        self.calib, self.eval, self.finetune = calib, evaluation, finetune
        self.scratch = scratch
        self._fid = FidelityEvaluator(evaluation, 500, scratch) if evaluation is not None else None

    def close(self) -> None:
        """End the fidelity worker (the builder's variants are all built)."""
        if self._fid is not None:
            self._fid.close()

    def fidelity(self, parent: Variant) -> Callable[[Path, Variant], dict[str, Any]] | None:
        return None if self._fid is None else self._fid.hook(parent, self.root, "evaluation")

    def _raw_dtype(self) -> str:
        ds = self.calib or self.eval
        return next(iter(ds.x.values())).dtype.name if ds else "uint8"

    def build(self, recipe: Recipe) -> Variant:
        v = self.root
        if recipe.channels:
            v = self._structured(recipe)
        if recipe.sparsity:
            v = self._unstructured(v, recipe)
        if recipe.to == "tflite":
            return self._tflite(v, recipe)
        if recipe.precision == "fp32":
            return v
        from ..passes.quantize import QuantizePass
        p = QuantizePass(precision=recipe.precision, per_channel=recipe.per_channel,
                         format=recipe.format, calib_method=recipe.calib_method, calib=self.calib,
                         calib_rows=recipe.calib_rows, types=recipe.types,
                         reduce_range=recipe.reduce_range,
                         spec=spec_for_worker(self.root.input_spec, self._raw_dtype()))
        return apply_pass(self.cache, v, p, self.fidelity(v))[0]

    def _unstructured(self, parent: Variant, recipe: Recipe) -> Variant:
        from ..passes.prune import PrunePass
        p = PrunePass(sparsity=recipe.sparsity, scope=recipe.scope)
        return apply_pass(self.cache, parent, p, self.fidelity(parent))[0]

    def _torch_model(self):
        if getattr(self, "_torch", None) is None:
            if not self.plan.torch_factory or not self.plan.example_shape:
                raise InputError("channels = ... prunes the PyTorch model: give [model] torch = "
                                 "\"module:factory\", weights and example_shape")
            from ..passes.torch_load import load_torch_model
            self._torch = load_torch_model(self.plan.torch_factory, self.plan.torch_weights,
                                           tuple(self.plan.example_shape))
        return self._torch

    def _structured(self, recipe: Recipe) -> Variant:
        from ..passes.structured import ChannelPrunePass, FineTune, export_root
        model = self._torch_model()
        parent = export_root(self.cache, model, self.root.input_spec)
        ft = None
        if recipe.finetune_epochs:
            if self.finetune is None:
                raise InputError("finetune_epochs needs [data] finetune = \"train.npz\"")
            ft = FineTune(data=self.finetune, epochs=recipe.finetune_epochs)
        p = ChannelPrunePass(model=model, channels=recipe.channels, finetune=ft,
                             eval_data=self.eval, round_to=recipe.round_to,
                             spec=spec_for_worker(self.root.input_spec, self._raw_dtype()))
        return apply_pass(self.cache, parent, p, self.fidelity(parent))[0]

    def _tflite(self, parent: Variant, recipe: Recipe) -> Variant:
        """One onnx2tf run per parent produces every TFLite precision; each is a variant."""
        from ..passes.convert import check_tolerance
        from ..passes.tflite import ConverterRun, TflitePass

        runs = self.__dict__.setdefault("_tflite_runs", {})
        key = (parent.id, recipe.per_channel, recipe.calib_rows)
        if key not in runs:
            runs[key] = ConverterRun(
                cache=self.cache, parent=parent, calib=self.calib, quantize=self.calib is not None,
                per_channel=recipe.per_channel, calib_rows=recipe.calib_rows,
                worker_spec=spec_for_worker(parent.input_spec, self._raw_dtype()))
        p = TflitePass(recipe.precision, runs[key])
        base = self.fidelity(parent)

        def fidelity(path: Path, v: Variant) -> dict[str, Any]:
            res = base(path, v) if base else {}
            if res:
                verdict, warning = check_tolerance(v.config["precision"], res)
                res["tolerance"] = verdict
                if warning:
                    v.notes.append(warning)
            return res
        return apply_pass(self.cache, parent, p, fidelity if base else None)[0]


def open_root(cache: Cache, plan: Plan) -> Variant:
    from ..inputspec import load_spec
    from ..models import open_model

    spec = load_spec(plan.preprocess).to_dict() if plan.preprocess else None
    if plan.model_path is not None:
        return cache.register_root(open_model(plan.model_path), input_spec=spec)
    if not plan.torch_factory or not plan.example_shape:
        raise InputError("[model] needs path = \"model.onnx\", or torch = \"module:factory\" "
                         "with example_shape (and weights)")
    from ..passes.structured import export_root
    from ..passes.torch_load import load_torch_model
    model = load_torch_model(plan.torch_factory, plan.torch_weights, tuple(plan.example_shape))
    return export_root(cache, model, spec)


def scratch_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="edgeprof-sweep-")
