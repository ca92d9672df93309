"""``edgeprof convert``: PyTorch -> ONNX (a root variant) and ONNX -> TFLite in up to five
precisions (one converter run), each checked for parity against its ONNX parent."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from .quantize import METRIC_HELP, print_task_metric


def _say(msg: str) -> None:
    click.echo(msg, err=True)


@click.command("convert")
@click.argument("model", required=False)
@click.option("--to", "to", required=True, type=click.Choice(["onnx", "tflite"]),
              help="Target format.")
@click.option("--torch", "torch_factory", metavar="MODULE:FACTORY",
              help="PyTorch model factory, e.g. edgeprof.demo.model:fashion_cnn (instead of MODEL).")
@click.option("--weights", type=click.Path(path_type=Path),
              help="State dict for the factory's model (loaded with weights_only=True).")
@click.option("--example-shape", metavar="1x3x224x224", help="Input shape for the export.")
@click.option("--static-batch", is_flag=True, help="Export with a fixed batch (default: dynamic "
              "batch axis 0).")
@click.option("--precision", default="fp32", show_default=True,
              help="TFLite precisions, comma-separated: fp32,fp16,int8-dynamic,int8-static,int16x8.")
@click.option("--per-channel/--per-tensor", default=True, show_default=True,
              help="Weight quantization granularity of the integer TFLite models.")
@click.option("--calib", type=click.Path(path_type=Path),
              help="Calibration data (train split) for int8-static and int16x8.")
@click.option("--calib-rows", default=200, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--data", type=click.Path(path_type=Path),
              help="Evaluation data for the parity check (default: the calibration data).")
@click.option("--fidelity-rows", default=500, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--metric", metavar="NAME", help=METRIC_HELP)
@click.option("--preprocess", type=click.Path(path_type=Path), help="InputSpec TOML of the root model.")
@click.option("-o", "--out", type=click.Path(path_type=Path),
              help="Also write the result here: a file (.onnx, or .tflite for one precision) or "
                   "a folder for several precisions.")
@click.option("--no-install", is_flag=True,
              help="Fail instead of installing the converter environment on first use.")
@click.option("--cache-dir", type=click.Path(path_type=Path))
@click.option("--json", "json_out", type=click.Path(path_type=Path),
              help="Write the variant records (a JSON list).")
def convert(model: str | None, to: str, torch_factory: str | None, weights: Path | None,
            example_shape: str | None, static_batch: bool, precision: str, per_channel: bool,
            calib: Path | None, calib_rows: int, data: Path | None, fidelity_rows: int,
            metric: str | None, preprocess: Path | None, out: Path | None, no_install: bool,
            cache_dir: Path | None, json_out: Path | None) -> None:
    """Convert MODEL (an .onnx path or a variant id), or a PyTorch factory (--torch), into cached
    variants. TFLite variants take NHWC input; their InputSpec records it."""
    from .. import make
    from ..errors import InputError
    from ..report.terminal import terminal_console
    from ..results import check_writable
    from ..variants.cache import Cache

    if json_out:
        check_writable(json_out, "--json")
    if bool(model) == bool(torch_factory):
        raise InputError("give either MODEL (an .onnx file or variant id) or --torch MODULE:FACTORY")
    if torch_factory is None and (weights or example_shape or static_batch):
        raise InputError("--weights, --example-shape and --static-batch apply to --torch exports")
    if to == "onnx" and torch_factory is None:
        raise InputError("--to onnx converts a PyTorch model: give --torch MODULE:FACTORY")
    if metric and to != "tflite":
        raise InputError("--metric scores converted variants against their parent: use it with "
                         "--to tflite")
    if to == "tflite" and out and out.suffix == ".tflite":
        from ..passes.tflite import parse_precisions
        if len(parse_precisions(precision)) > 1:
            raise InputError(f"-o {out}: several precisions need a folder, not a .tflite file")
    console = terminal_console()
    made = []
    if torch_factory:
        root = make.export_torch(torch_factory, example_shape=example_shape, weights=weights,
                                 static_batch=static_batch, preprocess=preprocess,
                                 cache_dir=cache_dir)
        if out and to == "onnx":
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root.path, out)
        _print_export(root, out if to == "onnx" else None, console)
        made.append(root)
        model, preprocess = root.id, None
    if to == "tflite":
        variants = make.convert(model, precision=precision, per_channel=per_channel, calib=calib,
                                calib_rows=calib_rows, data=data, fidelity_rows=fidelity_rows,
                                metric=metric, preprocess=preprocess, install=not no_install,
                                cache_dir=cache_dir, progress=lambda msg, _f: _say(msg))
        _print_tflite(variants, cache_dir, metric, console)
        if out:
            _write_out(variants, out)
        made += variants
    if json_out:
        from ..storage import write_text
        cache = Cache(cache_dir)
        write_text(json_out, json.dumps([cache.get(v.id).to_json() for v in made], indent=1)
                   + "\n", "--json")


def _print_export(v, out: Path | None, console) -> None:
    info = v.extra["torch_export"]
    par = info["parity"]
    console.print(f"[bold]{v.short_id}[/]  {v.name}  (ONNX opset {info['opset']}, "
                  f"{'dynamic' if info['dynamic_batch'] else 'static'} batch)", highlight=False)
    console.print(f"  file: {v.path}" + (f" (also {out})" if out else ""), highlight=False)
    batches = ", ".join(str(b) for b in sorted({c["batch"] for c in par["checks"]}))
    console.print(f"  parity vs PyTorch on random input (batch {batches}): "
                  f"max abs error {par['max_abs_error']:.3g}, {par['relative_max_error']:.2e} of "
                  f"the output range", highlight=False)
    if not par["passed"]:
        console.print(f"  [yellow]warning[/] export parity misses {par['tolerance_relative']:g} "
                      "relative: the ONNX model computes something else than PyTorch",
                      highlight=False)
    if not info.get("weights"):
        console.print("  [yellow]warning[/] no --weights: the factory's untrained weights were "
                      "exported", highlight=False)


def _print_tflite(variants: list, cache_dir, metric: str | None, console) -> None:
    from rich import box
    from rich.table import Table

    from ..metrics import get_metric
    from ..report.terminal import print_variant
    from ..units import fmt_bytes
    from ..variants.cache import Cache

    cache = Cache(cache_dir)
    for v in variants:
        cached = cache.get(v.id)
        print_variant(cached, v.reused, console, lineage=cache.lineage(cached))
        for note in v.notes:
            if "misses its parity" in note or "parity unverified" in note:
                _say(f"warning: {v.short_id} {note}")
        if metric:
            print_task_metric((v.fidelity.get("metrics") or {}).get(get_metric(metric).name),
                              console)
    parent = cache.get(variants[0].parent) if variants else None
    t = Table(title=f"TFLite variants of {parent.short_id} ({parent.label})" if parent else
              "TFLite variants", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("precision", "variant", "size", "parity metric", "value", "limit", "verdict"):
        t.add_column(col)
    for v in variants:
        tol = v.fidelity.get("tolerance", {})
        vals = [x for x in tol.get("values", {}).values() if x is not None]
        worst = (max(vals) if tol.get("metric") == "relative_max_error" else min(vals)) if vals else None
        t.add_row(v.config["precision"], v.short_id, fmt_bytes(v.path.stat().st_size),
                  tol.get("metric", "-"), "-" if worst is None else f"{worst:.4g}",
                  f"{tol.get('limit', '-')}", tol.get("status", "-"))
    console.print(t)
    key = variants[0].extra.get("converter_run") if variants else None
    run_json = cache.root / "data" / str(key) / "run.json"
    if key and run_json.is_file():
        info = json.loads(run_json.read_text())
        console.print(f"converter run {key[:12]}: {info['converter_s']:.1f} s for "
                      f"{len(info['files'])} files; log {info['log']}", highlight=False)


def _write_out(records: list, out: Path) -> None:
    if len(records) == 1 and out.suffix == ".tflite":
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(records[0].path, out)
        return
    out.mkdir(parents=True, exist_ok=True)
    for v in records:
        shutil.copyfile(v.path, out / f"{v.name.replace(' ', '_')}.tflite")
