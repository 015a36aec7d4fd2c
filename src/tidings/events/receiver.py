"""EventReceiver: consumes events from the event exchange (Celery 5.7's API).

Handlers are looked up by exact event type; the ``'*'`` handler is a
*fallback* for types that have no handler of their own, exactly as in Celery.
A receiver with ``{'task-failed': on_failed, '*': state.event}`` therefore
does **not** feed ``task-failed`` events to the State; call ``state.event``
from ``on_failed`` if both should see them.

Differences from Celery:

* Bad input never stops a receiver.  An undecodable body, a body that is not
  an event object, a missing ``type``, a ``clock`` of ``null`` (except on
  ``task-sent``), a field of the wrong type, or a handler that raises: each
  is skipped, counted in :attr:`EventReceiver.errors` under its cause, and
  logged once per cause.  One bad element of a batch does not lose the rest.
* Timestamps are epoch seconds and are left alone.  Celery shifts them by
  the difference between the sender's and the receiver's UTC offsets, which
  moves every event of a sender in another time zone by hours; the sender's
  ``utcoffset`` is kept on the event for whoever wants to show local time.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid as _uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from kombu import Connection, Consumer
from kombu.exceptions import ContentDisallowed
from kombu.mixins import ConsumerMixin

from ..app import App, default_app
from ..protocol.events import CLIENT_CLOCK_SKEW, InvalidEvent, validate_event
from ..transport import event_queue, get_exchange, redact_url

logger = logging.getLogger("tidings.events.receiver")

Handler = Callable[[dict[str, Any]], Any]


class EventReceiver(ConsumerMixin):
    """Capture events.

    ``EventReceiver(connection, handlers=None, routing_key='#', node_id=None,
    app=None, queue_prefix=None, accept=None, queue_ttl=None,
    queue_expires=None, queue_exclusive=None, queue_durable=None)``.
    The queue is ``<queue_prefix>.<node_id>`` (a fresh uuid by default),
    declared with the app's ``event_queue_*`` settings unless overridden.
    """

    def __init__(
        self,
        channel: Any,
        handlers: dict[str, Handler] | None = None,
        routing_key: str = "#",
        node_id: str | None = None,
        app: App | None = None,
        queue_prefix: str | None = None,
        accept: Any = None,
        queue_ttl: float | None = None,
        queue_expires: float | None = None,
        queue_exclusive: bool | None = None,
        queue_durable: bool | None = None,
    ) -> None:
        self.app = app or default_app()
        conf = self.app.conf
        if isinstance(channel, Connection):
            self.connection = channel
            self.channel = None
        else:
            self.channel = channel
            self.connection = channel.connection.client if channel is not None else None
        self.handlers = {} if handlers is None else handlers
        self.routing_key = routing_key
        self.node_id = node_id or str(_uuid.uuid4())
        self.queue_prefix = queue_prefix or conf.event_queue_prefix
        self.exchange = get_exchange(
            self.connection or self.app.connection_for_write(), conf.event_exchange)
        self.queue = event_queue(
            f"{self.queue_prefix}.{self.node_id}",
            self.exchange,
            routing_key,
            ttl=conf.event_queue_ttl if queue_ttl is None else queue_ttl,
            expires=conf.event_queue_expires if queue_expires is None else queue_expires,
            exclusive=conf.event_queue_exclusive if queue_exclusive is None else queue_exclusive,
            durable=conf.event_queue_durable if queue_durable is None else queue_durable,
        )
        self.clock = self.app.clock
        self.adjust_clock = self.clock.adjust
        self.forward_clock = self.clock.forward
        if accept is None:
            accept = {conf.event_serializer, "json"}
        self.accept = accept
        #: Skipped input, by cause: not-json, content-disallowed, not-an-object,
        #: missing-type, missing-field, null-clock, bad-field-type, handler-error.
        self.errors: Counter[str] = Counter()
        #: Events handed to a handler (or to nobody, when no handler matches).
        self.event_count = 0
        self._logged_causes: set[str] = set()
        #: Called on every loop iteration, idle ones included (about once a second).
        self.on_tick: Callable[[], Any] | None = None

    def on_iteration(self) -> None:
        if self.on_tick is not None:
            self.on_tick()

    # -- consuming -----------------------------------------------------------------------

    def get_consumers(self, Consumer: type[Consumer], channel: Any) -> list[Consumer]:
        return [Consumer(queues=[self.queue], callbacks=[self._receive], no_ack=True,
                         accept=self.accept)]

    def on_consume_ready(self, connection: Connection, channel: Any, consumers: Any,
                         wakeup: bool = True, **kwargs: Any) -> None:
        if connection.transport.driver_type == "redis":
            # kombu subscribes to Redis PUB/SUB on the first poll; poll once now
            # so that the heartbeats the wake-up asks for are not published to
            # nobody (Celery loses them).
            try:
                connection.drain_events(timeout=0.05)
            except (TimeoutError, OSError):
                pass
        if wakeup:
            self.wakeup_workers(channel=channel)

    def itercapture(self, limit: int | None = None, timeout: float | None = None,
                    wakeup: bool = True) -> Iterator[Any]:
        """Consume, yielding after each drain; ``limit`` counts drains, as in Celery."""
        return self.consume(limit=limit, timeout=timeout, wakeup=wakeup)

    def capture(self, limit: int | None = None, timeout: float | None = None,
                wakeup: bool = True) -> None:
        """Consume until ``limit`` drains, ``timeout`` idle seconds, or :attr:`should_stop`.

        ``timeout`` raises :class:`TimeoutError` (``socket.timeout``), as in Celery.
        """
        for _ in self.itercapture(limit=limit, timeout=timeout, wakeup=wakeup):
            pass

    def wakeup_workers(self, channel: Any = None) -> None:
        """Ask every worker for a heartbeat now, so the monitor sees them at once."""
        try:
            self.app.control.broadcast("heartbeat", connection=self.connection,
                                       channel=channel)
        except Exception as exc:  # the wake-up is a courtesy; never fail a capture on it
            self._skip("wakeup-failed", f"could not broadcast the wake-up heartbeat: {exc!r}")

    # -- messages ------------------------------------------------------------------------

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        cause = "content-disallowed" if isinstance(exc, ContentDisallowed) else "not-json"
        self._skip(cause, f"cannot decode message ({message.content_type}): {exc}")
        try:
            message.ack()
        except Exception:
            pass

    def _receive(self, body: Any, message: Any) -> None:
        if isinstance(body, list):
            for event in body:
                self._receive_one(event)
        else:
            self._receive_one(body)

    def _receive_one(self, event: Any) -> None:
        try:
            validate_event(event)
        except InvalidEvent as exc:
            self._skip(exc.cause, str(exc))
            return
        type_, event = self.event_from_message(event)
        self.event_count += 1
        try:
            self.process(type_, event)
        except Exception as exc:
            self._skip("handler-error", f"handler for {type_} raised {exc!r}", exc_info=True)

    def process(self, type: str, event: dict[str, Any]) -> None:
        """Call the handler for ``type``, or the ``'*'`` fallback."""
        handler = self.handlers.get(type) or self.handlers.get("*")
        if handler:
            handler(event)

    def event_from_message(self, body: dict[str, Any], localize: bool = True,
                           now: Callable[[], float] = time.time,
                           CLIENT_CLOCK_SKEW: int = CLIENT_CLOCK_SKEW) -> tuple[str, dict]:
        """Apply the receiver-side rules to one event, in place; returns ``(type, event)``.

        * ``task-sent``: the client's clock is replaced by ours minus one
          (clients do not share the cluster's clock), then ours adjusts to it;
        * otherwise our Lamport clock adjusts to the event's, or, when the
          event has none, the event gets our next clock value;
        * ``local_received`` is set to now.

        ``localize`` is accepted for compatibility and ignored: timestamps
        are not shifted by time zones (see the module documentation).
        """
        type_ = body["type"]
        if type_ == "task-sent":
            clock = body["clock"] = (self.clock.value or 1) + CLIENT_CLOCK_SKEW
            self.adjust_clock(clock)
        else:
            clock = body.get("clock")
            if clock is None:
                body["clock"] = self.forward_clock()
            else:
                self.adjust_clock(clock)
        body["local_received"] = now()
        return type_, body

    def _skip(self, cause: str, detail: str, exc_info: bool = False) -> None:
        self.errors[cause] += 1
        if cause not in self._logged_causes:
            self._logged_causes.add(cause)
            logger.warning("Skipped event input (%s): %s; further ones are only counted "
                           "(see EventReceiver.errors)", cause, detail, exc_info=exc_info)
        else:
            logger.debug("Skipped event input (%s): %s", cause, detail)


def consume_forever(
    app: App,
    handlers: dict[str, Handler],
    stop: threading.Event,
    *,
    on_tick: Callable[[], Any] | None = None,
    on_status: Callable[[str], Any] | None = None,
    wakeup: bool = True,
    connect_retries: int | None = 3,
    receiver_factory: Callable[..., EventReceiver] | None = None,
) -> EventReceiver | None:
    """Receive events until ``stop`` is set, reconnecting whenever the broker goes away.

    The first connection is tried ``connect_retries`` times and then raises
    kombu's ``OperationalError`` (so a command can say the broker is
    unreachable), or forever with ``None``; once connected, a lost connection
    is retried forever with back-off, reporting through ``on_status``.  Returns the last receiver
    (its ``errors`` tell what was skipped).
    """
    say = on_status or (lambda text: logger.warning("%s", text))
    factory = receiver_factory or EventReceiver
    connected_once = False
    receiver = None
    delay = 1.0
    while not stop.is_set():
        conn = app.connection_for_read()
        try:
            if not connected_once:
                def first_error(exc: Exception, interval: float) -> None:
                    if stop.is_set():
                        raise ConnectionAbortedError("stopping")
                    say(f"Cannot connect to {redact_url(app.conf.broker_url)}: {exc}; "
                        f"retrying in {interval:.1f}s")

                conn.ensure_connection(first_error if connect_retries is None else None,
                                       max_retries=connect_retries, interval_start=0.5,
                                       interval_step=0.5, interval_max=2.0)
            previous = receiver
            receiver = factory(conn, handlers=handlers, app=app)
            if previous is not None:
                receiver.errors.update(previous.errors)
                receiver.event_count = previous.event_count
            receiver.on_tick = _ticker(receiver, stop, on_tick)
            receiver.connect_max_retries = None

            def on_connection_error(exc: Exception, interval: float) -> None:
                if stop.is_set():
                    raise ConnectionAbortedError("stopping")
                say(f"Cannot connect to {redact_url(app.conf.broker_url)}: {exc}; "
                    f"retrying in {interval:.1f}s")

            receiver.on_connection_error = on_connection_error
            receiver.on_consume_ready = _announce(receiver.on_consume_ready, say, app)
            connected_once = True
            for _ in receiver.itercapture(limit=None, timeout=None, wakeup=wakeup):
                delay = 1.0
        except ConnectionAbortedError:
            break
        except (*conn.connection_errors, *conn.channel_errors, OSError) as exc:
            if not connected_once:
                raise
            if stop.is_set():
                break
            say(f"Connection to {redact_url(app.conf.broker_url)} lost: {exc!r}; "
                f"reconnecting in {delay:.0f}s")
            stop.wait(delay)
            delay = min(delay * 2, 16.0)
        finally:
            try:
                conn.close()
            except Exception:
                pass
    return receiver


def _announce(on_consume_ready: Callable[..., Any], say: Callable[[str], Any], app: App
              ) -> Callable[..., Any]:
    def announce(*args: Any, **kwargs: Any) -> None:
        on_consume_ready(*args, **kwargs)
        say(f"connected to {redact_url(app.conf.broker_url)}, receiving events")
    return announce


def _ticker(receiver: EventReceiver, stop: threading.Event,
            on_tick: Callable[[], Any] | None) -> Callable[[], None]:
    def tick() -> None:
        if stop.is_set():
            receiver.should_stop = True
        if on_tick is not None:
            on_tick()
    return tick
