"""``edgeprof prune``: unstructured magnitude pruning of an ONNX model (``--sparsity``), or
structured channel pruning of a PyTorch model (``--torch ... --channels``) with optional
fine-tuning (``--finetune``); each result is a cached variant with its lineage."""
from __future__ import annotations

from pathlib import Path

import click

from .quantize import METRIC_HELP, print_task_metric


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
@click.option("--metric", metavar="NAME", help=METRIC_HELP)
@click.option("--preprocess", type=click.Path(path_type=Path), help="InputSpec TOML of the root model.")
@click.option("--cache-dir", type=click.Path(path_type=Path))
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the variant record.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def prune(model: str | None, sparsity: str | None, scope: str | None, torch_factory: str | None,
          weights: Path | None, example_shape: str | None, channels: str | None, importance: str,
          keep_layers: str | None, round_to: int | None, finetune: Path | None, epochs: int,
          lr: float, seed: int,
          data: Path | None, calib: Path | None, fidelity_rows: int, metric: str | None,
          preprocess: Path | None, cache_dir: Path | None, json_out: Path | None,
          quiet: bool) -> None:
    """Prune MODEL (an .onnx path or a variant id) with --sparsity, or a PyTorch model
    (--torch) with --channels, into a cached variant.

    Zeroed weights (--sparsity) make no model faster in onnxruntime; only the compressed size
    drops. Removing channels (--channels) makes it smaller and faster."""
    from .. import make
    from ..data import load_npz
    from ..report.terminal import terminal_console
    from ..results import check_writable
    from .progress import progress_bar
    from .quantize import show_variant

    if json_out:
        check_writable(json_out, "--json")
    console = terminal_console()
    with progress_bar(quiet) as progress:
        v = make.prune(model, sparsity=sparsity, channels=channels, scope=scope,
                       torch=torch_factory, weights=weights, example_shape=example_shape,
                       importance=importance, keep_layers=keep_layers, round_to=round_to,
                       finetune=finetune, epochs=epochs, lr=lr, seed=seed, data=data,
                       calib=calib, fidelity_rows=fidelity_rows, metric=metric,
                       preprocess=preprocess, cache_dir=cache_dir, progress=progress)
    show_variant(v, console, cache_dir, None, json_out)
    if torch_factory is not None:
        _print_structured(v, console, load_npz(data) if data else None, v.reused)
    else:
        _print_unstructured(v, console)
    if metric:
        from ..metrics import get_metric
        print_task_metric((v.fidelity.get("metrics") or {}).get(get_metric(metric).name), console)


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
