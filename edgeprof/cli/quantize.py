"""``edgeprof quantize``: int8 (static/dynamic) and fp16 variants of an ONNX model, with
fidelity against the parent and the fp32 root, and per-layer sensitivity."""
from __future__ import annotations

from pathlib import Path

import click


def _names(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


@click.command("quantize")
@click.argument("model")
@click.option("--precision", required=True, type=click.Choice(["int8-static", "int8-dynamic", "fp16"]))
@click.option("--format", "fmt", type=click.Choice(["qdq", "qoperator"]), default="qdq",
              show_default=True)
@click.option("--per-channel/--per-tensor", default=True, show_default=True)
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]),
              default="minmax", show_default=True)
@click.option("--calib", type=click.Path(path_type=Path), help="Calibration data (train split).")
@click.option("--calib-rows", default=200, show_default=True, type=int)
@click.option("--data", type=click.Path(path_type=Path),
              help="Evaluation data for fidelity (default: the calibration data).")
@click.option("--fidelity-rows", default=500, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--preprocess", type=click.Path(path_type=Path), help="InputSpec TOML of the root model.")
@click.option("--types", default="S8S8", show_default=True,
              type=click.Choice(["S8S8", "U8S8", "U8U8"], case_sensitive=False),
              help="int8-static activation/weight types.")
@click.option("--reduce-range", is_flag=True,
              help="7-bit weights: avoids u8s8 saturation on x86 CPUs without VNNI.")
@click.option("--weight-type", type=click.Choice(["uint8", "int8"]), default="uint8",
              show_default=True, help="int8-dynamic weight type.")
@click.option("--exclude-nodes", help="Keep these nodes in float (comma-separated names).")
@click.option("--exclude-ops", help="Keep these operator types in float, e.g. Gemm.")
@click.option("--sensitivity", is_flag=True, help="Rank layers by the error their quantization adds.")
@click.option("--sensitivity-rows", default=64, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--cache-dir", type=click.Path(path_type=Path))
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the variant record.")
def quantize(model: str, precision: str, fmt: str, per_channel: bool, calib_method: str,
             calib: Path | None, calib_rows: int, data: Path | None, fidelity_rows: int,
             preprocess: Path | None, types: str, reduce_range: bool, weight_type: str,
             exclude_nodes: str | None, exclude_ops: str | None,
             sensitivity: bool, sensitivity_rows: int, cache_dir: Path | None,
             json_out: Path | None) -> None:
    """Quantize MODEL (an .onnx path or a variant id) into a cached variant."""
    import json
    import tempfile

    from ..data import check_disjoint, load_npz
    from ..errors import InputError
    from ..measure.fidelity import FidelityEvaluator
    from ..passes.base import apply_pass
    from ..passes.quantize import QuantizePass, calibration_batches
    from ..report.terminal import print_variant, terminal_console
    from ..results import check_writable
    from ..variants.cache import Cache
    from ..variants.family import open_variant, spec_for_worker

    if json_out:
        check_writable(json_out, "--json")
    cache = Cache(cache_dir)
    parent, root = open_variant(cache, model, preprocess)
    if parent.format != "onnx":
        raise InputError(f"{parent.label}: quantize takes an ONNX model; TFLite precisions come "
                         "from `edgeprof convert --to tflite --precision ...`")
    calib_ds = load_npz(calib) if calib else None
    eval_ds = load_npz(data) if data else None
    if calib_ds is not None and eval_ds is not None:
        check_disjoint(calib_ds, eval_ds, "calibration")
    fid_ds = eval_ds or calib_ds
    raw_dtype = next(iter(calib_ds.x.values())).dtype.name if calib_ds else "uint8"
    p = QuantizePass(precision=precision, per_channel=per_channel, format=fmt,
                     calib_method=calib_method, calib=calib_ds, calib_rows=calib_rows,
                     spec=spec_for_worker(root.input_spec, raw_dtype),
                     exclude_nodes=_names(exclude_nodes), exclude_ops=_names(exclude_ops),
                     types=types, reduce_range=reduce_range, dynamic_weight_type=weight_type)
    console = terminal_console()
    with tempfile.TemporaryDirectory(prefix="edgeprof-q-") as scratch:
        fidelity = None
        if fid_ds is not None:
            fidelity = FidelityEvaluator(fid_ds, fidelity_rows, Path(scratch)).hook(
                parent, root, "evaluation" if eval_ds is not None else "calibration")
        v, reused = apply_pass(cache, parent, p, fidelity)
        if sensitivity:
            if precision != "int8-static":
                raise InputError("--sensitivity analyses int8-static quantization")
            from ..passes.sensitivity import layer_sensitivity
            spec = spec_for_worker(root.input_spec, raw_dtype)
            cal = calibration_batches(parent.path, calib_ds, spec, min(calib_rows, 64))
            ev_ds = eval_ds or calib_ds
            evf = calibration_batches(parent.path, ev_ds, spec_for_worker(
                root.input_spec, next(iter(ev_ds.x.values())).dtype.name), sensitivity_rows)
            v.extra["sensitivity"] = layer_sensitivity(parent.path, cal, evf, per_channel, fmt,
                                                       calib_method)
            cache.update(v)
    print_variant(v, reused, console, lineage=cache.lineage(v))
    if json_out:
        from ..storage import write_text
        write_text(json_out, json.dumps(v.to_json(), indent=1) + "\n", "--json")
