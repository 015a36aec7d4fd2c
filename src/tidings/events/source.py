"""Event sources: where a consumer's events come from — a live broker or a saved file.

Every ``tidings events`` mode (dump, camera, live monitor) and the demo take
their events from a source, so the choice "broker or replay", the event
filter, the skipped-input counters and the connection status are the same
for all of them.  A source feeds validated, clock-stamped events (see
:mod:`tidings.events.ingest`) to one handler::

    source = open_source(app, replay=None, event_filter=EventFilter(types=["task-*"]))
    source.run(state.event, stop)          # returns when stop is set (or the file ends)
    source.errors                          # skipped input by cause
    source.status                          # the latest Status of the connection

Subclass :class:`EventSource` and implement :meth:`~EventSource.run` for
another origin; :meth:`~EventSource.deliver` is where every good event goes.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kombu import Connection

from ..transport import Link, Reconnector, Status, first_connect_retries, redact_url
from .ingest import EventPipeline
from .log import replay_into
from .loss import LossAccount
from .receiver import EventReceiver
from .subscription import Subscription

if TYPE_CHECKING:
    from ..app import App

__all__ = ["FROM_SETTINGS", "BrokerSource", "EventSource", "ReplaySource", "open_source"]

logger = logging.getLogger("tidings.events.source")

Handler = Callable[[dict[str, Any]], Any]
StatusHandler = Callable[[Status], Any]


class EventSource:
    """Base class: a pipeline, an optional filter, and a handler to deliver to.

    Attributes every source has: ``label`` (what to call it on screen),
    ``live`` (whether workers can be reached through it, e.g. to revoke),
    ``errors``, ``losses``, ``event_count`` and ``status``.
    """

    label = ""
    live = False

    def __init__(self, clock: Any, event_filter: Callable[[dict], bool] | None = None) -> None:
        self.filter = event_filter or None
        self.pipeline = EventPipeline(clock, self.deliver)
        self.status: Status | None = None
        self._handler: Handler | None = None

    @property
    def errors(self) -> Counter[str]:
        """Skipped input, by cause (cumulative)."""
        return self.pipeline.errors

    @property
    def event_count(self) -> int:
        return self.pipeline.event_count

    @property
    def losses(self) -> LossAccount:
        """Events that never arrived, by cause (:mod:`tidings.events.loss`)."""
        return self.pipeline.losses

    @property
    def reconnects(self) -> int:
        return 0

    def deliver(self, type_: str, event: dict[str, Any]) -> None:
        """Hand one good event to the handler, if the filter keeps it."""
        if self.filter is None or self.filter(event):
            self._handler(event)  # type: ignore[misc]

    def run(self, handler: Handler, stop: threading.Event, *,
            on_status: StatusHandler | None = None,
            on_tick: Callable[[], Any] | None = None) -> None:
        """Feed events to ``handler`` until ``stop`` is set or the source ends."""
        raise NotImplementedError

    def run_guarded(self, handler: Handler, stop: threading.Event, *,
                    on_status: StatusHandler | None = None,
                    on_tick: Callable[[], Any] | None = None) -> None:
        """:meth:`run`, for a thread: an unexpected error becomes a ``FAILED`` status."""
        try:
            self.run(handler, stop, on_status=on_status, on_tick=on_tick)
        except Exception as exc:
            logger.exception("Event source %s stopped", self.label)
            self._set_status(Status(Link.FAILED, f"receiver stopped: {exc!r}", repr(exc)),
                             on_status)

    def _set_status(self, status: Status, on_status: StatusHandler | None) -> None:
        self.status = status
        if on_status is not None:
            on_status(status)


#: ``connect_retries`` default: what the app's settings say (see BrokerSource).
FROM_SETTINGS = object()


class BrokerSource(EventSource):
    """Events from the app's broker, through a receiver queue, reconnecting forever.

    The first connection is tried ``connect_retries`` times, then kombu's
    ``OperationalError`` propagates (so a command can say the broker is
    unreachable); ``None`` tries forever (a monitor that waits for its broker);
    :data:`FROM_SETTINGS` (the default) asks the app's settings
    (``broker_connection_retry_on_startup``, ``broker_connection_max_retries``).
    """

    live = True

    def __init__(self, app: App, event_filter: Callable[[dict], bool] | None = None, *,
                 wakeup: bool = True,
                 connect_retries: int | object | None = FROM_SETTINGS,
                 subscription: Subscription | None = None) -> None:
        super().__init__(app.clock, event_filter)
        self.app = app
        #: Where events are read (a transient queue unless ``--queue``/``--stream``).
        self.subscription = subscription or Subscription()
        self.wakeup = wakeup
        self.connect_retries = (first_connect_retries(app.conf)
                                if connect_retries is FROM_SETTINGS else connect_retries)
        self.label = redact_url(app.conf.broker_url)
        self.reconnector: Reconnector | None = None

    @property
    def reconnects(self) -> int:
        return self.reconnector.reconnects if self.reconnector is not None else 0

    def run(self, handler: Handler, stop: threading.Event, *,
            on_status: StatusHandler | None = None,
            on_tick: Callable[[], Any] | None = None) -> None:
        self._handler = handler
        lost_at: list[float] = []  # when the connection was lost, until it is back

        def status_changed(status: Status) -> None:
            if status.link is Link.LOST and not lost_at:
                lost_at.append(status.at)
            elif status.link is Link.CONNECTED and lost_at:
                self.losses.outage(lost_at.pop(), status.at)
            self._set_status(status, on_status)

        loop = self.reconnector = Reconnector(
            self.app.connection_for_read, stop, label=self.label,
            first_retries=self.connect_retries, on_status=status_changed)

        def session(conn: Connection) -> None:
            receiver = _LiveReceiver(conn, app=self.app, pipeline=self.pipeline,
                                     loop=loop, on_tick=on_tick,
                                     subscription=self.subscription)
            try:
                for _ in receiver.itercapture(limit=None, timeout=None, wakeup=self.wakeup):
                    pass
            finally:  # a stream read again after a reconnect goes on after what it applied
                if receiver.last_offset is not None:
                    self.subscription = self.subscription.after(receiver.last_offset)

        loop.run(session)


class _LiveReceiver(EventReceiver):
    """A receiver living on the reconnect loop's connection (no second connection)."""

    def __init__(self, conn: Connection, *, loop: Reconnector, **kwargs: Any) -> None:
        super().__init__(conn, **kwargs)
        self.loop = loop

    def create_connection(self) -> Connection:
        return self.connection

    def on_consume_ready(self, connection: Connection, channel: Any, consumers: Any,
                         **kwargs: Any) -> None:
        super().on_consume_ready(connection, channel, consumers, **kwargs)
        where = f" from {self.subscription.label}" if self.subscription.durable else ""
        self.loop.report(Link.CONNECTED,
                         f"connected to {self.loop.label}, receiving events{where}")

    def on_iteration(self) -> None:
        if self.loop.stop.is_set():
            self.stop()
        super().on_iteration()


class ReplaySource(EventSource):
    """Events from a saved file (NDJSON dump, or recorded broker messages)."""

    def __init__(self, path: str | Path, clock: Any,
                 event_filter: Callable[[dict], bool] | None = None) -> None:
        super().__init__(clock, event_filter)
        self.path = str(path)
        self.label = f"replay of {self.path}"
        self.stats: Any = None

    def run(self, handler: Handler, stop: threading.Event, *,
            on_status: StatusHandler | None = None,
            on_tick: Callable[[], Any] | None = None) -> None:
        self._handler = handler
        self.stats = replay_into(self.pipeline, self.path, should_stop=stop.is_set)
        self._set_status(Status(Link.STOPPED, str(self.stats)), on_status)

    def summary(self) -> str:
        """What the replay did (empty before it ran)."""
        return str(self.stats) if self.stats is not None else ""


def open_source(app: App, replay: str | Path | None = None,
                event_filter: Callable[[dict], bool] | None = None, *,
                connect_retries: int | object | None = FROM_SETTINGS,
                wakeup: bool = True,
                subscription: Subscription | None = None) -> EventSource:
    """The source a command asked for: ``replay`` names a file, else the app's broker."""
    if replay:
        return ReplaySource(replay, app.clock, event_filter)
    return BrokerSource(app, event_filter, wakeup=wakeup, connect_retries=connect_retries,
                        subscription=subscription)
