"""``edgeprof inspect``: what is in a model, and will the target's runtime run it."""
from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("inspect")
@click.argument("model")
@click.option("--target", default="local", show_default=True,
              help="Check operator support against this target's runtime.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1, 65536),
              help="Batch used to count MACs when the batch is dynamic.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the facts as JSON.")
@click.option("--targets-dir", type=click.Path(path_type=Path), help="Where target files are.")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Variant cache (id prefixes).")
def inspect_cmd(model: str, target: str, batch: int, json_out: Path | None,
                targets_dir: Path | None, cache_dir: Path | None) -> None:
    """Format, opset, inputs/outputs, operator counts, parameters, MACs, dtypes, and whether the
    target's runtime supports every operator (exit 1 when it does not)."""
    from ..errors import EdgeprofError, InputError
    from ..modelinfo import model_info, onnx_support
    from ..report.terminal import print_info, terminal_console
    from ..results import check_writable
    from ..targets import get_target

    if json_out:
        check_writable(json_out, "--json")
    from ..variants.family import resolve_models
    ref = resolve_models([model], cache_dir)[0]
    try:
        info = model_info(ref, batch)
    except Exception as exc:  # a file onnx/LiteRT can open but not analyse
        raise InputError(f"{ref.path}: cannot analyse: {str(exc).splitlines()[0] if str(exc) else exc}")
    tgt = get_target(target, targets_dir=targets_dir)
    support: dict = {"target": tgt.name}
    try:
        with tgt.start_worker(f"{ref.name} on {tgt.name}") as w:
            if ref.format == "onnx":
                k = w.request("kernels")
                if k.get("available"):
                    support.update(onnx_support(str(ref.path), k["kernels"]),
                                   runtime=f"onnxruntime {k['onnxruntime']}")
                else:
                    support.update(supported=None, reason=k.get("reason"))
            else:
                try:
                    load = w.request("load", path=tgt.stage(ref.path), threads=1)
                    support.update(supported=True,
                                   runtime=f"{load['runtime']} {load['runtime_version']}")
                except EdgeprofError as exc:
                    support.update(supported=False, reason=str(exc))
    except EdgeprofError as exc:
        support.update(supported=None, reason=str(exc))
    info["support"] = support
    print_info(info, terminal_console())
    if json_out:
        from ..storage import write_text
        write_text(json_out, json.dumps(info, indent=1) + "\n", "--json")
    if support.get("supported") is False:
        missing = ", ".join(f"{m['op']} (node '{m['node']}')" for m in support.get("missing", []))
        raise InputError(f"{ref.name} will not run on target '{tgt.name}': "
                         + (f"no kernel for {missing}" if missing else support.get("reason", "")))
