"""``edgeprof profile``: latency, memory and size of models on a target."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("profile")
@click.argument("models", nargs=-1, required=True)
@click.option("--threads", default="1", show_default=True, help="Thread counts, e.g. 1,2.")
@click.option("--batch", default=None,
              help="Batch sizes, e.g. 1,4,16 (default: each model's own batch, 1 when dynamic).")
@click.option("--shape", "shapes", multiple=True, metavar="NAME=DxD..",
              help="Concrete shape for an input with dynamic dims (repeatable).")
@click.option("--data", type=click.Path(path_type=Path), help="Real inputs: .npz or image folder.")
@click.option("--preprocess", type=click.Path(path_type=Path), help="InputSpec TOML for --data.")
@click.option("--processes", default=3, show_default=True, type=click.IntRange(1, 64),
              help="Fresh worker processes per configuration; the CI spans their differences.")
@click.option("--rel-ci", default="1%", show_default=True,
              help="Stop when the p50 CI half-width is this share of p50 (0: stop at the minimums).")
@click.option("--min-time", default="0.2s", show_default=True,
              help="Measure each configuration at least this long.")
@click.option("--max-time", default="10s", show_default=True,
              help="Measure each configuration at most this long (precision not reached: warned).")
@click.option("--min-runs", default=50, show_default=True, type=int, help="At least this many runs.")
@click.option("--max-runs", default=10_000, show_default=True, type=int, help="At most this many.")
@click.option("--warmup-max-time", default="10s", show_default=True,
              help="Give up waiting for timings to settle after this long (warned).")
@click.option("--runtime", type=click.Choice(["auto", "onnxruntime", "litert"]), default="auto",
              show_default=True)
@click.option("--op-profile", is_flag=True, help="Per-operator-type time (separate session).")
@click.option("--cold-starts", default=3, show_default=True, type=click.IntRange(0, 100),
              help="Fresh processes timed from spawn to first result (0: skip).")
@click.option("--target", "target_names", multiple=True, default=("local",), show_default=True,
              metavar="NAME", help="Where to run: local, or a board's target file NAME.toml "
              "(repeatable: boards run at once, targets on one host one after another).")
@click.option("--targets-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Look for target files here first (then ./targets, then the user config dir).")
@click.option("--inventory", type=click.Path(path_type=Path, dir_okay=False),
              help="An Ansible inventory: every host of --group is a target (needs ansible-core).")
@click.option("--group", default=None, help="The inventory group to profile on (default: all); "
              "every board is measured, then the group's median and board-to-board spread.")
@click.option("--max-boards", type=click.IntRange(1, 1024), default=None,
              help="Boards measured at once (default: every board at once).")
@click.option("--sustained", default=None, metavar="DURATION",
              help="Continuous load for DURATION (e.g. 10m): latency per window with temperature, "
                   "frequency, throttling and energy; burst vs steady state.")
@click.option("--window", default="10s", show_default=True, help="Window of a sustained run.")
@click.option("--cooldown", default=None, metavar="55C|30s",
              help="Before each configuration (burst or sustained) wait until the board is "
                   "below a temperature, or for a time; burst configurations are then measured "
                   "one at a time instead of interleaved.")
@click.option("--accept-new-host-key", is_flag=True,
              help="First contact with a board: record its host key in the target's known_hosts "
                   "(a changed key is always refused).")
@click.option("--affinity", metavar="CPUS",
              help="Pin the worker on the board to these CPUs, e.g. 0-3 (overrides the file).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of synthetic inputs.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write records as JSON.")
@click.option("--results", type=click.Path(path_type=Path),
              help="Append records to this JSON Lines file; keys already there are skipped.")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Variant cache (for id prefixes).")
@click.option("--wait", is_flag=True, help="If another run is writing --results, wait for it.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@click.pass_context
def profile(ctx: click.Context, models: tuple[str, ...], threads: str, batch: str | None,
            shapes: tuple[str, ...], data: Path | None, preprocess: Path | None, processes: int,
            rel_ci: str, min_time: str, max_time: str, min_runs: int, max_runs: int,
            warmup_max_time: str, runtime: str, op_profile: bool,
            cold_starts: int, target_names: tuple[str, ...], targets_dir: Path | None,
            inventory: Path | None, group: str | None, sustained: str | None, window: str,
            cooldown: str | None, accept_new_host_key: bool, affinity: str | None, seed: int,
            json_out: Path | None, results: Path | None, cache_dir: Path | None, wait: bool,
            quiet: bool, max_boards: int | None = None) -> None:
    """Measure latency (percentiles with confidence intervals), cold start and memory of MODELS
    (.onnx or .tflite). Several models or thread counts are measured in interleaved rounds."""
    from .. import api
    from ..errors import InputError
    from ..report.terminal import print_records, terminal_console
    from ..results import check_writable, write_json
    from ..storage import is_stdout
    from .progress import progress_bar

    if json_out:
        check_writable(json_out, "--json")
    threads_given = ctx.get_parameter_source("threads") is not click.core.ParameterSource.DEFAULT
    console = terminal_console(stderr=is_stdout(json_out))
    ctx.find_root().edgeprof_interrupt_note = (
        f"records measured so far are in {results}; rerun the same command to resume"
        if results else "nothing was saved (use --results FILE to keep records)")
    with progress_bar(quiet) as prog:
        res = api.profile(
            list(models), targets=list(target_names), threads=threads if threads_given else None,
            batch=batch, shapes=shapes, data=data, spec=preprocess, results=results,
            min_time=min_time, max_time=max_time, min_runs=min_runs, max_runs=max_runs,
            processes=processes, rel_ci=rel_ci, warmup_max_time=warmup_max_time,
            runtime=runtime, cold_starts=cold_starts, op_profile=op_profile, cooldown=cooldown,
            sustained=sustained, window=window, inventory=inventory, group=group,
            max_boards=max_boards, accept_new_host_key=accept_new_host_key, affinity=affinity,
            seed=seed, wait=wait, cache_dir=cache_dir, targets_dir=targets_dir, progress=prog)
    records = list(res.records)
    for label in res.skipped:
        console.print(f"  skipped (already in {results}): {label}", highlight=False)
    print_records(records, console)
    if json_out:
        write_json(json_out, records)
    errors = [r for r in records if r["kind"] == "error"]
    if errors:
        total = len(errors) + sum(r["kind"] == "latency" for r in records)
        where = f" (every error is a record in {results})" if results else ""
        raise InputError(errors[0]["error"] if total == 1 else
                         f"{len(errors)} of {total} configurations failed{where}; first: "
                         f"{errors[0]['error']}")
