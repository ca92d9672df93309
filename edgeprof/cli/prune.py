"""``edgeprof prune``: unstructured magnitude pruning of an ONNX model (``--sparsity``), or
structured channel pruning of a PyTorch model (``--torch ... --channels``) with optional
fine-tuning (``--finetune``); each result is a cached variant with its lineage."""
from __future__ import annotations

from pathlib import Path

import click


def _names(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


@click.command("prune")
@click.argument("model", required=False)
@click.option("--sparsity", help="Unstructured: fraction of Conv/Gemm/MatMul weights to zero "
              "(0.5 or 50%).")
@click.option("--scope", type=click.Choice(["global", "layer"]),
              help="One magnitude threshold over all layers, or the same fraction in each layer "
                   "[default: global for --sparsity, layer for --channels].")
@click.option("--torch", "torch_factory", metavar="MODULE:FACTORY",
              help="Structured: a PyTorch model factory, e.g. edgeprof.demo.model:fashion_cnn.")
@click.option("--weights", type=click.Path(path_type=Path), help="state_dict for --torch (.pt).")
@click.option("--example-shape", help="Input shape for --torch, e.g. 1x1x28x28.")
@click.option("--channels", help="Structured: fraction of channels to remove (0.5 or 50%).")
@click.option("--importance", type=click.Choice(["l1", "l2"]), default="l1", show_default=True,
              help="Channel importance: L1 or L2 norm of its weights.")
@click.option("--keep-layers", help="Modules that keep their output width (comma-separated "
              "names); every layer feeding a model output is always kept.")
@click.option("--round-to", type=int, help="Keep every pruned width a multiple of this (e.g. 8): "
              "odd widths can run slower than dense on x86 kernels.")
@click.option("--finetune", type=click.Path(path_type=Path),
              help="Fine-tune after pruning on this TRAIN data: cross-entropy for a "
                   "single-output classifier with labels y, else distillation (MSE against the "
                   "unpruned model's outputs).")
@click.option("--epochs", default=1, show_default=True, type=int)
@click.option("--lr", default=1e-3, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--data", type=click.Path(path_type=Path),
              help="Labelled evaluation data: accuracy (--torch) and fidelity.")
@click.option("--calib", type=click.Path(path_type=Path),
              help="Fidelity data from the train split, when there is no --data.")
@click.option("--fidelity-rows", default=500, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--preprocess", type=click.Path(path_type=Path), help="InputSpec TOML of the root model.")
@click.option("--cache-dir", type=click.Path(path_type=Path))
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the variant record.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def prune(model: str | None, sparsity: str | None, scope: str | None, torch_factory: str | None,
          weights: Path | None, example_shape: str | None, channels: str | None, importance: str,
          keep_layers: str | None, round_to: int | None, finetune: Path | None, epochs: int,
          lr: float, seed: int,
          data: Path | None, calib: Path | None, fidelity_rows: int, preprocess: Path | None,
          cache_dir: Path | None, json_out: Path | None, quiet: bool) -> None:
    """Prune MODEL (an .onnx path or a variant id) with --sparsity, or a PyTorch model
    (--torch) with --channels, into a cached variant.

    Zeroed weights (--sparsity) make no model faster in onnxruntime; only the compressed size
    drops. Removing channels (--channels) makes it smaller and faster."""
    import json
    import tempfile

    from ..data import check_disjoint, load_npz
    from ..errors import InputError
    from ..measure.fidelity import FidelityEvaluator
    from ..passes.base import apply_pass
    from ..passes.prune import check_fraction
    from ..report.terminal import print_variant, terminal_console
    from ..results import check_writable
    from ..units import parse_fraction
    from ..variants.cache import Cache
    from ..variants.family import open_variant, spec_for_worker
    from .progress import progress_bar

    structured = torch_factory is not None
    if structured == (model is not None):
        raise InputError("give either MODEL (.onnx, with --sparsity) or --torch MODULE:FACTORY "
                         "(with --channels)")
    if structured:
        if channels is None:
            raise InputError("--torch prunes channels: give --channels FRACTION (e.g. 0.5)")
        if sparsity is not None:
            raise InputError("--sparsity zeroes weights of an ONNX MODEL; with --torch use --channels")
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
    frac = check_fraction(parse_fraction(channels if structured else sparsity,
                                         "--channels" if structured else "--sparsity"),
                          "--channels" if structured else "--sparsity")
    if json_out:
        check_writable(json_out, "--json")
    eval_ds = load_npz(data) if data else None
    calib_ds = load_npz(calib) if calib else None
    ft_ds = load_npz(finetune) if finetune else None
    if eval_ds is not None:
        for what, ds in (("calibration", calib_ds), ("fine-tuning", ft_ds)):
            if ds is not None:
                check_disjoint(ds, eval_ds, what)
    cache = Cache(cache_dir)
    console = terminal_console()
    with tempfile.TemporaryDirectory(prefix="edgeprof-prune-") as scratch, \
            progress_bar(quiet) as progress:
        progress("loading the model", 0.0)
        if structured:
            from ..inputspec import load_spec
            from ..passes.structured import ChannelPrunePass, FineTune, export_root
            from ..passes.torch_load import load_torch_model, require_torch_pruning

            require_torch_pruning()
            tm = load_torch_model(torch_factory, weights, example_shape)
            spec = load_spec(preprocess).to_dict() if preprocess else None
            first = ft_ds or eval_ds or calib_ds
            raw_dtype = next(iter(first.x.values())).dtype.name if first else "uint8"
            ft = FineTune(ft_ds, epochs=epochs, lr=lr, seed=seed) if ft_ds is not None else None
            p = ChannelPrunePass(tm, frac, importance=importance, scope=scope or "layer",
                                 keep_layers=_names(keep_layers), round_to=round_to,
                                 finetune=ft, eval_data=eval_ds,
                                 spec=spec_for_worker(spec, raw_dtype), progress=progress)
            # every input is checked: only now is anything written to the cache
            parent = export_root(cache, tm, spec)
            root = parent
        else:
            from ..passes.prune import PrunePass
            p = PrunePass(frac, scope or "global")
            parent, root = open_variant(cache, model, preprocess)
            if parent.format != "onnx":
                raise InputError(f"{parent.label}: unstructured pruning takes an ONNX model")
        fid_ds = eval_ds or calib_ds
        fidelity = None
        if fid_ds is not None:
            fidelity = FidelityEvaluator(fid_ds, fidelity_rows, Path(scratch)).hook(
                parent, root, "evaluation" if eval_ds is not None else "calibration")
        v, reused = apply_pass(cache, parent, p, fidelity)
    print_variant(v, reused, console, lineage=cache.lineage(v))
    if structured:
        _print_structured(v, console, eval_ds, reused)
    else:
        _print_unstructured(v, console)
    if json_out:
        from ..storage import write_text
        write_text(json_out, json.dumps(v.to_json(), indent=1) + "\n", "--json")


def _print_unstructured(v, console) -> None:
    from rich import box
    from rich.table import Table

    from ..units import fmt_bytes
    x = v.extra
    console.print(f"[bold]achieved sparsity per layer[/] (requested {x['sparsity_requested']:.1%}, "
                  f"{v.config['scope']} scope)", highlight=False)
    t = Table(box=box.SIMPLE_HEAD)
    for col in ("node", "weight", "op", "shape", "params", "zeros", "sparsity"):
        t.add_column(col, justify="right" if col in ("params", "zeros", "sparsity") else "left")
    for r in x["layers"]:
        t.add_row(", ".join(r["nodes"]), r["tensor"], r["op"], "x".join(map(str, r["shape"])),
                  f"{r['params']:,}", f"{r['zeros']:,}", f"{r['sparsity']:.1%}")
    t.add_row("all", "", "", "", f"{x['pruned_params']:,}", f"{x['zero_params']:,}",
              f"{x['sparsity_achieved']:.1%}")
    console.print(t)
    console.print(f"  size {fmt_bytes(x['model_bytes'])} (dense {fmt_bytes(x['parent_model_bytes'])}); "
                  f"zlib {fmt_bytes(x['zlib_bytes'])} (dense {fmt_bytes(x['parent_zlib_bytes'])}): "
                  "only the compressed size drops", highlight=False)


def _print_structured(v, console, eval_ds, reused: bool) -> None:
    from rich import box
    from rich.table import Table
    x = v.extra
    console.print(f"[bold]channels per layer[/] (requested -{x['channels_requested']:.0%}; output "
                  f"width kept: {', '.join(x['protected_layers']) or '-'})", highlight=False)
    t = Table(box=box.SIMPLE_HEAD)
    for col in ("layer", "type", "in", "out"):
        t.add_column(col, justify="left" if col in ("layer", "type") else "right")
    for r in x["layers"]:
        t.add_row(r["layer"], r["type"], f"{r['in_before']} -> {r['in_after']}",
                  f"{r['out_before']} -> {r['out_after']}")
    console.print(t)
    if x.get("macs_before") and x.get("macs_after") is not None:
        console.print(f"  MACs {x['macs_before']:,} -> {x['macs_after']:,} "
                      f"({x['macs_after'] / x['macs_before']:.1%}); params {x['params_before']:,} "
                      f"-> {x['params_after']:,} ({x['params_ratio']:.1%})", highlight=False)
    acc = x.get("accuracy")
    if acc:
        console.print(f"[bold]top-1 accuracy[/] on the evaluation data ({acc['rows']} rows, "
                      "onnxruntime)", highlight=False)
        t = Table(box=box.SIMPLE_HEAD)
        for col in ("model", "accuracy", "95 % CI", "n"):
            t.add_column(col, justify="left" if col == "model" else "right")
        for key, name in (("dense", "dense"), ("pruned", "pruned"), ("finetuned", "pruned + fine-tuned")):
            if key in acc:
                r = acc[key]
                t.add_row(name, f"{r['accuracy']:.2%}",
                          f"{r['accuracy_ci'][0]:.2%} .. {r['accuracy_ci'][1]:.2%}", str(r["n"]))
        console.print(t)
        if reused and eval_ds is not None and eval_ds.sha256 != acc["data_sha256"]:
            console.print(f"  note: this variant came from the cache; its accuracy was measured on "
                          f"data {acc['data_sha256'][:12]}, not on {eval_ds.path.name}",
                          highlight=False)
    ft = x.get("finetune")
    if ft and ft.get("loss") == "distill-mse":
        last = ft["epochs"][-1]
        console.print(f"  fine-tuned by distillation {len(ft['epochs'])} epoch(s) on {ft['rows']} "
                      f"rows in {ft['seconds']:.1f} s; MSE against the unpruned model "
                      f"{ft['distill_mse_before']:.4g} -> {ft['distill_mse_after']:.4g} (last "
                      f"epoch training loss {last['loss']:.4g})", highlight=False)
    elif ft:
        last = ft["epochs"][-1]
        console.print(f"  fine-tuned {len(ft['epochs'])} epoch(s) on {ft['rows']} rows in "
                      f"{ft['seconds']:.1f} s; last epoch loss {last['loss']:.4f}, train accuracy "
                      f"{last['train_accuracy']:.2%}", highlight=False)
