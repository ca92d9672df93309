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
    from ..data import load_npz
    from ..errors import InputError
    from ..inputspec import load_spec
    from ..measure.profiler import Settings
    from ..results import ResultStore, check_writable
    from ..units import parse_duration_s, parse_fraction, parse_int_list, parse_shape
    from ..variants.family import resolve_models

    s = Settings(
        threads=tuple(parse_int_list(threads, "--threads", 1, 256)),
        batches=tuple(parse_int_list(batch, "--batch", 1, 65536)) if batch else None,
        shapes=dict(parse_shape(t) for t in shapes),
        min_time_s=parse_duration_s(min_time, "--min-time", 0.0, 3600.0),
        max_time_s=parse_duration_s(max_time, "--max-time", 0.0, 36000.0),
        rel_ci=parse_fraction(rel_ci, "--rel-ci"), processes=processes,
        min_runs=min_runs, max_runs=max_runs,
        warmup_max_s=parse_duration_s(warmup_max_time, "--warmup-max-time", 0.0, 600.0),
        seed=seed, op_profile=op_profile, cold_starts=cold_starts,
        runtime=None if runtime == "auto" else runtime,
        cooldown=_cooldown(cooldown))
    if not 1 <= min_runs <= 10_000_000:
        raise InputError(f"--min-runs {min_runs} is out of range (1 to 10000000)")
    if not 1 <= max_runs <= 10_000_000 or max_runs < min_runs:
        raise InputError(f"--max-runs {max_runs} must be at least --min-runs ({min_runs}) "
                         "and at most 10000000")
    if not 0.0 <= s.rel_ci < 1.0:
        raise InputError(f"--rel-ci {rel_ci} is out of range (0, off, to below 100%)")
    if s.max_time_s < s.min_time_s:
        raise InputError(f"--max-time {max_time} must be at least --min-time ({min_time})")
    if preprocess and not data:
        raise InputError("--preprocess applies to --data; give --data too")
    if json_out:
        check_writable(json_out, "--json")
    refs = resolve_models(models, cache_dir)
    ds = load_npz(data) if data else None
    spec = load_spec(preprocess) if preprocess else None
    if group and not inventory:
        raise InputError("--group names a group of --inventory; give --inventory too")
    sus = None
    if sustained:
        from ..measure.sustained import parse_cooldown
        sus = {"duration_s": parse_duration_s(sustained, "--sustained", 1.0, 24 * 3600.0),
               "window_s": parse_duration_s(window, "--window", 0.1, 3600.0),
               "cooldown": parse_cooldown(cooldown)}
    store = ResultStore(results, wait=wait)
    try:
        _profile_into(ctx, store, s, refs, ds, spec, results, json_out, target_names, targets_dir,
                      accept_new_host_key, affinity, quiet, wait, inventory, group, sus,
                      max_boards=max_boards)
    finally:
        store.release()
    store.check()


def _cooldown(text: str | None):
    from ..measure.sustained import parse_cooldown
    return parse_cooldown(text)


def _profile_into(ctx, store, s, refs, ds, spec, results, json_out, target_names, targets_dir,
                  accept_new_host_key, affinity, quiet, wait=False, inventory=None, group=None,
                  sus=None, max_boards=None) -> None:
    from ..errors import InputError
    from ..report.terminal import print_records, terminal_console
    from ..results import write_json
    from ..storage import is_stdout
    from ..targets import get_target
    from ..targets.config import parse_cpus
    from .progress import progress_bar

    cpus = parse_cpus(affinity, "--affinity") if affinity else None
    names = list(dict.fromkeys(target_names or ("local",)))
    if inventory is not None and tuple(target_names) == ("local",):
        names = []  # --inventory alone: its hosts are the targets
    tgts = [get_target(n, targets_dir=targets_dir, accept_new_host_key=accept_new_host_key,
                       affinity=cpus, wait=wait) for n in names]
    if inventory is not None:
        from ..targets import targets_from_inventory
        boards = targets_from_inventory(inventory, group or "all",
                                        accept_new_host_key=accept_new_host_key, wait=wait,
                                        affinity=cpus)
        tgts += boards
        from ..measure.spread import GroupTaggingStore  # records name the group: its spread
        store = GroupTaggingStore(store, {t.name: group or "all" for t in boards})
    threads_given = ctx.get_parameter_source("threads") is not click.core.ParameterSource.DEFAULT
    console = terminal_console(stderr=is_stdout(json_out))
    ctx.find_root().edgeprof_interrupt_note = (f"records measured so far are in {results}; rerun the "
                                   "same command to resume" if results else
                                   "nothing was saved (use --results FILE to keep records)")
    with progress_bar(quiet) as prog:
        if sus is not None:
            from ..measure.sustained import profile_sustained
            records, skipped = profile_sustained(tgts, s, refs, store, ds, spec, sus, prog,
                                                 side_dir=results.parent if results else None)
        else:
            records, skipped = _run_targets(tgts, s, threads_given, refs, store, ds, spec, prog,
                                            max_boards)
    for label in skipped:
        console.print(f"  skipped (already in {results}): {label}", highlight=False)
    print_records(records, console)
    store.check()  # a full disk: say so before writing anything else
    if json_out:
        write_json(json_out, records)
    errors = [r for r in records if r["kind"] == "error"]
    if errors:
        total = len(errors) + sum(r["kind"] == "latency" for r in records)
        where = f" (every error is a record in {results})" if results else ""
        raise InputError(errors[0]["error"] if total == 1 else
                         f"{len(errors)} of {total} configurations failed{where}; first: "
                         f"{errors[0]['error']}")


def _run_targets(tgts: list, s, threads_given: bool, refs: list, store, ds, spec,
                 prog, max_boards: int | None = None) -> tuple[list, list]:
    """One Profiler per target: different boards at once, targets on one host one after another,
    each appending its records as they finish. A board that fails yields error records; the
    others carry on."""
    from ..targets import LockedStore
    from ..targets.shard import run_per_board

    if len(tgts) == 1:
        return _profile_one(tgts[0], s, threads_given, refs, store, ds, spec, prog)
    shared = LockedStore(store)
    fracs = {t.name: 0.0 for t in tgts}

    def progress_for(name: str):
        def update(desc: str, frac: float) -> None:
            fracs[name] = frac
            prog(f"{name}: {desc}", sum(fracs.values()) / len(fracs))
        return update

    outs = run_per_board(tgts, lambda t: _profile_one(
        t, s, threads_given, refs, shared, ds, spec, progress_for(t.name)))
    records: list = []
    skipped: list = []
    for t, out in zip(tgts, outs):
        if isinstance(out, BaseException):
            raise out
        records += out[0]
        skipped += [f"{t.name}: {label}" for label in out[1]]
    return records, skipped


def _profile_one(tgt, s, threads_given: bool, refs: list, store, ds, spec,
                 prog) -> tuple[list, list]:
    """A target file's threads apply unless --threads was given."""
    import dataclasses

    from ..measure.profiler import Profiler

    if getattr(tgt, "threads", None) and not threads_given:
        s = dataclasses.replace(s, threads=tuple(tgt.threads))
    try:
        return Profiler(tgt, s, store=store, data=ds, spec=spec, progress=prog).run(refs)
    finally:
        getattr(tgt, "close", lambda: None)()
