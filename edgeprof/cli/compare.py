"""``edgeprof compare BASE NEW``: a regression gate for CI (exit 1 on a regression)."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("compare")
@click.argument("base", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--max-latency-increase", default="5%", show_default=True,
              help="Allowed p50 increase before a significant slowdown counts.")
@click.option("--max-accuracy-drop", default="0.5%", show_default=True,
              help="Allowed accuracy drop (absolute) before a significant drop counts.")
@click.option("--run-noise", default="3%", show_default=True,
              help="Assumed run-to-run spread of one run's p50 (relative sd); a latency change "
                   "must stand out of it too. 0: trust a single run.")
@click.option("--allow-env-diff", is_flag=True,
              help="Compare even when the CPU model or runtime version differs (warned).")
@click.option("--json", "json_out", type=click.Path(path_type=Path))
def compare(base: Path, new: Path, max_latency_increase: str, max_accuracy_drop: str,
            run_noise: str, allow_env_diff: bool, json_out: Path | None) -> None:
    """Compare two results files (JSON Lines). Latency is tested on per-round medians (rounds
    are the roughly independent unit, raw samples are not). Exit 0: no regression; 1: a
    regression that is both significant and larger than its threshold; 2: bad input, or
    environments that differ in CPU model or runtime version (unless --allow-env-diff)."""
    import json

    from rich import box
    from rich.table import Table

    from ..errors import InputError
    from ..report.terminal import terminal_console
    from ..results import check_writable, read_records
    from ..sweeps.compare import accuracy_changes, env_differences, latency_changes
    from ..units import fmt_seconds, parse_fraction

    class GateInputError(InputError):
        exit_code = 2

    try:
        lat_t = parse_fraction(max_latency_increase, "--max-latency-increase")
        acc_t = parse_fraction(max_accuracy_drop, "--max-accuracy-drop")
        noise = parse_fraction(run_noise, "--run-noise")
        if not 0 <= noise < 1:
            raise InputError(f"--run-noise {run_noise}: expected a fraction from 0 to below 1")
        if json_out:
            check_writable(json_out, "--json")
        b, n = list(read_records(base)), list(read_records(new))
    except InputError as exc:
        raise GateInputError(str(exc))
    hard, soft = env_differences(b, n)
    if hard and not allow_env_diff:
        more = f" (and {len(hard) - 1} more)" if len(hard) > 1 else ""
        raise GateInputError(f"environments differ, latencies are not comparable: {hard[0]}{more}; "
                             "use --allow-env-diff to compare anyway")
    for msg in hard + soft:
        click.echo(f"warning: {msg}", err=True)
    changes = latency_changes(b, n, lat_t, noise) + accuracy_changes(b, n, acc_t)
    if not changes:
        raise GateInputError(f"nothing to compare: no latency or accuracy records of the same "
                             f"model and setting in both {base.name} and {new.name}")
    t = Table(title=f"{base.name} -> {new.name}", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("what", "model", "target", "setting", "base", "new", "change", "p", "method",
                "verdict"):
        t.add_column(col, justify="right" if col in ("base", "new", "change", "p") else "left",
                     no_wrap=col == "verdict")
    for c in changes:
        fmt = fmt_seconds if c.what == "latency" else (lambda v: f"{v:.2%}")
        change = f"{c.relative:+.1%}" if c.what == "latency" else f"{-c.relative:+.2%}"
        verdict = ("[red]REGRESSION[/]" if c.regression else
                   "significant, within threshold" if c.p_value < 0.01 else "noise")
        t.add_row(c.what, c.label, c.target, c.setting, fmt(c.base), fmt(c.new), change,
                  f"{c.p_value:.2g}", f"{c.method}, {c.n_base} vs {c.n_new}", verdict)
    from ..storage import is_stdout
    console = terminal_console(stderr=is_stdout(json_out))
    console.print(t)
    if json_out:
        from ..storage import write_text
        write_text(json_out, json.dumps([c.to_dict() for c in changes], indent=1) + "\n", "--json")
    bad = [c for c in changes if c.regression]
    if bad:
        click.echo(f"regression: {len(bad)} of {len(changes)} comparisons "
                   f"(first: {bad[0].what} of {bad[0].label}, {bad[0].relative:+.1%})", err=True)
        raise SystemExit(1)
