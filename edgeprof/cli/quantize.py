"""``edgeprof quantize``: int8 (static/dynamic) and fp16 variants of an ONNX model, with
fidelity against the parent and the fp32 root, and per-layer sensitivity."""
from __future__ import annotations

from pathlib import Path

import click


METRIC_HELP = ("Also score the variant with this task metric against its parent and the fp32 "
               "root on --data: top1, topk:K, mae, rmse, miou (need labels), agreement[:output] "
               "(none), or module:function.")


def print_task_metric(res: dict | None, console) -> None:
    """The task metric of a variant against its parent and its root (measure.fidelity)."""
    if not res:
        return
    from rich import box
    from rich.table import Table

    from ..metrics import format_score, get_metric

    m = get_metric(res["metric"])
    better = "higher" if m.higher_is_better else "lower"
    t = Table(title=f"task metric {m.name} ({better} is better; {res['rows']} rows; degradation: "
                    "the variant's error minus the reference's, positive is worse)",
              title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("against", "variant", "reference", "degradation"):
        t.add_column(col, justify="left" if col == "against" else "right")

    def sc(x):
        ci = x.get("score_ci")
        s = format_score(m, x["score"])
        return f"{s} [{format_score(m, ci[0])}, {format_score(m, ci[1])}]" if ci else s
    for which in ("vs_parent", "vs_root"):
        r = res[which]
        d = r["degradation"]
        t.add_row(which.replace("vs_", ""), sc(r["variant"]), sc(r["reference"]),
                  f"{d:+.2%}" if m.proportion or m.name == "miou" else f"{d:+.4g}")
    console.print(t)


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
@click.option("--metric", metavar="NAME", help=METRIC_HELP)
@click.option("--cache-dir", type=click.Path(path_type=Path))
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the variant record.")
def quantize(model: str, precision: str, fmt: str, per_channel: bool, calib_method: str,
             calib: Path | None, calib_rows: int, data: Path | None, fidelity_rows: int,
             preprocess: Path | None, types: str, reduce_range: bool, weight_type: str,
             exclude_nodes: str | None, exclude_ops: str | None,
             sensitivity: bool, sensitivity_rows: int, metric: str | None,
             cache_dir: Path | None, json_out: Path | None) -> None:
    """Quantize MODEL (an .onnx path or a variant id) into a cached variant."""
    from .. import make
    from ..report.terminal import terminal_console
    from ..results import check_writable

    if json_out:
        check_writable(json_out, "--json")
    v = make.quantize(model, precision, calib=calib, data=data, per_channel=per_channel,
                      format=fmt, calib_method=calib_method, calib_rows=calib_rows, types=types,
                      reduce_range=reduce_range, weight_type=weight_type,
                      exclude_nodes=exclude_nodes, exclude_ops=exclude_ops,
                      sensitivity=sensitivity, sensitivity_rows=sensitivity_rows, metric=metric,
                      preprocess=preprocess, fidelity_rows=fidelity_rows, cache_dir=cache_dir)
    show_variant(v, terminal_console(), cache_dir, metric, json_out)


def show_variant(v, console, cache_dir, metric: str | None, json_out: Path | None) -> None:
    """What a pass command prints for the variant it made (and ``--json``: its record)."""
    import json

    from ..metrics import get_metric
    from ..report.terminal import print_variant
    from ..variants.cache import Cache

    cache = Cache(cache_dir)
    cached = cache.get(v.id)
    print_variant(cached, v.reused, console, lineage=cache.lineage(cached))
    if metric:
        print_task_metric((v.fidelity.get("metrics") or {}).get(get_metric(metric).name), console)
    if json_out:
        from ..storage import write_text
        write_text(json_out, json.dumps(cached.to_json(), indent=1) + "\n", "--json")
