"""The command line: thin click commands over the library. Heavy imports stay inside commands so
``edgeprof --help`` is instant."""
from __future__ import annotations

import os
import sys

import click

from .. import __version__
from ..errors import EdgeprofError


class _Group(click.Group):
    """Turns every expected failure into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context):  # noqa: D401
        try:
            return super().invoke(ctx)
        except EdgeprofError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            note = getattr(ctx, "edgeprof_interrupt_note", "")
            click.echo("interrupted" + (f": {note}" if note else ""), err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # a bug of ours: still one line, traceback on request
            if os.environ.get("EDGEPROF_DEBUG"):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            click.echo(f"internal error: {type(exc).__name__}: {first} "
                       "(set EDGEPROF_DEBUG=1 for the traceback)", err=True)
            ctx.exit(70)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeprof")
def cli() -> None:
    """edgeprof: what each format, precision and pruning choice costs and buys on an edge device."""


def _register() -> None:
    from .demo import demo
    from .inspect_cmd import inspect_cmd
    from .profile import profile

    cli.add_command(profile)
    cli.add_command(demo)
    cli.add_command(inspect_cmd)
    try:
        from .corrupt import corrupt
        cli.add_command(corrupt)
    except ImportError:  # pragma: no cover - part not present
        pass


_register()


def main() -> None:
    cli(prog_name="edgeprof")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
