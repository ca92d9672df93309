"""``edgeprof tools``: the managed tool environments (the TFLite converter), installed ahead of
time so that conversion itself never needs the network."""
from __future__ import annotations

from pathlib import Path

import click


def _say(msg: str) -> None:
    click.echo(msg, err=True)


@click.group("tools")
def tools() -> None:
    """Managed tool environments (kept under <cache>/tools or $EDGEPROF_TOOLS_DIR)."""


@tools.command("install")
@click.argument("name", type=click.Choice(["tflite"]))
@click.option("--force", is_flag=True, help="Rebuild the environment even if it is ready.")
@click.option("--cache-dir", type=click.Path(path_type=Path))
def install(name: str, force: bool, cache_dir: Path | None) -> None:
    """Install tool NAME (tflite: onnx2tf + TensorFlow, pinned, about 1.9 GB; needs PyPI)."""
    from ..tools import ensure_tool
    from ..variants.cache import cache_root

    env = ensure_tool(name, cache_root(cache_dir), _say, force=force)
    if not force and env.ready:
        click.echo(f"{name}: ready at {env.dir}")


@tools.command("list")
@click.option("--cache-dir", type=click.Path(path_type=Path))
def list_tools(cache_dir: Path | None) -> None:
    """Show each tool environment: where it lives, whether it is ready, its versions and size."""
    from ..tools import dir_bytes, installed
    from ..units import fmt_bytes
    from ..variants.cache import cache_root

    for spec, env in installed(cache_root(cache_dir)):
        if env.ready:
            versions = ", ".join(f"{k} {v}" for k, v in env.versions().items())
            state = f"ready ({versions}; {fmt_bytes(dir_bytes(env.dir))})"
        elif env.dir.exists():
            state = "incomplete (re-run `edgeprof tools install " + spec.key + "`)"
        else:
            state = f"not installed (`edgeprof tools install {spec.key}`, {spec.size_hint})"
        click.echo(f"{spec.key:<8} {spec.purpose}\n         {env.dir}: {state}")


@tools.command("remove")
@click.argument("name", type=click.Choice(["tflite"]))
@click.option("--cache-dir", type=click.Path(path_type=Path))
def remove(name: str, cache_dir: Path | None) -> None:
    """Delete tool NAME's environment (cached variants stay)."""
    from ..tools import remove_tool, tool_env
    from ..variants.cache import cache_root

    root = cache_root(cache_dir)
    where = tool_env(name, root).dir
    click.echo(f"removed {where}" if remove_tool(name, root) else f"{where}: nothing to remove")
