"""``tidings [-A APP] [-b BROKER] [--workdir DIR] [-l LEVEL] COMMAND ...``."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from .._version import __version__
from .common import LOG_LEVELS, Context, setup_logging
from .control import control, inspect
from .demo import demo
from .events import events
from .exporter import exporter
from .web import web
from .worker import worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-A", "--app", "app_spec", envvar="TIDINGS_APP", metavar="MODULE[:ATTR]",
              help="Tidings App or Celery app to take the configuration from.")
@click.option("-b", "--broker", envvar="TIDINGS_BROKER_URL", metavar="URL",
              help="Broker URL (amqp://, redis://, filesystem://); overrides the app's.")
@click.option("--workdir", type=click.Path(exists=True, file_okay=False),
              help="Change to this directory first.")
@click.option("-l", "--loglevel", default="WARNING", show_default=True,
              type=click.Choice(LOG_LEVELS, case_sensitive=False),
              help="Logging level (DEBUG also shows tracebacks of errors).")
@click.version_option(__version__, prog_name="tidings")
@click.pass_context
def cli(ctx: click.Context, app_spec: str | None, broker: str | None, workdir: str | None,
        loglevel: str) -> None:
    """Tidings: events of a distributed task queue (Celery 5.7 compatible)."""
    if workdir:
        os.chdir(workdir)
    loglevel = loglevel.upper()
    setup_logging(loglevel)
    ctx.obj = Context(app_spec, broker, loglevel)


for _command in (demo, events, exporter, web, worker, inspect, control):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> Any:
    """Entry point: a user error is one line on stderr; tracebacks only with ``-l debug``."""
    args = sys.argv[1:] if argv is None else argv
    debug = any(a.lower() in ("-ldebug", "--loglevel=debug") for a in args) or any(
        a in ("-l", "--loglevel") and i + 1 < len(args) and args[i + 1].lower() == "debug"
        for i, a in enumerate(args))
    try:
        return cli.main(args=args, prog_name="tidings", standalone_mode=True)
    except SystemExit:
        raise
    except Exception as exc:  # an unexpected failure: one line unless debugging
        if debug:
            raise
        click.echo(f"Error: {type(exc).__name__}: {exc} (run with -l debug for details)",
                   err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
