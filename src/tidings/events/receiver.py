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
* Events that never arrived are counted, by cause, in :attr:`EventReceiver.lost`:
  gaps in Tidings senders' sequence numbers, and on RabbitMQ what the queue
  itself dropped (its message TTL, ``event_queue_max_length``), which it
  dead-letters to a queue of its own that the receiver also reads
  (``event_queue_dead_letter``; see :mod:`tidings.events.loss`).
* JSON bodies are decoded by :mod:`tidings.utils.jsoncodec` (orjson when
  installed, else the standard library), not by kombu: the same values, at
  a fraction of the cost, but no kombu object hook, so an object such as
  ``{"__type__": "datetime", ...}`` in an event stays a dict (no Celery
  event carries one; a sender must not choose the types a monitor builds).
* The events of one message (a ``.multi`` batch) share one
  ``local_received``: they arrived together.  Celery calls ``time.time()``
  for each.  The clock moves over them in order with the same values as
  Celery's event by event, its lock taken once per message
  (:func:`~tidings.protocol.clock.stamp_batch`).
* Timestamps are epoch seconds and are left alone.  Celery shifts them by
  the difference between the sender's and the receiver's UTC offsets, which
  moves every event of a sender in another time zone by hours; the sender's
  ``utcoffset`` is kept on the event for whoever wants to show local time.
"""

from __future__ import annotations

import binascii
import time
import uuid as _uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from kombu import Connection, Consumer
from kombu.exceptions import ContentDisallowed
from kombu.mixins import ConsumerMixin
from kombu.serialization import loads as kombu_loads
from kombu.serialization import prepare_accept_content

from ..config import default_settings
from ..control import broadcast
from ..protocol.clock import default_clock
from ..protocol.events import CLIENT_CLOCK_SKEW
from ..protocol.loss import read_sequence
from ..transport import (
    DEAD_LETTER_DRIVERS,
    connection_from_settings,
    dead_letter_queue,
    event_queue,
    event_stream,
    get_exchange,
    named_event_queue,
)
from ..utils.base64codec import decode as b64decode
from ..utils.jsoncodec import DECODE_ERRORS, JSON_CONTENT_TYPE, TEXT_ENCODINGS
from ..utils.jsoncodec import loads as json_loads
from .ingest import EventPipeline
from .subscription import Subscription

if TYPE_CHECKING:
    from ..app import App

__all__ = ["EventReceiver", "Handler"]

Handler = Callable[[dict[str, Any]], Any]

#: kombu's body encoding on Redis (the envelope's ``properties.body_encoding``).
BASE64 = "base64"


class EventReceiver(ConsumerMixin):
    """Capture events.

    ``EventReceiver(connection, handlers=None, routing_key='#', node_id=None,
    app=None, queue_prefix=None, accept=None, queue_ttl=None,
    queue_expires=None, queue_exclusive=None, queue_durable=None)``.
    The queue is ``<queue_prefix>.<node_id>`` (a fresh uuid by default),
    declared with the app's ``event_queue_*`` settings unless overridden.
    Without an app, the settings come from the environment and the clock is
    the process's default one.

    ``subscription`` (ours): read from a durable queue or a RabbitMQ stream
    instead (see :mod:`tidings.events.subscription`); events are then
    acknowledged once applied.

    ``pipeline`` (ours): an :class:`~tidings.events.ingest.EventPipeline` to
    feed instead of one of the receiver's own (which dispatches to
    :meth:`process`); a source that reconnects passes the same one to each
    receiver, so counts carry over.  ``on_tick``: called on every loop
    iteration, idle ones included (about once a second).

    Hooks of kombu's ``ConsumerMixin`` apply: override ``on_consume_ready``,
    ``on_iteration``, ``create_connection`` ... in a subclass.
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
        *,
        pipeline: EventPipeline | None = None,
        on_tick: Callable[[], Any] | None = None,
        subscription: Subscription | None = None,
    ) -> None:
        self.app = app
        self.conf = conf = app.conf if app is not None else default_settings()
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
        conn = self.connection or connection_from_settings(conf)
        self.exchange = get_exchange(conn, conf.event_exchange)
        dead_letter = (conf.get("event_queue_dead_letter", True)
                       and conn.transport.driver_type in DEAD_LETTER_DRIVERS)
        limits = {"max_length": conf.get("event_queue_max_length"),
                  "max_length_bytes": conf.get("event_queue_max_length_bytes")}
        self.queue = event_queue(
            f"{self.queue_prefix}.{self.node_id}",
            self.exchange,
            routing_key,
            ttl=conf.event_queue_ttl if queue_ttl is None else queue_ttl,
            expires=conf.event_queue_expires if queue_expires is None else queue_expires,
            exclusive=conf.event_queue_exclusive if queue_exclusive is None else queue_exclusive,
            durable=conf.event_queue_durable if queue_durable is None else queue_durable,
            dead_letter=dead_letter, **limits,
        )
        self.subscription = subscription = subscription or Subscription()
        subscription.check(conn.transport.driver_type)
        if subscription.queue:
            self.queue = named_event_queue(
                subscription.queue, self.exchange, routing_key,
                ttl=queue_ttl, expires=queue_expires, dead_letter=dead_letter, **limits)
        elif subscription.stream:
            dead_letter = False  # a stream drops nothing of its own accord
            self.queue = event_stream(subscription.stream, self.exchange, routing_key,
                                      max_age=subscription.max_age_argument,
                                      max_bytes=subscription.max_bytes,
                                      offset=subscription.offset)
        #: Where the queue's dropped messages go to be counted (RabbitMQ), or None.
        self.dead_queue = dead_letter_queue(self.queue) if dead_letter else None
        #: The stream offset of the last message applied (``--stream``), or None.
        self.last_offset: int | None = None
        self.clock = app.clock if app is not None else default_clock()
        self.adjust_clock = self.clock.adjust
        self.forward_clock = self.clock.forward
        if accept is None:
            accept = {conf.event_serializer, "json"}
        self.accept = accept
        self._accept_types = prepare_accept_content(accept)  # content types, as kombu's
        self._accepts_json = JSON_CONTENT_TYPE in self._accept_types
        self.pipeline = pipeline or EventPipeline(self.clock, self._dispatch)
        self.on_tick = on_tick

    @property
    def errors(self) -> Counter[str]:
        """Skipped input, by cause (see :mod:`tidings.events.ingest`)."""
        return self.pipeline.errors

    @property
    def lost(self) -> Counter[str]:
        """Events that never reached this receiver, by cause (see :mod:`tidings.events.loss`)."""
        return self.pipeline.losses.lost

    @property
    def event_count(self) -> int:
        """Events handed to a handler (or to nobody, when no handler matches)."""
        return self.pipeline.event_count

    def stop(self) -> None:
        """Ask a running capture to return (from any thread; within about a second)."""
        self.should_stop = True

    def on_iteration(self) -> None:
        if self.on_tick is not None:
            self.on_tick()

    # -- consuming -----------------------------------------------------------------------

    def get_consumers(self, Consumer: type[Consumer], channel: Any) -> list[Consumer]:
        consumers = []
        if self.dead_queue is not None:  # declared first: the queue names it
            consumers.append(Consumer(queues=[self.dead_queue], on_message=self._dead,
                                      no_ack=True, accept=self.accept))
        sub = self.subscription
        # on_message: the body is decoded here (see _decode), not by kombu.
        if sub.durable:  # acknowledged once applied; a bounded number in flight
            consumers.append(Consumer(queues=[self.queue], on_message=self._on_message_acked,
                                      no_ack=False, accept=self.accept,
                                      prefetch_count=sub.prefetch))
        else:
            consumers.append(Consumer(queues=[self.queue], on_message=self._on_message,
                                      no_ack=True, accept=self.accept))
        return consumers

    def on_consume_ready(self, connection: Connection, channel: Any, consumers: Any,
                         wakeup: bool = True, **kwargs: Any) -> None:
        consume_envelopes = getattr(channel, "consume_envelopes", None)
        if consume_envelopes is not None and not self.subscription.durable:
            # Redis PUB/SUB messages come here decoded, not as kombu messages
            # (transport/redis_read.py; what this cannot take goes kombu's way)
            consume_envelopes(self.queue.name, self._on_envelope)
        consume_deliveries = getattr(channel, "consume_deliveries", None)
        if consume_deliveries is not None and not self.subscription.durable:
            # RabbitMQ messages come here as properties and body, not as kombu
            # messages (transport/buffered.py: connection_for_read's connections)
            consume_deliveries(self.queue.name, self._on_delivery,
                               several=self._drains_uncounted)
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

    #: Whether the running capture has no ``limit`` (set by :meth:`consume`).
    _drains_uncounted = False

    def consume(self, limit: int | None = None, timeout: float | None = None,
                safety_interval: float = 1, **kwargs: Any) -> Iterator[Any]:
        # Without a limit nobody counts drains, so on RabbitMQ one drain may take
        # every message already read (transport/buffered.py: consume_deliveries).
        self._drains_uncounted = limit is None
        return super().consume(limit=limit, timeout=timeout,
                               safety_interval=safety_interval, **kwargs)

    def itercapture(self, limit: int | None = None, timeout: float | None = None,
                    wakeup: bool = True) -> Iterator[Any]:
        """Consume, yielding after each drain; ``limit`` counts drains, as in Celery
        (without one, a drain may take several messages: every one already read)."""
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
            broadcast(self.conf, self.clock, self.connection, "heartbeat", channel=channel)
        except Exception as exc:  # the wake-up is a courtesy; never fail a capture on it
            self.pipeline.skip("wakeup-failed",
                               f"could not broadcast the wake-up heartbeat: {exc!r}")

    # -- messages ------------------------------------------------------------------------

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._skip_undecodable(message.content_type, exc)
        try:
            message.ack()
        except Exception:
            pass

    def _skip_undecodable(self, content_type: Any, exc: Exception) -> None:
        """Count a message whose body could not be decoded (kombu's or an envelope)."""
        cause = "content-disallowed" if isinstance(exc, ContentDisallowed) else "not-json"
        self.pipeline.skip(cause, f"cannot decode message ({content_type}): {exc}")

    def _json_text(self, content_type: Any, content_encoding: Any) -> bool:
        """Whether a body of this type and encoding is JSON text this receiver accepts
        (decoded here; anything else goes through kombu, which enforces ``accept``)."""
        return (self._accepts_json and content_type == JSON_CONTENT_TYPE
                and content_encoding in TEXT_ENCODINGS)

    def _decode(self, message: Any) -> tuple[bool, Any]:
        """``(True, body)``, or ``(False, None)`` once the error is counted.

        JSON, the events' content type, is decoded directly (see
        :mod:`tidings.utils.jsoncodec`: orjson when installed); anything
        else goes through kombu, which enforces ``accept``.
        """
        try:
            if self._json_text(message.content_type, message.content_encoding):
                return True, json_loads(message.body)
            return True, message.decode()
        except Exception as exc:  # undecodable input is counted, never raised
            self.on_decode_error(message, exc)
            return False, None

    def _on_message(self, message: Any) -> None:
        ok, body = self._decode(message)
        if ok:
            self._receive(body, message.headers)

    def _on_delivery(self, properties: dict[str, Any], body: bytes) -> None:
        """A RabbitMQ message read directly (see :mod:`tidings.transport.buffered`)."""
        content_type = properties.get("content_type")
        content_encoding = properties.get("content_encoding")
        try:
            if self._json_text(content_type, content_encoding):
                decoded = json_loads(body)
            else:  # kombu's decoding, which enforces accept, as message.decode() does
                decoded = kombu_loads(body, content_type, content_encoding,
                                      accept=self._accept_types)
        except Exception as exc:  # undecodable input is counted, never raised
            self._skip_undecodable(content_type, exc)
            return
        headers = properties.get("application_headers")
        self._receive(decoded, headers if headers.__class__ is dict else None)

    def _on_envelope(self, envelope: dict[str, Any]) -> bool:
        """A Redis message as kombu's envelope (see :mod:`tidings.transport.redis_read`);
        ``False`` for what kombu must decode (not JSON in base64, or JSON not accepted)."""
        properties = envelope.get("properties")
        body = envelope.get("body")
        if (not self._json_text(envelope.get("content-type"), envelope.get("content-encoding"))
                or properties.__class__ is not dict
                or properties.get("body_encoding") != BASE64 or body.__class__ is not str):
            return False
        try:
            decoded = json_loads(b64decode(body))
        except (binascii.Error, *DECODE_ERRORS) as exc:  # counted, never raised
            self._skip_undecodable(JSON_CONTENT_TYPE, exc)
            return True
        headers = envelope.get("headers")
        self._receive(decoded, headers if headers.__class__ is dict else None)
        return True

    def _on_message_acked(self, message: Any) -> None:
        ok, body = self._decode(message)
        if ok:
            self._receive_acked(body, message)

    def _receive_acked(self, body: Any, message: Any) -> None:
        try:
            self._receive(body, message.headers)
        finally:  # a handler that raised was counted: the event is not retried forever
            message.ack()
        offset = message.headers.get("x-stream-offset") if message.headers else None
        if isinstance(offset, int) and not isinstance(offset, bool):
            self.last_offset = offset

    def _dead(self, message: Any) -> None:
        """A message our queue dropped: count its events as lost, by the broker's reason."""
        try:
            body = message.decode()
        except Exception:  # counted all the same: it was an event message
            body = None
        self.pipeline.losses.dead_letter(message.headers,
                                         len(body) if isinstance(body, list) else 1)

    def _receive(self, body: Any, headers: dict[str, Any] | None) -> None:
        sequence = read_sequence(headers)
        if sequence is not None:
            self.pipeline.losses.sequence(*sequence, len(body) if isinstance(body, list) else 1)
        self.pipeline.feed(body)

    def _dispatch(self, type_: str, event: dict[str, Any]) -> None:
        self.process(type_, event)

    def process(self, type: str, event: dict[str, Any]) -> None:
        """Call the handler for ``type``, or the ``'*'`` fallback."""
        handler = self.handlers.get(type) or self.handlers.get("*")
        if handler:
            handler(event)

    def event_from_message(self, body: dict[str, Any], localize: bool = True,
                           now: Callable[[], float] = time.time,
                           CLIENT_CLOCK_SKEW: int = CLIENT_CLOCK_SKEW) -> tuple[str, dict]:
        """Apply the receiver-side rules to one event, in place; returns ``(type, event)``.

        See :meth:`EventPipeline.stamp`.  ``localize`` is accepted for
        compatibility and ignored: timestamps are not shifted by time zones
        (see the module documentation).
        """
        return self.pipeline.stamp(body, now, CLIENT_CLOCK_SKEW)
