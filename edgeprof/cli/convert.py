"""``edgeprof convert``: PyTorch -> ONNX (a root variant) and ONNX -> TFLite in up to five
precisions (one converter run), each checked for parity against its ONNX parent."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import click


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
            preprocess: Path | None, out: Path | None, no_install: bool, cache_dir: Path | None,
            json_out: Path | None) -> None:
    """Convert MODEL (an .onnx path or a variant id), or a PyTorch factory (--torch), into cached
    variants. TFLite variants take NHWC input; their InputSpec records it."""
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
    cache = Cache(cache_dir)
    console = terminal_console()
    records = []
    if torch_factory:
        root = _export_torch(cache, torch_factory, weights, example_shape, static_batch,
                             preprocess, out if to == "onnx" else None, console)
        records.append(root)
        model, preprocess = root.id, None
    if to == "tflite":
        records += _to_tflite(cache, model, precision, per_channel, calib, calib_rows, data,
                              fidelity_rows, preprocess, out, not no_install, console)
    if json_out:
        from ..storage import write_text
        write_text(json_out, json.dumps([v.to_json() for v in records], indent=1) + "\n", "--json")


def _export_torch(cache, factory: str, weights: Path | None, example_shape: str | None,
                  static_batch: bool, preprocess: Path | None, out: Path | None, console):
    from ..errors import InputError
    from ..inputspec import load_spec
    from ..models import open_model
    from ..passes.torch_load import export_with_parity, load_torch_model

    if not example_shape:
        raise InputError("--torch needs --example-shape, e.g. 1x3x224x224")
    spec = load_spec(preprocess).to_dict() if preprocess else None
    model = load_torch_model(factory, weights, example_shape)
    with tempfile.TemporaryDirectory(prefix="edgeprof-export-") as tmp:
        path = Path(tmp) / f"{factory.rpartition(':')[2]}.onnx"
        info = export_with_parity(model, path, static_batch)
        src = f"torch {factory}" + (f" weights {weights}" if weights else " (untrained: no --weights)")
        v = cache.register_root(open_model(path), input_spec=spec, source=src)
    info["factory"] = factory
    info["weights"] = str(weights) if weights else None
    v.extra["torch_export"] = info
    cache.update(v)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(v.path, out)
    par = info["parity"]
    console.print(f"[bold]{v.short_id}[/]  {v.label}  (ONNX opset {info['opset']}, "
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
    if not weights:
        console.print("  [yellow]warning[/] no --weights: the factory's untrained weights were "
                      "exported", highlight=False)
    return v


def _to_tflite(cache, model: str, precision: str, per_channel: bool, calib: Path | None,
               calib_rows: int, data: Path | None, fidelity_rows: int, preprocess: Path | None,
               out: Path | None, install: bool, console) -> list:
    from rich import box
    from rich.table import Table

    from ..data import check_disjoint, load_npz
    from ..errors import InputError
    from ..measure.fidelity import FidelityEvaluator
    from ..passes.base import apply_pass
    from ..passes.convert import check_tolerance, synthetic_dataset
    from ..passes.tflite import (QUANTIZED, ConverterRun, TflitePass, check_convertible,
                                 parse_precisions)
    from ..modelinfo import onnx_inputs
    from ..report.terminal import print_variant
    from ..units import fmt_bytes
    from ..variants.family import open_variant, spec_for_worker

    precisions = parse_precisions(precision)
    parent, root = open_variant(cache, model, preprocess)
    if parent.format != "onnx":
        raise InputError(f"{parent.label}: convert --to tflite takes an ONNX model "
                         f"(this variant is {parent.format})")
    check_convertible(parent.path, f"{parent.short_id} ({parent.label})")
    if out and len(precisions) > 1 and out.suffix == ".tflite":
        raise InputError(f"-o {out}: several precisions need a folder, not a .tflite file")
    calib_ds = load_npz(calib) if calib else None
    eval_ds = load_npz(data) if data else None
    if calib_ds is not None and eval_ds is not None:
        check_disjoint(calib_ds, eval_ds, "calibration")
    raw_dtype = next(iter(calib_ds.x.values())).dtype.name if calib_ds else "uint8"
    run = ConverterRun(cache=cache, parent=parent, calib=calib_ds, calib_rows=calib_rows,
                       quantize=any(p in QUANTIZED for p in precisions), per_channel=per_channel,
                       worker_spec=spec_for_worker(parent.input_spec, raw_dtype), say=_say,
                       install=install)
    passes = [TflitePass(p, run) for p in precisions]  # option errors before any work
    records = []
    with tempfile.TemporaryDirectory(prefix="edgeprof-c-") as scratch:
        fid_ds, role = eval_ds, "evaluation"
        if fid_ds is None:
            fid_ds, role = calib_ds, "calibration"
        if fid_ds is None:
            fid_ds, role = synthetic_dataset(Path(scratch) / "synthetic.npz",
                                             onnx_inputs(parent.path), parent.input_spec), "synthetic"
        base = FidelityEvaluator(fid_ds, fidelity_rows, Path(scratch)).hook(parent, root, role)

        def fidelity(path, v):
            res = base(path, v)
            verdict, warning = check_tolerance(v.config["precision"], res)
            res["tolerance"] = verdict
            if warning:
                v.notes.append(warning)
            return res

        for p in passes:
            v, reused = apply_pass(cache, parent, p, fidelity)
            print_variant(v, reused, console, lineage=cache.lineage(v))
            for note in v.notes:
                if "misses its parity" in note or "parity unverified" in note:
                    _say(f"warning: {v.short_id} {note}")
            records.append(v)
    t = Table(title=f"TFLite variants of {parent.short_id} ({parent.label})", title_justify="left",
              box=box.SIMPLE_HEAD)
    for col in ("precision", "variant", "size", "parity metric", "value", "limit", "verdict"):
        t.add_column(col)
    for v in records:
        tol = v.fidelity.get("tolerance", {})
        vals = [x for x in tol.get("values", {}).values() if x is not None]
        worst = (max(vals) if tol.get("metric") == "relative_max_error" else min(vals)) if vals else None
        t.add_row(v.config["precision"], v.short_id, fmt_bytes(v.path.stat().st_size),
                  tol.get("metric", "-"), "-" if worst is None else f"{worst:.4g}",
                  f"{tol.get('limit', '-')}", tol.get("status", "-"))
    console.print(t)
    info = run.info() if (run.dir / "run.json").is_file() else None
    if info:
        console.print(f"converter run {run.key[:12]}: {info['converter_s']:.1f} s for "
                      f"{len(info['files'])} files; log {info['log']}", highlight=False)
    if out:
        _write_out(records, out)
    return records


def _write_out(records: list, out: Path) -> None:
    if len(records) == 1 and out.suffix == ".tflite":
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(records[0].path, out)
        return
    out.mkdir(parents=True, exist_ok=True)
    for v in records:
        shutil.copyfile(v.path, out / f"{v.label.replace(' ', '_')}.tflite")
