"""``edgeprof targets list`` and ``edgeprof targets check NAME`` (target files, or the hosts of
an Ansible inventory with ``--inventory FILE [--group G]``)."""
from __future__ import annotations

from pathlib import Path

import click

_TARGETS_DIR = click.option("--targets-dir", type=click.Path(path_type=Path, file_okay=False),
                            help="Look for NAME.toml here first (then ./targets, then the "
                                 "user config dir).")
_INVENTORY = click.option("--inventory", type=click.Path(path_type=Path, exists=True),
                          help="An Ansible inventory (YAML or INI, needs edgeprof[inventory]): "
                               "its hosts are the targets, named by inventory hostname.")
_GROUP = click.option("--group", default=None, metavar="GROUP",
                      help="The inventory group (children included) to use; default: all.")


def _group_needs_inventory(inventory: Path | None, group: str | None) -> None:
    if group is not None and inventory is None:
        raise click.UsageError("--group selects hosts of an --inventory; give --inventory too")


@click.group("targets")
def targets() -> None:
    """Boards to profile on: target files (targets/NAME.toml) and their health."""


@targets.command("list")
@_TARGETS_DIR
@_INVENTORY
@_GROUP
def list_cmd(targets_dir: Path | None, inventory: Path | None, group: str | None) -> None:
    """The targets found, with the file each comes from (nothing is contacted). With
    --inventory: the hosts of the group, with address, python and threads."""
    from ..errors import EdgeprofError
    from ..targets.config import list_target_files, load_target_file, search_dirs

    _group_needs_inventory(inventory, group)
    if inventory is not None:
        from ..targets.inventory import host_names, host_spec, load_inventory

        inv = load_inventory(inventory)
        names = host_names(inv, group or "all")
        click.echo(f"{'name':<16} {'address':<32} {'python':<32} threads")
        for name in names:
            try:
                spec = host_spec(inv, name)
            except EdgeprofError as exc:
                click.echo(f"{name:<16} (invalid) {exc}")
                continue
            threads = ",".join(map(str, spec.threads)) if spec.threads else "-"
            click.echo(f"{name:<16} {spec.address:<32} {spec.python:<32} {threads}")
        click.echo(f"inventory: {inventory}, group {group or 'all'}: {len(names)} hosts")
        return
    click.echo(f"{'local':<16} {'this machine':<32} built in")
    for name, path in sorted(list_target_files(targets_dir).items()):
        try:
            spec = load_target_file(path)
            where, what = spec.address, spec.description
        except EdgeprofError as exc:
            where, what = "(invalid)", str(exc)
        click.echo(f"{name:<16} {where:<32} {path}" + (f"  {what}" if what else ""))
    click.echo("searched: " + ", ".join(str(d) for d in search_dirs(targets_dir)))


def _fmt_gib(n: int | None) -> str:
    return f"{n / 2**30:.1f} GiB" if n else "unavailable"


@targets.command("check")
@click.argument("name", required=False)
@_TARGETS_DIR
@_INVENTORY
@_GROUP
@click.option("--accept-new-host-key", is_flag=True,
              help="First contact: record the board's host key in its known_hosts file "
                   "(a changed key is still refused).")
def check_cmd(name: str | None, targets_dir: Path | None, inventory: Path | None,
              group: str | None, accept_new_host_key: bool) -> None:
    """Connect to NAME and report what it is (architecture, CPU and its features, memory, OS,
    Python, numpy and runtime versions, governor, temperature, throttling) and what it lacks;
    exit 1 when it cannot profile. With --inventory: NAME is one of its hosts, or without NAME
    every host of --group is checked (different boards at once) and the exit is 1 when any
    cannot profile."""
    from ..errors import EdgeprofError, WorkerError
    from ..targets import (check_target, get_target, run_per_target,
                           targets_from_inventory)

    _group_needs_inventory(inventory, group)
    if name is None and inventory is None:
        raise click.UsageError("give a target NAME, or --inventory FILE [--group GROUP]")
    if name is not None and group is not None:
        raise click.UsageError("give either NAME or --group, not both")
    if name is not None:
        tgt = get_target(name, targets_dir=targets_dir, accept_new_host_key=accept_new_host_key,
                         inventory=inventory)
        try:
            rep = check_target(tgt)
        finally:
            if hasattr(tgt, "close"):
                tgt.close()
        fatal = _print_report(rep)
        if fatal:
            raise WorkerError(fatal)
        return

    tgts = targets_from_inventory(inventory, group or "all",
                                  accept_new_host_key=accept_new_host_key)

    def check_one(t):
        try:
            return check_target(t)
        finally:
            t.close()

    failed = []
    for t, rep in zip(tgts, run_per_target(tgts, check_one)):
        if isinstance(rep, BaseException):
            click.echo(f"{t.name}  {t.spec.address}")
            msg = str(rep) if isinstance(rep, EdgeprofError) else f"{type(rep).__name__}: {rep}"
            click.echo(f"  error: {msg}")
            failed.append(t.name)
        else:
            fatal = _print_report(rep)
            if fatal:
                click.echo(f"  not ready: {fatal}")
                failed.append(t.name)
    where = f"of group {group or 'all'} in {inventory}"
    if failed:
        raise WorkerError(f"{len(failed)} of {len(tgts)} hosts {where} cannot profile: "
                          + ", ".join(failed))
    click.echo(f"ready: all {len(tgts)} hosts {where} can profile")


def _print_report(rep: dict) -> str | None:
    """Print one ``check_target`` report; the one-line reason it cannot profile, or None."""
    from ..targets import describe_cpu_features

    row = lambda k, v: click.echo(f"  {k:<14} {v}")  # noqa: E731
    head = rep["name"] + (f"  {rep['address']}" if rep.get("address") else "")
    click.echo(head + (f"  ({rep['description']})" if rep.get("description") else ""))
    if rep.get("host_key_recorded"):
        row("host key", f"recorded {rep['host_key_recorded']}")
    if rep.get("connect_s") is not None:
        row("connect", f"{rep['connect_s'] * 1e3:.0f} ms")
    if rep.get("work_dir"):
        row("work dir", f"{rep['work_dir']} (0700)")
    env, probe = rep.get("env"), rep.get("probe") or {}
    if env:
        aff = env.get("affinity")
        snap = env.get("snapshot") or {}
        temps = snap.get("temp_c") or {}
        thr = snap.get("throttled")
        row("architecture", env.get("machine"))
        row("cpu", f"{env.get('cpu_model') or 'unavailable'} ({env.get('cores')} cores"
            + (f", affinity {','.join(map(str, aff))}" if aff else "") + ")")
        row("cpu features", describe_cpu_features(env.get("cpu_features")))
        row("memory", _fmt_gib(env.get("mem_total_bytes")))
        row("os", env.get("os"))
        row("python", f"{env.get('python')} ({rep['python_path']})")
        row("governor", ", ".join(env.get("governors") or []) or "unavailable")
        if env.get("max_hz"):
            row("max freq", f"{env['max_hz'] / 1e9:.2f} GHz")
        row("temperature", ", ".join(f"{v:.1f} C" for v in temps.values()) or "unavailable")
        row("throttled", "unavailable" if thr is None else
            ("no" if not thr["value"] else f"{hex(thr['value'])} {', '.join(thr['flags'])}"))
    elif probe:
        row("architecture", probe.get("machine"))
        row("os", probe.get("os"))
        row("python", f"{probe.get('python')} ({rep['python_path']})")
    versions = rep.get("versions") or {}
    row("numpy", versions.get("numpy") or "missing")
    row("onnxruntime", versions.get("onnxruntime") or "missing")
    litert = (f"ai_edge_litert {versions['ai_edge_litert']}" if versions.get("ai_edge_litert")
              else f"tflite_runtime {versions['tflite_runtime']}"
              if versions.get("tflite_runtime") else "missing")
    row("LiteRT", litert)
    for what, cmd in rep["missing"]:
        click.echo(f"  missing {what}: install it with  {cmd}")
    if rep["fatal"]:
        fixes = "; ".join(cmd for _, cmd in rep["missing"])
        return (f"{rep['name']} cannot profile: {rep['fatal']}"
                + (f" (install: {fixes})" if fixes else ""))
    click.echo(f"  ready: {rep['name']} can profile")
    return None
