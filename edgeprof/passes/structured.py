"""Structured channel pruning of a PyTorch model (torch-pruning), exported to ONNX, with optional
short fine-tuning to recover accuracy.

Removing whole channels shrinks the tensors themselves, so unlike zeroed weights it makes the model
faster (both the pruned layer's outputs and the next layer's inputs shrink: half the channels cost
about a quarter of the MACs in a conv stack). Every layer that feeds a model output keeps its width
(they are torch-pruning's ``ignored_layers``): the last Conv/Linear on the path to each output
tensor, found by walking the autograd graph back from every output (a box, landmarks and class-prob
net keeps all three heads), plus any ``--keep-layers``.

Fine-tuning: a single-output classifier (one ``(N, classes)`` output, labels ``y`` in the data)
trains with cross-entropy; any other model (several outputs, another output shape, or rows without
labels) by distillation: the sum over outputs of the MSE between the pruned and the unpruned model.

The variant's parent is the ONNX export of the unpruned model (a root). Accuracy before and after
fine-tuning is measured on the exported ONNX files through the worker (onnxruntime), as every other
accuracy in edgeprof. torch is imported only inside functions.
"""
from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data import Dataset
from ..errors import InputError
from ..variants.cache import Variant
from .prune import check_fraction
from .torch_load import (TorchModel, check_example, export_onnx, output_names, require_torch,
                         require_torch_pruning)

Progress = Callable[[str, float], None]
IMPORTANCES = ("l1", "l2")
OPTIMIZER = "AdamW(weight_decay=1e-4), cosine decay to 0"


def _layer_types():
    torch = require_torch()
    return (torch.nn.modules.conv._ConvNd, torch.nn.Linear)


def _flat(out) -> list:
    """The tensors of a model output: a tensor, or (nested) tuples, lists and dicts of them."""
    torch = require_torch()
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat(o)]
    return []


def output_layers(module, example_shape: tuple[int, ...]) -> list[str]:
    """Names of the Conv/Linear layers that feed a model output: for each output tensor, the last
    such layers on every path back to it through the autograd graph (so a head behind a softmax,
    a reshape or a concatenation is found too; pruning their output channels would change what
    the model returns); the last layer called when no output depends on one."""
    torch = require_torch()
    calls: list[tuple[str, Any, Any]] = []  # (name, output tensor, its grad_fn), in call order

    def hook(mod, inp, out, name):
        # the grad_fn as the layer returned it: a later in-place op (ReLU(inplace=True), +=)
        # replaces the tensor's own
        calls.extend((name, t, t.grad_fn) for t in _flat(out))

    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: hook(mod, inp, out, name))
             for name, m in module.named_modules() if isinstance(m, _layer_types())]
    try:
        module.eval()
        with torch.enable_grad():  # the autograd graph is the trace
            x = torch.zeros(*example_shape, requires_grad=True)
            outs = _flat(module(x))
    finally:
        for h in hooks:
            h.remove()
    # the grad_fn objects stay alive in ``calls``, so their ids are unique
    by_fn = {id(fn): name for name, _, fn in calls if fn is not None}
    hits = {name for name, t, _ in calls if any(t is o for o in outs)}
    for o in outs:
        stack, seen = [o.grad_fn], set()
        while stack:
            fn = stack.pop()
            if fn is None or id(fn) in seen:
                continue
            seen.add(id(fn))
            if id(fn) in by_fn:  # a layer's output: stop there (what feeds it may be pruned)
                hits.add(by_fn[id(fn)])
                continue
            stack.extend(f for f, _ in fn.next_functions)
    return sorted(hits) or ([calls[-1][0]] if calls else [])


def layer_widths(module) -> dict[str, dict[str, Any]]:
    out = {}
    for name, m in module.named_modules():
        if isinstance(m, _layer_types()):
            w = m.weight
            out[name] = {"type": type(m).__name__, "out": int(w.shape[0]),
                         "in": int(w.shape[1]) * int(getattr(m, "groups", 1))}
    return out


def prune_channels(module, example_shape: tuple[int, ...], channels: float, importance: str = "l1",
                   scope: str = "layer", keep: list[str] = (), round_to: int | None = None) -> Any:
    """A pruned deep copy of ``module``: ``channels`` of the prunable channels removed (by L1 or
    L2 magnitude), the layers in ``keep`` keeping their output width; with ``round_to`` every
    pruned width stays a multiple of it."""
    torch = require_torch()
    tp = require_torch_pruning()
    m = copy.deepcopy(module).eval()
    named = dict(m.named_modules())
    ignored = [named[n] for n in keep]
    imp = tp.importance.MagnitudeImportance(p=1 if importance == "l1" else 2)
    try:
        pruner = tp.pruner.MetaPruner(m, torch.zeros(*example_shape), importance=imp,
                                      pruning_ratio=channels, ignored_layers=ignored,
                                      global_pruning=scope == "global", round_to=round_to)
        pruner.step()
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"torch-pruning could not prune this model: {type(exc).__name__}: "
                         f"{first}") from None
    return m.eval()


# -- data and accuracy ----------------------------------------------------------------------------

def _raw(ds: Dataset) -> np.ndarray:
    if len(ds.x) != 1:
        raise InputError(f"{ds.path.name}: one input array expected ('x'), found {sorted(ds.x)}")
    return next(iter(ds.x.values()))


def _row_spec(spec: dict[str, Any] | None, raw: np.ndarray, shape: tuple[int, ...]) -> dict[str, Any]:
    from ..targets.worker import default_spec, infer_layout
    s = dict((spec or {}).get("*") or {}) if spec else {}
    if not s:
        s = default_spec(raw.dtype, list(shape), "float32")
    if s.get("layout") is None and raw.ndim >= 3 and len(shape) == 4:
        s["layout"] = infer_layout(list(shape))
    s["dtype"] = s.get("dtype") or "float32"
    return s


def model_batch(raw: np.ndarray, spec: dict[str, Any], shape: tuple[int, ...], where: str) -> np.ndarray:
    """Raw rows through the InputSpec (the worker's own code), checked against the model shape."""
    from ..targets.worker import WorkerFault, apply_input_spec
    try:
        x = apply_input_spec(raw, spec)
    except WorkerFault as exc:
        raise InputError(f"{where}: {exc}") from None
    if tuple(x.shape[1:]) != tuple(shape[1:]):
        raise InputError(f"{where}: rows have shape {'x'.join(map(str, x.shape[1:]))} after "
                         f"preprocessing but the model takes {'x'.join(map(str, shape[1:]))}")
    return x.astype(np.float32, copy=False)


def onnx_accuracy(path: Path, data: Dataset, spec: dict[str, Any] | None, scratch: Path) -> dict[str, Any]:
    """Top-1 accuracy (n, Wilson 95 % CI) of an ONNX file on labelled data, through the worker."""
    from ..measure.accuracy import top1
    from ..targets.client import start_local_worker

    npz = str(data.npz_path(scratch))
    with start_local_worker(f"accuracy {Path(path).name}") as w:
        w.load(path, batch=1, npz=npz, spec=spec)
        out = w.predict_rows(npz, data.n, batch=250, spec=spec)
    logits = next(iter(out.values())).astype(np.float32)
    return top1(logits, data.y)


# -- fine-tuning ----------------------------------------------------------------------------------

CROSS_ENTROPY, DISTILL_MSE = "cross-entropy", "distill-mse"


@dataclass
class FineTune:
    """Short fine-tuning on rows of the TRAIN split (never the evaluation rows): cross-entropy
    against the labels ``y`` for a single-output classifier, else (``loss`` = ``distill-mse``,
    chosen by :class:`ChannelPrunePass`) distillation: the sum over the model's outputs of the MSE
    between the pruned model and the unpruned one (the teacher), labels unused."""
    data: Dataset
    epochs: int = 1
    lr: float = 1e-3
    seed: int = 0
    batch_size: int = 64
    loss: str = CROSS_ENTROPY

    def __post_init__(self) -> None:
        if not 1 <= self.epochs <= 1000:
            raise InputError(f"--epochs {self.epochs}: must be between 1 and 1000")
        if not 0 < self.lr < 1:
            raise InputError(f"--lr {self.lr}: must lie between 0 and 1")
        if self.loss not in (CROSS_ENTROPY, DISTILL_MSE):
            raise InputError(f"fine-tuning loss {self.loss!r}: must be {CROSS_ENTROPY} or "
                             f"{DISTILL_MSE}")

    def config(self) -> dict[str, Any]:
        return {"data_sha256": self.data.sha256, "rows": self.data.n, "epochs": self.epochs,
                "lr": self.lr, "seed": self.seed, "batch_size": self.batch_size,
                "optimizer": OPTIMIZER, "loss": self.loss}

    def run(self, module, spec: dict[str, Any], shape: tuple[int, ...],
            progress: Progress, teacher=None) -> dict[str, Any]:
        """Train ``module`` in place; deterministic for a given seed, data and thread count.
        Distillation needs ``teacher`` (the unpruned model, left untouched)."""
        torch = require_torch()
        distill = self.loss == DISTILL_MSE
        if distill and teacher is None:
            raise ValueError("distillation needs the unpruned model as teacher")
        if not distill and self.data.y is None:
            raise InputError(f"--finetune {self.data.path.name}: has no labels 'y'; "
                             "fine-tuning needs them")
        raw, y = _raw(self.data), self.data.y
        n = len(raw)
        where = f"--finetune {self.data.path.name}"
        steps = (n + self.batch_size - 1) // self.batch_size
        total = steps * self.epochs
        was_det = torch.are_deterministic_algorithms_enabled()
        torch.manual_seed(self.seed)
        torch.use_deterministic_algorithms(True)
        gen = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.AdamW(module.parameters(), lr=self.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        loss_fn = torch.nn.CrossEntropyLoss()
        log, t0, done = [], time.perf_counter(), 0
        result: dict[str, Any] = {}
        try:
            if distill:
                teacher.eval()
                result["distill_mse_before"] = self._distill_mse(module, teacher, raw, spec,
                                                                 shape, where)
            for epoch in range(self.epochs):
                module.train()
                perm = torch.randperm(n, generator=gen).numpy()
                loss_sum, correct = 0.0, 0
                for s in range(steps):
                    idx = np.sort(perm[s * self.batch_size:(s + 1) * self.batch_size])
                    xb = torch.from_numpy(model_batch(raw[idx], spec, shape, where))
                    opt.zero_grad(set_to_none=True)
                    if distill:
                        with torch.no_grad():
                            ref = _flat(teacher(xb))
                        loss = _mse_sum(_flat(module(xb)), ref)
                    else:
                        yb = torch.from_numpy(y[idx])
                        out = module(xb)
                        if out.ndim != 2 or out.shape[1] <= int(yb.max()):
                            raise InputError(f"{where}: labels go up to {int(y.max())} but the "
                                             f"model outputs shape {tuple(out.shape)}")
                        loss = loss_fn(out, yb)
                        correct += int((out.argmax(1) == yb).sum())
                    loss.backward()
                    opt.step()
                    sched.step()
                    loss_sum += float(loss.detach()) * len(idx)
                    done += 1
                    progress(f"fine-tuning epoch {epoch + 1}/{self.epochs}", done / total)
                entry = {"epoch": epoch + 1, "loss": loss_sum / n}
                if not distill:
                    entry["train_accuracy"] = correct / n
                log.append(entry)
            if distill:
                result["distill_mse_after"] = self._distill_mse(module, teacher, raw, spec,
                                                                shape, where)
        finally:
            torch.use_deterministic_algorithms(was_det)
            module.eval()
        out = {"epochs": log, "rows": n, "steps": total, "seconds": time.perf_counter() - t0}
        if distill:
            out["loss"] = DISTILL_MSE
            out.update(result)
        return out

    def _distill_mse(self, module, teacher, raw: np.ndarray, spec: dict[str, Any],
                     shape: tuple[int, ...], where: str) -> float:
        """The distillation loss over all rows in eval mode (what the training lowers)."""
        torch = require_torch()
        module.eval()
        total = 0.0
        with torch.no_grad():
            for a in range(0, len(raw), self.batch_size):
                xb = torch.from_numpy(model_batch(raw[a:a + self.batch_size], spec, shape, where))
                total += float(_mse_sum(_flat(module(xb)), _flat(teacher(xb)))) * len(xb)
        return total / len(raw)


def _mse_sum(outs: list, refs: list):
    """Sum over outputs of the mean squared error (each output weighs the same)."""
    torch = require_torch()
    return sum(torch.nn.functional.mse_loss(o, r) for o, r in zip(outs, refs))


# -- the pass -------------------------------------------------------------------------------------

@dataclass
class ChannelPrunePass:
    """``parent`` must be the ONNX export of ``model`` (see :func:`export_root`)."""
    model: TorchModel
    channels: float
    importance: str = "l1"
    scope: str = "layer"
    keep_layers: list[str] = field(default_factory=list)
    round_to: int | None = None
    finetune: FineTune | None = None
    eval_data: Dataset | None = None          # evaluation rows: accuracy before/after
    #                                           (a single-output classifier's; labelled)
    spec: dict[str, Any] | None = None        # worker spec of the root's InputSpec
    progress: Progress = field(default=lambda desc, frac: None)
    name: str = "prune-channels"
    out_format: str = "onnx"

    def __post_init__(self) -> None:
        self.channels = check_fraction(self.channels, "--channels")
        if self.importance not in IMPORTANCES:
            raise InputError(f"--importance {self.importance!r} must be l1 or l2")
        if self.scope not in ("layer", "global"):
            raise InputError(f"--scope {self.scope!r} must be layer or global")
        if self.round_to is not None and not 1 <= self.round_to <= 1024:
            raise InputError(f"--round-to {self.round_to}: must be between 1 and 1024")
        names = dict(self.model.module.named_modules())
        unknown = [n for n in self.keep_layers if n not in names]
        if unknown:
            raise InputError(f"--keep-layers: no module named {', '.join(unknown)} "
                             f"(layers: {', '.join(list(layer_widths(self.model.module))[:8])}...)")
        self.output_layers = output_layers(self.model.module, self.model.example_shape)
        self.protected = sorted(set(self.output_layers) | set(self.keep_layers))
        self._check_data()

    @property
    def classes(self) -> int | None:
        """The class count of a single-output classifier (one (N, classes) output), else None."""
        outs = self.model.output_shapes
        return outs[0][1] if len(outs) == 1 and len(outs[0]) == 2 else None

    def _check_data(self) -> None:
        """Data that does not fit the model is refused before anything is exported or cached.
        Picks the fine-tuning loss: cross-entropy for a single-output classifier with labels,
        else distillation against the unpruned model."""
        shape, classes = self.model.example_shape, self.classes
        for flag, ds in (("--data", self.eval_data),
                         ("--finetune", self.finetune.data if self.finetune else None)):
            if ds is None:
                continue
            supervised = classes is not None and (flag == "--data" or ds.y is not None)
            if supervised and ds.y is None:
                raise InputError(f"{flag} {ds.path.name}: has no labels 'y'; accuracy needs them")
            if supervised and (int(ds.y.max()) >= classes or int(ds.y.min()) < 0):
                raise InputError(f"{flag} {ds.path.name}: labels range {int(ds.y.min())}.."
                                 f"{int(ds.y.max())} but the model has {classes} classes")
            if flag == "--finetune":
                self.finetune = replace(self.finetune,
                                        loss=CROSS_ENTROPY if supervised else DISTILL_MSE)
            raw = _raw(ds)
            model_batch(raw[:2], _row_spec(self.spec, raw, shape), shape, f"{flag} {ds.path.name}")

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"channels": self.channels, "importance": self.importance,
                               "scope": self.scope, "protected_layers": self.protected,
                               "source": self.model.source()}
        if self.round_to:
            cfg["round_to"] = self.round_to
        if self.finetune is not None:
            cfg["finetune"] = self.finetune.config()
        return cfg

    def tool_versions(self) -> dict[str, str]:
        return tool_versions()

    def label(self) -> str:
        s = f"channels -{self.channels:.0%}"
        if self.round_to:
            s += f" round-to {self.round_to}"
        if self.finetune is not None:
            s += f" finetuned {self.finetune.epochs}ep"
            if self.finetune.loss == DISTILL_MSE:
                s += " (distilled)"
        return s

    def run(self, parent: Variant, out_path: Path) -> dict[str, Any]:
        from ..modelinfo import onnx_info

        mdl, shape = self.model, self.model.example_shape
        self.progress("pruning channels", 0.0)
        pruned = prune_channels(mdl.module, shape, self.channels, self.importance, self.scope,
                                self.protected, self.round_to)
        outs = [list(o.shape) for o in check_example(pruned, shape, "the pruned model")]
        names = output_names(mdl.output_shapes)
        if outs != mdl.output_shapes:
            changed = [f"{n} {'x'.join(map(str, a))} -> {'x'.join(map(str, b))}"
                       for n, a, b in zip(names, mdl.output_shapes, outs) if a != b]
            raise InputError(f"pruning changed the output shape ({'; '.join(changed) or outs}) "
                             f"although {', '.join(self.protected) or 'no layer'} kept their "
                             "width; protect the layer feeding it with --keep-layers NAME")
        before, after = layer_widths(mdl.module), layer_widths(pruned)
        layers = [{"layer": k, "type": v["type"], "out_before": v["out"],
                   "out_after": after[k]["out"], "in_before": v["in"], "in_after": after[k]["in"]}
                  for k, v in before.items()]
        extra: dict[str, Any] = {"channels_requested": self.channels, "layers": layers,
                                 "protected_layers": self.protected,
                                 "output_layers": self.output_layers,
                                 "output_shapes": mdl.output_shapes}
        notes: list[str] = []
        distill = self.finetune is not None and self.finetune.loss == DISTILL_MSE
        if distill:
            why = (f"it returns {len(names)} outputs" if len(names) > 1 else
                   "its output is not (N, classes)" if self.classes is None else
                   f"{self.finetune.data.path.name} has no labels 'y'")
            notes.append(f"fine-tuned by distillation ({why}): the sum over its {len(names)} "
                         "output(s) of the MSE between the pruned and the unpruned model, on the "
                         "fine-tuning rows; labels are not used")
        measure_acc = self.eval_data is not None and self.classes is not None
        if self.eval_data is not None and not measure_acc:
            notes.append(f"accuracy skipped: the model returns {len(names)} output(s) "
                         f"({', '.join('x'.join(map(str, o)) for o in mdl.output_shapes)}), not "
                         "one (N, classes) classifier output, so top-1 has no meaning; fidelity "
                         "against the unpruned root still measures how far the outputs moved")
        odd = sorted({r["out_after"] for r in layers
                      if r["out_after"] != r["out_before"] and r["out_after"] % 8})
        if odd:
            notes.append(f"pruned widths {', '.join(map(str, odd[:6]))} are not multiples of 8; "
                         "in onnxruntime on x86 such widths ran slower than the dense model (demo "
                         "CNN at -30 %: 11/22/44 channels 1.14x slower, -50 % with 8/16/32 "
                         "channels 0.52x), probably because its conv kernels work on blocks of "
                         "8-16 channels: measure it, or prune with --round-to 8")
        if mdl.weights_sha256 is None:
            notes.append("no --weights: the factory's initial weights were pruned")
        with tempfile.TemporaryDirectory(prefix="edgeprof-prune-") as scratch_dir:
            scratch = Path(scratch_dir)
            acc: dict[str, Any] = {}
            if measure_acc:
                self.progress("accuracy of the dense model", 0.02)
                acc = {"data_sha256": self.eval_data.sha256, "rows": self.eval_data.n,
                       "dense": onnx_accuracy(parent.path, self.eval_data, self.spec, scratch)}
            if self.finetune is not None:
                if measure_acc:
                    self.progress("accuracy of the pruned model", 0.06)
                    plain = scratch / "pruned.onnx"
                    export_onnx(pruned, shape, plain, names)
                    acc["pruned"] = onnx_accuracy(plain, self.eval_data, self.spec, scratch)
                train_spec = _row_spec(self.spec, _raw(self.finetune.data), shape)
                extra["finetune"] = self.finetune.run(
                    pruned, train_spec, shape,
                    lambda desc, frac: self.progress(desc, 0.1 + 0.8 * frac),
                    teacher=mdl.module if distill else None)
            self.progress("exporting to ONNX", 0.92)
            export_onnx(pruned, shape, out_path, names)
            if measure_acc:
                self.progress("accuracy of the pruned model", 0.95)
                acc["finetuned" if self.finetune is not None else "pruned"] = onnx_accuracy(
                    out_path, self.eval_data, self.spec, scratch)
                extra["accuracy"] = acc
        dense_info, info = onnx_info(str(parent.path)), onnx_info(str(out_path))
        extra.update(macs_before=dense_info["macs"], macs_after=info["macs"],
                     params_before=dense_info["params"], params_after=info["params"])
        if dense_info["macs"] and info["macs"] is not None:
            extra["macs_ratio"] = info["macs"] / dense_info["macs"]
        extra["params_ratio"] = info["params"] / dense_info["params"] if dense_info["params"] else None
        self.progress("done", 1.0)
        return {"notes": notes, "extra": extra}


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import onnx
    torch = require_torch()
    out = {"torch": torch.__version__, "onnx": onnx.__version__}
    try:  # torch_pruning.__version__ lags its wheel (1.6.1 reports 1.6.0): ask the metadata
        out["torch_pruning"] = version("torch-pruning")
    except PackageNotFoundError:  # pragma: no cover
        out["torch_pruning"] = getattr(require_torch_pruning(), "__version__", "unknown")
    return out


def export_root(cache, model: TorchModel, input_spec: dict[str, Any] | None) -> Variant:
    """Export the unpruned model to ONNX and register it as a root variant (the pruned variant's
    parent). The export is deterministic, so the same model and weights give the same root."""
    from ..models import open_model
    with tempfile.TemporaryDirectory(prefix="edgeprof-export-") as d:
        path = Path(d) / f"{model.factory.rpartition(':')[2] or 'model'}.onnx"
        export_onnx(model.module, model.example_shape, path, output_names(model.output_shapes))
        source = f"torch {model.factory}" + (f" weights sha256 {model.weights_sha256[:12]}"
                                             if model.weights_sha256 else " (factory weights)")
        return cache.register_root(open_model(path), input_spec=input_spec, source=source)
