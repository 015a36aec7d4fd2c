"""What every ``tidings`` subcommand shares: the context, user errors, logging, titles.

Subcommands import this module, never :mod:`tidings.cli.main` (which imports
them to register them).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import traceback
from typing import Any

import click
from kombu.exceptions import OperationalError

from ..app import App, AppLoadError, load_app
from ..config import ImproperlyConfigured
from ..transport import redact_url
from ..transport.reconnect import (
    CONNECT_INTERVAL_MAX,
    CONNECT_INTERVAL_START,
    CONNECT_INTERVAL_STEP,
    FIRST_CONNECT_RETRIES,
    first_connect_retries,
)

__all__ = [
    "EX_UNAVAILABLE",
    "LOG_LEVELS",
    "CommandError",
    "Context",
    "broker_unreachable",
    "set_process_title",
    "setup_logging",
    "stop_on_signals",
    "wait_for_broker",
]

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
            traceback.print_exception(cause, file=sys.stderr)
        super().show(file)


def set_process_title(prefix: str, secret_options: tuple[str, ...] = ()) -> None:
    """``<prefix> <arguments>`` in ``ps`` (passwords in URLs and the values of
    ``secret_options`` hidden)."""
    try:
        from setproctitle import setproctitle
    except ImportError:  # optional: titles are a convenience
        return
    shown, hide_next = [], False
    for a in sys.argv[1:]:
        name, eq, _ = a.partition("=")
        if hide_next:
            shown.append("***")
        elif eq and name in secret_options:
            shown.append(f"{name}=***")
        else:
            shown.append(redact_url(a) if "://" in a else a)
        hide_next = not eq and a in secret_options
    args = " ".join(shown)
    setproctitle(f"{prefix} {args}".rstrip())


def broker_unreachable(app: App, exc: Exception) -> CommandError:
    """The one-line error (exit status 69) for a broker that cannot be reached."""
    return CommandError(f"cannot connect to the broker at {redact_url(app.conf.broker_url)}: "
                        f"{exc}", exit_code=EX_UNAVAILABLE)


def wait_for_broker(app: App) -> None:
    """Connect once, as the settings say (``broker_connection_retry_on_startup``).

    Each failed attempt is said on stderr; when the attempts run out, the
    one-line error of :func:`broker_unreachable`.  For commands that must
    know before they detach (the camera's daemon mode).
    """
    retries = first_connect_retries(app.conf)

    def say(exc: Exception, interval: float) -> None:
        click.echo(f"-> cannot connect to {redact_url(app.conf.broker_url)}: {exc}; "
                   f"retrying in {interval:.1f}s", err=True)

    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(say if retries != FIRST_CONNECT_RETRIES else None,
                                   max_retries=retries, interval_start=CONNECT_INTERVAL_START,
                                   interval_step=CONNECT_INTERVAL_STEP,
                                   interval_max=CONNECT_INTERVAL_MAX)
    except OperationalError as exc:
        raise broker_unreachable(app, exc) from exc


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


def stop_on_signals() -> threading.Event:
    """An event that SIGTERM and SIGINT set: long-running commands stop cleanly on either."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop
