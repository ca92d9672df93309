"""The command line: thin click commands over the library. Heavy imports stay inside commands so
``edgeprof --help`` is instant."""
from __future__ import annotations

import logging
import os
import sys

import click

from .. import __version__
from ..errors import EdgeprofError


class _WarningLine(logging.Handler):
    """The library's warnings (logger ``edgeprof``) as one line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"warning: {record.getMessage()}", err=True)


def _log_warnings() -> None:
    logger = logging.getLogger("edgeprof")
    if not any(isinstance(h, _WarningLine) for h in logger.handlers):
        logger.addHandler(_WarningLine(logging.WARNING))
        logger.propagate = False


class _Group(click.Group):
    """Turns every expected failure into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context):  # noqa: D401
        _log_warnings()
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


# (module, command attribute): each part of the CLI lives in its own module
_COMMANDS = [("profile", "profile"), ("demo", "demo"), ("inspect_cmd", "inspect_cmd"),
             ("corrupt", "corrupt"), ("targets_cmd", "targets"), ("variants_cmd", "variants"),
             ("variants_cmd", "export"), ("quantize", "quantize"), ("convert", "convert"),
             ("prune", "prune"), ("robustness", "robustness"), ("sweep", "sweep"),
             ("compare", "compare"), ("report", "report"), ("tools", "tools"),
             ("drift", "drift")]


def _register() -> None:
    import importlib

    for module, attr in _COMMANDS:
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{module}":
                continue  # that part is not in this build
            raise
        cli.add_command(getattr(mod, attr))


_register()


def main() -> None:
    cli(prog_name="edgeprof")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
