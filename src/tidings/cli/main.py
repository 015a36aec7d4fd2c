"""``tidings [-A APP] [-b BROKER] [--workdir DIR] [-l LEVEL] COMMAND ...``."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from .. import __version__
from ..app import App, AppLoadError, load_app
from ..config import ImproperlyConfigured

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL")

#: Exit status for "a service (the broker) is unavailable", as in sysexits.h.
EX_UNAVAILABLE = 69


class CommandError(click.ClickException):
    """A user-facing error: printed as one line; with ``-l debug``, its cause's traceback too."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        cause = self.__cause__ or self.__context__
        if cause is not None and logging.getLogger().isEnabledFor(logging.DEBUG):
            import traceback

            traceback.print_exception(cause, file=sys.stderr)
        super().show(file)


def set_process_title(prefix: str) -> None:
    """``<prefix> <arguments>`` in ``ps`` (passwords in URLs hidden)."""
    try:
        from setproctitle import setproctitle
    except ImportError:  # optional: titles are a convenience
        return
    from ..transport import redact_url

    args = " ".join(redact_url(a) if "://" in a else a for a in sys.argv[1:])
    setproctitle(f"{prefix} {args}".rstrip())


def broker_unreachable(app: App, exc: Exception) -> CommandError:
    """The one-line error (exit status 69) for a broker that cannot be reached."""
    from ..transport import redact_url

    return CommandError(f"cannot connect to the broker at {redact_url(app.conf.broker_url)}: "
                        f"{exc}", exit_code=EX_UNAVAILABLE)


class Context:
    """What the root command knows; the app is loaded on first use."""

    def __init__(self, app_spec: str | None, broker: str | None, loglevel: str) -> None:
        self.app_spec = app_spec
        self.broker = broker
        self.loglevel = loglevel
        self._app: App | None = None

    @property
    def debug(self) -> bool:
        return self.loglevel == "DEBUG"

    @property
    def app(self) -> App:
        if self._app is None:
            try:
                app = load_app(self.app_spec) if self.app_spec else App("tidings")
                if self.broker:
                    app.conf.broker_url = self.broker
            except (AppLoadError, ImproperlyConfigured) as exc:
                raise CommandError(str(exc)) from exc
            self._app = app
        return self._app


def setup_logging(level: str, logfile: str | None = None) -> None:
    handler: logging.Handler = (logging.FileHandler(logfile) if logfile
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("[%(asctime)s: %(levelname)s/%(name)s] %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel("CRITICAL" if level == "FATAL" else level)


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


def _register() -> None:
    from .control import control
    from .demo import demo
    from .events import events
    from .worker import worker

    cli.add_command(demo)
    cli.add_command(events)
    cli.add_command(worker)
    cli.add_command(control)


_register()


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
