"""One reconnect loop for everything that lives on a broker connection.

The worker, the event receiver behind every ``tidings events`` mode and the
monitors all do the same: connect (waiting for a broker that is not up yet,
as Celery's ``broker_connection_retry_on_startup`` says, or trying a few
times so that a command can say at once that the broker is unreachable),
work until the connection is lost, wait, reconnect with a doubling delay,
and say what is happening as a :class:`Status` (a small typed value, not
free text that a screen has to parse).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kombu import Connection

__all__ = [
    "CONNECT_INTERVAL_MAX",
    "CONNECT_INTERVAL_START",
    "CONNECT_INTERVAL_STEP",
    "FIRST_CONNECT_RETRIES",
    "RECONNECT_DELAY_MAX",
    "RECONNECT_DELAY_MIN",
    "Backoff",
    "Link",
    "Reconnector",
    "Status",
    "first_connect_retries",
]

logger = logging.getLogger("tidings.transport")

#: Attempts at the first connection before giving up (``None``: forever).
FIRST_CONNECT_RETRIES = 3
#: Seconds between attempts at one connection: kombu's ``ensure_connection``
#: waits ``start``, then ``start + step`` ..., at most ``max``.
CONNECT_INTERVAL_START = 0.5
CONNECT_INTERVAL_STEP = 0.5
CONNECT_INTERVAL_MAX = 2.0
#: Seconds to wait after a connection was lost: doubling from min to max.
RECONNECT_DELAY_MIN = 1.0
RECONNECT_DELAY_MAX = 16.0


def first_connect_retries(conf: Any) -> int | None:
    """Attempts at the first connection the settings ask for (``None``: forever).

    Celery's settings: with ``broker_connection_retry_on_startup`` (the
    default) up to ``broker_connection_max_retries`` (0 or None: forever);
    without, :data:`FIRST_CONNECT_RETRIES` quiet attempts and a clear error.
    """
    if not conf.get("broker_connection_retry_on_startup", True):
        return FIRST_CONNECT_RETRIES
    return conf.get("broker_connection_max_retries") or None


class _StopRequested(Exception):
    """Raised from kombu's retry callback to end a connection attempt when stopping.

    Not an ``OSError``: kombu would wrap that in ``OperationalError``, which
    means "the broker is unreachable", not "we were asked to stop".
    """


class Link(enum.Enum):
    """Where a connection stands."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RETRYING = "retrying"  # cannot connect: trying again
    LOST = "lost"  # was connected, lost it: reconnecting
    STOPPED = "stopped"  # done (stopped, or a file was read to its end)
    FAILED = "failed"  # gave up on an unexpected error


@dataclass(frozen=True)
class Status:
    """One change of a connection's state, for logs, screens and metrics."""

    link: Link
    text: str
    error: str | None = None
    retry_in: float | None = None
    at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.link in (Link.CONNECTED, Link.STOPPED)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Backoff:
    """Delays between reconnections: ``start``, doubling, at most ``maximum``."""

    start: float = RECONNECT_DELAY_MIN
    maximum: float = RECONNECT_DELAY_MAX

    def next(self, delay: float) -> float:
        return min(delay * 2, self.maximum)


class Reconnector:
    """Run a session on a broker connection until ``stop`` is set, reconnecting.

    ``connect`` makes a new (lazy) connection; ``label`` names the broker in
    messages (a URL without its password).  :meth:`run` calls
    ``session(connection)`` on each live connection; the session returns
    when it is done (or ``stop`` is set) and raises one of the connection's
    errors when the connection is lost.  The first connection is tried
    ``first_retries`` times, then kombu's ``OperationalError`` propagates;
    ``None`` tries forever.  Once connected, reconnection is tried forever.

    ``on_status`` receives every :class:`Status`; without it, statuses are
    logged.  :attr:`reconnects` counts connections after the first.
    """

    def __init__(self, connect: Callable[[], Connection], stop: threading.Event, *,
                 label: str, first_retries: int | None = FIRST_CONNECT_RETRIES,
                 on_status: Callable[[Status], Any] | None = None,
                 backoff: Backoff = Backoff()) -> None:
        self.connect = connect
        self.stop = stop
        self.label = label
        self.first_retries = first_retries
        self.on_status = on_status
        self.backoff = backoff
        self.reconnects = 0
        self.connected_once = False
        self.status: Status | None = None

    def report(self, link: Link, text: str, error: str | None = None,
               retry_in: float | None = None) -> None:
        """Publish a status (sessions call it too, e.g. once they are consuming)."""
        status = Status(link, text, error, retry_in)
        self.status = status
        if self.on_status is not None:
            self.on_status(status)
        else:
            logger.log(logging.INFO if status.ok else logging.WARNING, "%s", text)

    def run(self, session: Callable[[Connection], Any],
            on_lost: Callable[[Exception], Any] | None = None) -> None:
        """Run ``session`` on connection after connection; ``on_lost`` runs after each loss."""
        delay = self.backoff.start
        while not self.stop.is_set():
            conn = self.connect()
            try:
                self._ensure(conn)
                if self.connected_once:
                    self.reconnects += 1
                self.connected_once = True
                delay = self.backoff.start
                session(conn)
            except _StopRequested:
                break
            except (*conn.connection_errors, *conn.channel_errors, OSError) as exc:
                if self.stop.is_set():
                    break
                if not self.connected_once:
                    raise
                if on_lost is not None:
                    on_lost(exc)
                self.report(Link.LOST, f"Connection to {self.label} lost: {exc!r}; "
                            f"reconnecting in {delay:.0f}s", repr(exc), delay)
                self.stop.wait(delay)
                delay = self.backoff.next(delay)
            finally:
                _close(conn)

    def _ensure(self, conn: Connection) -> None:
        def errback(exc: Exception, interval: float) -> None:
            if self.stop.is_set():
                raise _StopRequested()
            self.report(Link.RETRYING, f"Cannot connect to {self.label}: {exc}; "
                        f"retrying in {interval:.1f}s", str(exc), interval)

        # A few quick tries end in one clear error; a longer wait says what it waits for.
        quiet_first = (not self.connected_once and self.first_retries is not None
                       and self.first_retries <= FIRST_CONNECT_RETRIES)
        conn.ensure_connection(
            None if quiet_first else errback,
            max_retries=self.first_retries if not self.connected_once else None,
            interval_start=CONNECT_INTERVAL_START, interval_step=CONNECT_INTERVAL_STEP,
            interval_max=CONNECT_INTERVAL_MAX)


def _close(conn: Connection) -> None:
    try:
        conn.close()
    except Exception:
        pass
