"""``edgeprof profile``: latency, memory and size of models on a target."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("profile")
@click.argument("models", nargs=-1, required=True)
@click.option("--threads", default="1", show_default=True, help="Thread counts, e.g. 1,2.")
@click.option("--batch", default="1", show_default=True, help="Batch sizes, e.g. 1,4,16.")
@click.option("--shape", "shapes", multiple=True, metavar="NAME=DxD..",
              help="Concrete shape for an input with dynamic dims (repeatable).")
@click.option("--data", type=click.Path(path_type=Path), help="Real inputs: .npz or image folder.")
@click.option("--preprocess", type=click.Path(path_type=Path), help="InputSpec TOML for --data.")
@click.option("--min-time", default="2s", show_default=True, help="Measure at least this long.")
@click.option("--min-runs", default=50, show_default=True, type=int, help="At least this many runs.")
@click.option("--max-runs", default=10_000, show_default=True, type=int, help="At most this many.")
@click.option("--warmup-max-time", default="10s", show_default=True,
              help="Give up waiting for timings to settle after this long (warned).")
@click.option("--runtime", type=click.Choice(["auto", "onnxruntime", "litert"]), default="auto",
              show_default=True)
@click.option("--op-profile", is_flag=True, help="Per-operator-type time (separate session).")
@click.option("--cold-starts", default=3, show_default=True, type=click.IntRange(0, 100),
              help="Fresh processes timed from spawn to first result (0: skip).")
@click.option("--target", default="local", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of synthetic inputs.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write records as JSON.")
@click.option("--results", type=click.Path(path_type=Path),
              help="Append records to this JSON Lines file; keys already there are skipped.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@click.pass_context
def profile(ctx: click.Context, models: tuple[str, ...], threads: str, batch: str,
            shapes: tuple[str, ...], data: Path | None, preprocess: Path | None, min_time: str,
            min_runs: int, max_runs: int, warmup_max_time: str, runtime: str, op_profile: bool,
            cold_starts: int,
            target: str, seed: int, json_out: Path | None, results: Path | None,
            quiet: bool) -> None:
    """Measure latency (percentiles with confidence intervals), cold start and memory of MODELS
    (.onnx or .tflite). Several models or thread counts are measured in interleaved rounds."""
    from ..data import load_npz
    from ..errors import InputError
    from ..inputspec import load_spec
    from ..measure.profiler import Profiler, Settings
    from ..models import open_model
    from ..report.terminal import print_records, terminal_console
    from ..results import ResultStore, check_writable, write_json
    from ..targets import get_target
    from ..units import parse_duration_s, parse_int_list, parse_shape
    from .progress import progress_bar

    s = Settings(
        threads=tuple(parse_int_list(threads, "--threads", 1, 256)),
        batches=tuple(parse_int_list(batch, "--batch", 1, 65536)),
        shapes=dict(parse_shape(t) for t in shapes),
        min_time_s=parse_duration_s(min_time, "--min-time", 0.0, 3600.0),
        min_runs=min_runs, max_runs=max_runs,
        warmup_max_s=parse_duration_s(warmup_max_time, "--warmup-max-time", 0.0, 600.0),
        seed=seed, op_profile=op_profile, cold_starts=cold_starts,
        runtime=None if runtime == "auto" else runtime)
    if not 1 <= min_runs <= 10_000_000:
        raise InputError(f"--min-runs {min_runs} is out of range (1 to 10000000)")
    if not 1 <= max_runs <= 10_000_000 or max_runs < min_runs:
        raise InputError(f"--max-runs {max_runs} must be at least --min-runs ({min_runs}) "
                         "and at most 10000000")
    if preprocess and not data:
        raise InputError("--preprocess applies to --data; give --data too")
    if json_out:
        check_writable(json_out, "--json")
    refs = [open_model(m) for m in models]
    ds = load_npz(data) if data else None
    spec = load_spec(preprocess) if preprocess else None
    store = ResultStore(results)
    tgt = get_target(target)
    console = terminal_console()
    with progress_bar(quiet) as prog:
        profiler = Profiler(tgt, s, store=store, data=ds, spec=spec, progress=prog)
        ctx.edgeprof_interrupt_note = (f"records measured so far are in {results}; rerun the "
                                       "same command to resume" if results else
                                       "nothing was saved (use --results FILE to keep records)")
        records, skipped = profiler.run(refs)
    for label in skipped:
        console.print(f"  skipped (already in {results}): {label}", highlight=False)
    print_records(records, console)
    if json_out:
        write_json(json_out, records)
    errors = [r for r in records if r["kind"] == "error"]
    if errors:
        total = len(errors) + sum(r["kind"] == "latency" for r in records)
        if len(errors) > 1:
            for r in errors[1:]:
                click.echo(f"error: {r['error']}", err=True)
        raise InputError(errors[0]["error"] if total == 1 else
                         f"{len(errors)} of {total} configurations failed; first: {errors[0]['error']}")
