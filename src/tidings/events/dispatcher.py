"""EventDispatcher: publishes events, with Celery 5.7's API and wire format.

Differences from Celery, each a fix of a way Celery loses or corrupts events:

* the outbound buffer (events kept while the broker is unreachable) is
  bounded by ``outbound_limit``; when full the *oldest* event is dropped and
  counted in ``stats['dropped_overflow']``;
* an event that cannot be serialised is a poison pill: it is dropped with an
  error log and counted in ``stats['dropped_poison']`` instead of being
  re-buffered and retried forever;
* :meth:`extend_buffer` carries the group buffers (pending ``task.multi``
  batches) as well as the outbound buffer, so a reconnect loses nothing;
* every mutable part (enabled flag, groups, buffers) is guarded by one
  re-entrant lock, so remote control can toggle groups from another thread;
* every message carries a per-sender sequence number in its headers (the
  body is Celery's), so that receivers count the events that never reached
  them (:mod:`tidings.protocol.loss`); the numbers belong to the node name
  in this process, not to one dispatcher (:mod:`.sequence`), so a worker that
  replaces its dispatcher on reconnect goes on counting, and
  :meth:`extend_buffer` carries the drop counters over with the events;
* ``max_delay`` (ours, off by default as in Celery) makes batching
  adaptive: a batch is published once its oldest event is ``max_delay``
  seconds old, by a timer of the dispatcher's own if no later send does it
  (or, with ``batch_timer=False``, by its owner calling :meth:`flush_due`),
  and an event that finds the group idle (nothing published for
  ``max_delay``) goes at once, as a batch of one.  The timer of a sender
  that keeps sending, and so publishes its batches itself, comes back less
  and less often (up to :data:`TIMER_PATIENCE_MAX`), since a thread waking
  up costs such a sender more than a batch does.  Celery's batches wait
  for ``buffer_limit`` events or for their owner to flush, so at a
  moderate rate each event waits about ``buffer_limit`` events' time;
* with ``max_window`` as well, the delay follows the sender's load: each
  batch that waited the whole delay doubles it, up to ``max_window``, and
  the owner brings it back to ``max_delay`` whenever it has no work
  waiting (``flush_due(idle=True)``, or :meth:`flush_idle` before it waits
  for work).  A sender with time to spare keeps small batches; a busy one
  publishes a few large batches rather than one small batch every
  ``max_delay``, which is what it and every consumer pay for per message.
  (A timer-driven sender has no such signal: it keeps ``max_delay``.)
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from kombu import Connection, Producer
from kombu.exceptions import EncodeError

from ..config import default_settings
from ..protocol.clock import default_clock
from ..protocol.events import (
    BUFFER_LIMIT,
    DELIVERY_MODE,
    build_event,
    group_from,
    multi_routing_key,
    routing_key_for,
)
from ..protocol.events import utcoffset as _utcoffset
from ..protocol.loss import SENDER_HEADER, SEQUENCE_HEADER
from ..transport import (
    Declarations,
    connection_from_settings,
    get_exchange,
    publish_prepared,
)
from ..utils.jsoncodec import (
    ENCODE_ERRORS,
    JSON_CONTENT_TYPE,
    encode_event,
    encode_plain,
    plain_event,
)
from ..utils.jsoncodec import loads as json_loads
from ..utils.nodenames import anon_nodename
from .batch_timer import BatchTimer
from .sequence import Sequence, sequence_for

if TYPE_CHECKING:
    from ..app import App

__all__ = ["DISABLED_TRANSPORTS", "Event", "EventDispatcher"]

logger = logging.getLogger("tidings.events.dispatcher")

#: Transports on which events cannot be sent (Celery disables them on SQL).
DISABLED_TRANSPORTS = frozenset({"sql"})
#: Seconds the batch timer of a sender that keeps sending waits between two
#: looks, at most: the longest the last batch of a burst can wait.
TIMER_PATIENCE_MAX = 0.05
#: What a JSON event is published as (kombu's options; the body is already encoded).
_JSON = {"content_type": JSON_CONTENT_TYPE, "content_encoding": "utf-8"}


def Event(type: str, _fields: dict | None = None, __dict__: type = dict,
          __now__: Callable[[], float] = time.time, **fields: Any) -> dict:
    """A bare event dict (Celery's ``Event`` factory): ``type`` and ``timestamp`` added."""
    event = __dict__(_fields, **fields) if _fields else fields
    if "timestamp" not in event:
        event.update(timestamp=__now__(), type=type)
    else:
        event["type"] = type
    return event


class EventDispatcher:
    """Send events to the event exchange.

    ``EventDispatcher(connection=None, hostname=None, enabled=True,
    channel=None, buffer_while_offline=True, app=None, serializer=None,
    groups=None, delivery_mode=1, buffer_group=None, buffer_limit=24,
    on_send_buffered=None)``: Celery's parameters and meanings.  ``groups``
    limits sending to those event groups (empty = all); events of a group in
    ``buffer_group`` are collected and published as one ``<group>.multi``
    message when ``buffer_limit`` is reached or :meth:`flush` is called.
    Without an app, the settings come from the environment and the clock is
    the process's default one.
    """

    DISABLED_TRANSPORTS = DISABLED_TRANSPORTS

    def __init__(
        self,
        connection: Connection | None = None,
        hostname: str | None = None,
        enabled: bool = True,
        channel: Any = None,
        buffer_while_offline: bool = True,
        app: App | None = None,
        serializer: str | None = None,
        groups: Iterable[str] | None = None,
        delivery_mode: int = DELIVERY_MODE,
        buffer_group: Iterable[str] | None = None,
        buffer_limit: int = BUFFER_LIMIT,
        on_send_buffered: Callable[[], Any] | None = None,
        outbound_limit: int | None = None,
        max_delay: float | None = None,
        batch_timer: bool = True,
        max_window: float | None = None,
    ) -> None:
        self.app = app
        self.conf = conf = app.conf if app is not None else default_settings()
        self.connection = connection
        self.channel = channel
        if channel is not None and connection is None:
            self.connection = channel.connection.client
        self.hostname = hostname or anon_nodename()
        self.buffer_while_offline = buffer_while_offline
        self.buffer_group = frozenset(buffer_group or ())
        self.buffer_limit = buffer_limit
        self.on_send_buffered = on_send_buffered
        self.serializer = serializer or conf.event_serializer
        self.groups = set(groups or ())
        self.delivery_mode = delivery_mode
        self.clock = app.clock if app is not None else default_clock()
        self.mutex = threading.RLock()
        self.producer: Producer | None = None
        self._closed = False
        #: Events waiting for their group's batch (see :meth:`_for_batch`).
        self._group_buffer: dict[str, list[Any]] = {g: [] for g in self.buffer_group}
        #: Adaptive batching (see the module documentation); None: Celery's batching.
        self.max_delay = max_delay
        #: The longest the delay grows to under load (None: it stays ``max_delay``).
        self.max_window = max_window
        #: The delay now: ``max_delay``, or longer while the owner is busy (``max_window``).
        self.window = max_delay or 0.0
        #: False: no timer thread; the owner calls :meth:`flush_due` often (a worker's loop).
        self.batch_timer = batch_timer
        self._oldest_buffered: float | None = None  # monotonic time of the oldest event
        self._last_batch = float("-inf")  # monotonic time a batch was last published
        self._declarations = Declarations()  # the exchange bound to each channel once
        self._timer: BatchTimer | None = None
        self._patience = max_delay or 0.0  # how long the timer waits beyond a batch's due time
        self._last_send = float("-inf")  # monotonic time an event was last buffered
        self.outbound_limit = outbound_limit or conf.event_outbound_buffer_limit
        self._outbound_buffer: deque[tuple[Any, str]] = deque()
        self.on_enabled: set[Callable[[], Any]] = set()
        self.on_disabled: set[Callable[[], Any]] = set()
        #: Counters: sent, buffered, dropped_overflow, dropped_poison, dropped_closed.
        self.stats: Counter[str] = Counter()
        self.headers = {"hostname": self.hostname}
        self.sequence = sequence_for(self.hostname)
        self.pid = os.getpid()
        exchange_conn = self.connection or connection_from_settings(conf)
        self.exchange = get_exchange(exchange_conn, conf.event_exchange)
        if exchange_conn.transport.driver_type in self.DISABLED_TRANSPORTS:
            enabled = False
        self.enabled = enabled
        if enabled:
            self.enable()

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> EventDispatcher:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def enable(self) -> None:
        with self.mutex:
            self.producer = Producer(
                self.channel or self.connection,
                exchange=self.exchange,
                serializer=self.serializer,
                auto_declare=False,
            )
            self._closed = False
            self.enabled = True
        for callback in list(self.on_enabled):
            callback()

    def disable(self) -> None:
        if self.enabled:
            self.enabled = False
            self.close()
            for callback in list(self.on_disabled):
                callback()

    def close(self) -> None:
        """Stop publishing; buffered events stay for a later :meth:`enable`."""
        with self.mutex:
            self._closed = True
            self.producer = None
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.stop()

    @property
    def publisher(self) -> Producer | None:
        return self.producer

    @publisher.setter
    def publisher(self, producer: Producer | None) -> None:
        self.producer = producer

    # -- sending ---------------------------------------------------------------------------

    def _build(self, type: str, fields: dict, blind: bool, utcoffset: Callable[[], float]
               ) -> dict:
        return build_event(
            type, fields,
            hostname=self.hostname,
            utcoffset=utcoffset(),
            pid=self.pid,
            clock=None if blind else self.clock.forward(),
        )

    def publish(self, type: str, fields: dict, producer: Producer, blind: bool = False,
                Event: Callable[..., dict] = Event, **kwargs: Any) -> Any:
        """Publish one event with the caller's producer (used for ``task-sent``).

        Ignores ``enabled``, ``groups`` and buffering, as in Celery, so the
        event can share the channel (and transaction) of the task message.
        """
        event = self._build(type, fields, blind, _utcoffset)
        with self.mutex:
            return self._publish(event, producer, routing_key_for(type), **kwargs)

    def send(self, type: str, blind: bool = False, utcoffset: Callable[[], float] = _utcoffset,
             retry: bool = False, retry_policy: dict | None = None,
             Event: Callable[..., dict] = Event, **fields: Any) -> Any:
        """Send event ``type`` with ``fields``; ``None`` when disabled or filtered out."""
        return self.send_fields(type, fields, blind, utcoffset, retry, retry_policy)

    def send_fields(self, type: str, fields: dict[str, Any], blind: bool = False,
                    utcoffset: Callable[[], float] = _utcoffset, retry: bool = False,
                    retry_policy: dict | None = None) -> Any:
        """:meth:`send`, with the fields in a dict that the dispatcher takes over (it
        may keep it until the event is published: the caller leaves it alone).

        Our senders use this: CPython binds each keyword argument of a call
        by comparing it with every parameter of :meth:`send` that it is not,
        about 1.2 µs for a ``task-sent``'s twelve fields, a fifth of what a
        buffered send costs otherwise.
        """
        if not self.enabled:
            return None
        group = group_from(type)
        groups = self.groups
        if groups and group not in groups:
            return None
        if group in self.buffer_group:
            if utcoffset is _utcoffset and self.serializer == "json" and plain_event(fields):
                # Built and encoded with the rest of its batch (see _settled).
                event = (type, fields, self.clock.forward(), time.time())
            else:
                event = self._for_batch(self._build(type, fields, False, utcoffset),
                                        multi_routing_key(group))
                if event is None:
                    return None
            with self.mutex:
                buf = self._group_buffer.setdefault(group, [])
                buf.append(event)
                full = len(buf) >= self.buffer_limit
                if self.max_delay is not None and not full:
                    full = self._batch_due()
                if full:
                    self.flush()
            if not full and self.on_send_buffered:
                self.on_send_buffered()
            return None
        event = self._build(type, fields, blind, _utcoffset)
        with self.mutex:
            if self._closed:
                self.stats["dropped_closed"] += 1
                return None
            return self._publish(event, self.producer, routing_key_for(type), retry,
                                 retry_policy)

    def _for_batch(self, event: dict | bytes, routing_key: str) -> dict | bytes | None:
        """An event as this dispatcher's batches (to ``routing_key``) hold it; ``None``
        if it cannot be serialised (dropped and counted).

        For JSON, the event's text, encoded as it comes, and a batch is the
        join of its events': one event that cannot be encoded is dropped
        alone, where Celery loses the batch (and a batch that could never
        be sent is retried forever).  Another serializer's batch is
        serialised whole by kombu, from the events themselves (a JSON
        dispatcher's events taken over are decoded back to them).

        :meth:`send` calls this only for an event that may not encode; one
        whose fields are all plain values (:func:`plain_event`: text,
        numbers, booleans, ``None``) always does, and waits as a tuple of
        its type, fields, clock and time, to be built and encoded with its
        batch (:meth:`_settled`).  Building an event where it is sent costs
        a client's ``task-sent`` about three times as long as in that one
        pass: the sender's own work between two events leaves the caches
        cold for it.
        """
        if self.serializer == "json":
            if event.__class__ is bytes:
                return event
            try:
                return encode_event(event)
            except ENCODE_ERRORS as exc:
                with self.mutex:
                    self._drop_poison(event, routing_key, exc)
                return None
        return json_loads(event) if event.__class__ is bytes else event

    def _settled(self, buf: list) -> list:
        """A group's waiting events as their batch is published: those left to be
        built with it (see :meth:`_for_batch`) built and encoded now, with the
        clock and time they were sent at, in one pass.  Under the mutex."""
        hostname, pid, offset = self.hostname, self.pid, _utcoffset()
        return [e if e.__class__ is not tuple else encode_plain(build_event(
                    e[0], e[1], hostname=hostname, utcoffset=offset, pid=pid, clock=e[2],
                    timestamp=e[3])) for e in buf]

    def _batch_due(self) -> bool:
        """Adaptive batching, under the mutex: whether to publish the batches now.

        Now if the group was idle, or the oldest buffered event has waited
        the delay (``window``); otherwise the timer is asked to come back then.
        """
        now = self._last_send = time.monotonic()
        delay = self.window
        oldest = self._oldest_buffered
        if oldest is not None:
            if now - oldest < delay:
                return False
            self._widen()
            return True
        if now - self._last_batch >= delay:  # idle: a batch of one, at once
            return True
        self._note_buffered(now)
        return False

    def _widen(self) -> None:
        """A batch waited the whole delay: unless the owner says it idles, wait longer."""
        if self.max_window is not None and self.batch_timer is False:
            self.window = min(self.window * 2, self.max_window)

    def _relax(self) -> None:
        """The owner has no work waiting: back to the shortest delay."""
        self.window = self.max_delay or 0.0

    def _note_buffered(self, now: float) -> None:
        """The first event is buffered: the timer publishes it ``window`` from now."""
        self._oldest_buffered = now
        timer = self._timer
        if timer is None and self.batch_timer and not self._closed:
            timer = self._timer = BatchTimer(self)
            weakref.finalize(self, timer.stop)  # a dispatcher dropped unclosed ends it too
            timer.start()
        if timer is not None:
            timer.schedule(now + self.window)

    def flush_due(self, idle: bool = False) -> None:
        """Publish the batches whose oldest event has waited the delay.

        For an owner that runs a loop of its own (the worker), with
        ``batch_timer=False``: it calls this on every turn, and says whether
        it is ``idle`` (no work waiting): the delay then goes back to
        ``max_delay`` first.
        """
        with self.mutex:
            if idle:
                self._relax()
            oldest = self._oldest_buffered
            if oldest is None or oldest + self.window > time.monotonic():
                return
            if not idle:
                self._widen()
            self.flush(errors=False)

    def timer_turn(self) -> float | None:
        """The batch timer's visit: publish the batches if due, and say when to come
        back (a monotonic time; ``None``: when the next batch starts).

        If nothing is due (the sender published the batch the timer came
        for), or an event came within the delay, the sender is busy: it
        publishes its next batches itself, on its next sends.  The timer then
        comes back later each time (up to :data:`TIMER_PATIENCE_MAX`), so that
        it does not wake up once per batch: a thread waking up costs a busy
        sender more than the batch does.  So the last batch of a burst waits
        up to that long; a sender that sends now and then has each batch
        published on time.
        """
        with self.mutex:
            now = time.monotonic()
            oldest = self._oldest_buffered
            if oldest is not None and oldest + self.window <= now:
                self.flush(errors=False)
                if now - self._last_send >= self.window:  # the sender has stopped
                    self._patience = self.max_delay or 0.0
                    return None
            elif oldest is None and self._patience >= TIMER_PATIENCE_MAX:
                return None  # quiet for a while: sleep until a batch starts
            self._patience = min(self._patience * 2, TIMER_PATIENCE_MAX)
            oldest = self._oldest_buffered
            if oldest is None:
                return now + self._patience
            return max(oldest + self.window, now + self._patience)

    def flush_idle(self) -> None:
        """The owner is about to wait for work: publish everything, and bring the
        delay back to ``max_delay``."""
        with self.mutex:
            self._relax()
            if any(self._group_buffer.values()) or self._outbound_buffer:
                self.flush()

    def _publish(self, event: Any, producer: Producer | None, routing_key: str,
                 retry: bool = False, retry_policy: dict | None = None, **kwargs: Any) -> Any:
        if producer is None:
            self.stats["dropped_closed"] += 1
            return None
        body, options = event, {"serializer": self.serializer}
        if self.serializer == "json":
            # orjson where it writes the same values, else the standard
            # library's C encoder (see utils/jsoncodec.py): a fraction of
            # kombu's cost either way.
            try:
                if event.__class__ is list and event and event[0].__class__ is bytes:
                    body = b"[" + b",".join(event) + b"]"  # encoded as they were buffered
                else:
                    body = encode_event(event)
            except ENCODE_ERRORS as exc:
                self._drop_poison(event, routing_key, exc)
                return None
            options = _JSON
        count = len(event) if isinstance(event, list) else 1
        seq = self.sequence
        try:
            with seq.lock:
                result = None
                if options is not _JSON or kwargs or not self._publish_prepared(
                        producer, routing_key, body, seq):
                    result = producer.publish(
                        body,
                        routing_key=routing_key,
                        exchange=self.exchange.name,
                        retry=retry,
                        retry_policy=retry_policy,
                        declare=[self._declarations.for_producer(producer, self.exchange)],
                        headers={**self.headers, SENDER_HEADER: seq.sender,
                                 SEQUENCE_HEADER: seq.next},
                        delivery_mode=self.delivery_mode,
                        **options,
                        **kwargs,
                    )
                seq.next += count
        except EncodeError as exc:
            self._drop_poison(event, routing_key, exc)
            return None
        except Exception:
            if not self.buffer_while_offline:
                raise
            self._buffer_outbound(event, routing_key)
            return None
        self.stats["sent"] += count
        return result

    def _publish_prepared(self, producer: Producer, routing_key: str, body: str,
                          seq: Sequence) -> bool:
        """Publish on RabbitMQ's fast path (:mod:`tidings.transport.publish`); ``False``
        when it does not apply or failed: kombu's path then publishes, with its retries."""
        try:
            return publish_prepared(
                producer, self.exchange, routing_key, body,
                {**self.headers, SENDER_HEADER: seq.sender}, SEQUENCE_HEADER, seq.next,
                _JSON["content_type"], _JSON["content_encoding"], self.delivery_mode)
        except Exception as exc:  # a connection lost mid-write: kombu reconnects
            logger.debug("prepared publish failed (%r); publishing through kombu", exc)
            return False

    def _drop_poison(self, event: Any, routing_key: str, exc: Exception) -> None:
        count = len(event) if isinstance(event, list) else 1
        self.stats["dropped_poison"] += count
        logger.error("Dropped %d event(s) for %s that cannot be serialised: %s",
                     count, routing_key, exc)

    def _buffer_outbound(self, event: Any, routing_key: str) -> None:
        buf = self._outbound_buffer
        if len(buf) >= self.outbound_limit:
            dropped, _ = buf.popleft()
            n = len(dropped) if isinstance(dropped, list) else 1
            if not self.stats["dropped_overflow"]:
                logger.warning("Outbound event buffer full (%d messages): dropping the oldest",
                               self.outbound_limit)
            self.stats["dropped_overflow"] += n
        buf.append((event, routing_key))
        self.stats["buffered"] += 1

    def flush(self, errors: bool = True, groups: bool = True) -> None:
        """Publish what was buffered: failed sends (``errors``) and group batches."""
        with self.mutex:
            if self._closed:
                return
            if errors:
                pending = list(self._outbound_buffer)
                self._outbound_buffer.clear()
                for event, routing_key in pending:
                    self._publish(event, self.producer, routing_key)
            if groups:
                for group, buf in self._group_buffer.items():
                    if not buf:
                        continue
                    batch = self._settled(buf)
                    self._publish(batch, self.producer, multi_routing_key(group))
                    del buf[: len(batch)]
                self._oldest_buffered = None
                self._last_batch = time.monotonic()

    def extend_buffer(self, other: EventDispatcher) -> None:
        """Take over ``other``'s unsent events: outbound buffer *and* group batches."""
        with other.mutex:
            outbound = list(other._outbound_buffer)
            grouped = {g: other._settled(b) for g, b in other._group_buffer.items() if b}
            other._outbound_buffer.clear()
            for buf in other._group_buffer.values():
                buf.clear()
            stats = Counter(other.stats)
        with self.mutex:
            self.stats.update(stats)
            for event, routing_key in outbound:
                if event.__class__ is list:  # a batch that failed: its events as ours
                    event = self._held_as_ours(event, routing_key)
                self._buffer_outbound(event, routing_key)
            for group, events in grouped.items():
                events = self._held_as_ours(events, multi_routing_key(group))
                if group in self.buffer_group:
                    self._group_buffer.setdefault(group, []).extend(events)
                    if self.max_delay is not None and self._oldest_buffered is None:
                        self._note_buffered(time.monotonic())
                else:
                    self._buffer_outbound(events, multi_routing_key(group))

    def _held_as_ours(self, events: list, routing_key: str) -> list:
        """Another dispatcher's waiting events, as this one's batches hold them."""
        return [e for e in (self._for_batch(e, routing_key) for e in events) if e is not None]

    @property
    def dropped(self) -> int:
        """Events this sender dropped itself (buffer overflow, not serialisable): what
        its heartbeats report, since no receiver can see them missing."""
        return self.stats["dropped_overflow"] + self.stats["dropped_poison"]

    @property
    def failed_sends(self) -> int:
        """Messages whose publishing failed, waiting for :meth:`flush` to retry them."""
        return len(self._outbound_buffer)

    @property
    def buffered(self) -> int:
        """Events not yet published (outbound buffer plus group batches)."""
        with self.mutex:
            out = sum(len(e) if isinstance(e, list) else 1 for e, _ in self._outbound_buffer)
            return out + sum(len(b) for b in self._group_buffer.values())
