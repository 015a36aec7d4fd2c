"""Exchanges, queues and the remote-control mailbox, declared as Celery 5.7 declares them.

Tidings and Celery processes share one topology: the event exchange is a
durable ``topic`` exchange, except on Redis where kombu implements broadcast
with PUB/SUB and it must be ``fanout``; task queues are durable direct
queues named after their routing key; the remote-control mailbox is
``<control_exchange>.pidbox`` (fanout) with replies on
``reply.<control_exchange>.pidbox``.  Everything that declares one of these
builds it here.
"""

from __future__ import annotations

from typing import Any

from kombu import Connection, Exchange, Queue
from kombu.pidbox import Mailbox

from ..config import ImproperlyConfigured
from ..protocol.loss import DEAD_LETTER_SUFFIX

__all__ = ["DEAD_LETTER_DRIVERS", "DEAD_LETTER_QUEUE_LIMIT", "FANOUT_DRIVERS",
           "Declarations", "control_mailbox", "dead_letter_queue", "event_queue", "event_stream",
           "get_exchange", "named_event_queue", "task_queue"]

#: Transports whose exchanges must be ``fanout`` to broadcast (kombu maps
#: fanout onto Redis PUB/SUB; a topic exchange there would queue, not publish).
FANOUT_DRIVERS = frozenset({"redis", "gcpubsub"})
#: Transports whose queues can dead-letter what they drop (RabbitMQ's extension).
DEAD_LETTER_DRIVERS = frozenset({"amqp"})
#: Messages a receiver's dead-letter queue holds at most: they are only counted,
#: quickly, but a receiver that stopped reading must not make the broker hold
#: an unbounded pile (past this, the oldest go uncounted).
DEAD_LETTER_QUEUE_LIMIT = 1_000_000


def get_exchange(conn: Connection | None, name: str = "celeryev") -> Exchange:
    """The event exchange as declared for ``conn``'s transport."""
    type_ = "topic"
    if conn is not None and conn.transport.driver_type in FANOUT_DRIVERS:
        type_ = "fanout"
    return Exchange(name, type=type_, durable=True, auto_delete=False)


def event_queue(
    name: str,
    exchange: Exchange,
    routing_key: str = "#",
    *,
    ttl: float | None = 5.0,
    expires: float | None = 60.0,
    exclusive: bool = True,
    durable: bool = False,
    dead_letter: bool = False,
    max_length: int | None = None,
    max_length_bytes: int | None = None,
) -> Queue:
    """A receiver queue bound to the event exchange (Celery's declaration).

    Ours: ``dead_letter`` sends what the queue drops (TTL, length limits) to
    :func:`dead_letter_queue`, where the receiver counts it; ``max_length``
    and ``max_length_bytes`` bound the queue (the oldest messages go first).
    """
    if exclusive and durable:
        raise ImproperlyConfigured(
            "event_queue_exclusive and event_queue_durable cannot both be true: "
            "a queue cannot be both exclusive and durable, choose one or the other."
        )
    return Queue(
        name,
        exchange=exchange,
        routing_key=routing_key,
        durable=durable,
        auto_delete=not durable,
        exclusive=exclusive,
        message_ttl=ttl,
        expires=expires,
        max_length=max_length,
        max_length_bytes=max_length_bytes,
        queue_arguments=_dead_letter_arguments(exchange, name) if dead_letter else None,
    )


def named_event_queue(name: str, exchange: Exchange, routing_key: str = "#", *,
                      ttl: float | None = None, expires: float | None = None,
                      dead_letter: bool = False, max_length: int | None = None,
                      max_length_bytes: int | None = None) -> Queue:
    """A receiver queue that outlives its receiver (ours: ``--queue NAME``).

    Durable, neither exclusive nor auto-deleted, with no TTL or expiry unless
    asked: events wait in it while the monitor is down or restarting, and a
    monitor started again with the same name goes on where it stopped.
    """
    return Queue(
        name, exchange=exchange, routing_key=routing_key, durable=True, auto_delete=False,
        exclusive=False, message_ttl=ttl, expires=expires, max_length=max_length,
        max_length_bytes=max_length_bytes,
        queue_arguments=_dead_letter_arguments(exchange, name) if dead_letter else None,
    )


def event_stream(name: str, exchange: Exchange, routing_key: str = "#", *,
                 max_age: str | None = None, max_bytes: int | None = None,
                 offset: Any = "next") -> Queue:
    """A RabbitMQ stream bound to the event exchange (ours: ``--stream NAME``).

    A stream is an append-only log that every reader reads from an offset of
    its own without consuming it (``offset``: ``first``, ``last``, ``next``, a
    number or a datetime); ``max_age`` (RabbitMQ's units: ``24h``, ``7D``) and
    ``max_bytes`` bound what it keeps.
    """
    arguments: dict[str, Any] = {"x-queue-type": "stream"}
    if max_age:
        arguments["x-max-age"] = max_age
    if max_bytes:
        arguments["x-max-length-bytes"] = max_bytes
    return Queue(name, exchange=exchange, routing_key=routing_key, durable=True,
                 auto_delete=False, exclusive=False, queue_arguments=arguments,
                 consumer_arguments={"x-stream-offset": offset})


def _dead_letter_arguments(exchange: Exchange, name: str) -> dict[str, str]:
    """What makes queue ``name`` send what it drops to :func:`dead_letter_queue`."""
    return {"x-dead-letter-exchange": _dead_letter_exchange(exchange).name,
            "x-dead-letter-routing-key": name}


def _dead_letter_exchange(exchange: Exchange) -> Exchange:
    return Exchange(exchange.name + DEAD_LETTER_SUFFIX, type="direct", durable=True,
                    auto_delete=False)


def dead_letter_queue(queue: Queue) -> Queue:
    """Where ``queue`` (an :func:`event_queue` with ``dead_letter``) sends what it drops:
    a queue of its own name plus the suffix, living and dying with it."""
    return Queue(
        queue.name + DEAD_LETTER_SUFFIX,
        exchange=_dead_letter_exchange(queue.exchange),
        routing_key=queue.name,
        durable=queue.durable,
        auto_delete=queue.auto_delete,
        exclusive=queue.exclusive,
        expires=queue.expires,
        max_length=DEAD_LETTER_QUEUE_LIMIT,
    )


class Declarations:
    """The entities a producer declares before each publish, bound to its channel once.

    ``Producer.publish(declare=[entity])`` makes kombu bind a *copy* of an
    unbound entity to the channel on every call (a fifth of a client's
    publishing time) before it finds the declaration in its per-connection
    cache.  :meth:`for_channel` hands out one bound copy per entity and
    channel, so kombu only checks its cache; it still declares after a
    reconnect (kombu clears that cache, and revives an entity whose channel
    closed), exactly as with an unbound one.  At most :data:`MAX_BOUND`
    entities are kept: a client publishing to ever new queue names cannot
    grow it.
    """

    MAX_BOUND = 256

    def __init__(self) -> None:
        self._channel: Any = None
        self._bound: dict[Any, Any] = {}

    def __len__(self) -> int:
        return len(self._bound)

    def for_producer(self, producer: Any, entity: Exchange | Queue) -> Exchange | Queue:
        """``entity`` bound to the channel ``producer`` publishes on; ``entity`` itself
        while the producer's connection is down, so that connecting and declaring
        happen inside kombu's publish retries, as they would without this cache."""
        connection = producer.connection
        if connection is None or not connection.connected:
            return entity
        return self.for_channel(producer.channel, entity)

    def for_channel(self, channel: Any, entity: Exchange | Queue) -> Exchange | Queue:
        if channel is not self._channel:
            self._channel, self._bound = channel, {}
        bound = self._bound.get(entity)  # kombu's entities compare by their settings
        if bound is None:
            if len(self._bound) >= self.MAX_BOUND:
                self._bound.clear()
            bound = self._bound[entity] = entity.bind(channel)
        return bound


def task_queue(name: str) -> Queue:
    """A task queue: durable, bound to a direct exchange of its own name (Celery's)."""
    return Queue(name, Exchange(name, "direct"), routing_key=name, durable=True)


def control_mailbox(conf: Any, clock: Any) -> Mailbox:
    """The remote-control mailbox described by the settings ``conf``.

    Built on each use, so that a changed ``app.conf`` takes effect.  Clients
    and workers both get theirs here, so both sides agree on names, TTLs and
    expiry.
    """
    return Mailbox(
        conf.control_exchange,
        type="fanout",
        accept=conf.accept_content,
        serializer=conf.task_serializer,
        clock=clock,
        queue_ttl=conf.control_queue_ttl,
        reply_queue_ttl=conf.control_queue_ttl,
        queue_expires=conf.control_queue_expires,
        reply_queue_expires=conf.control_queue_expires,
        queue_exclusive=conf.control_queue_exclusive,
        queue_durable=conf.control_queue_durable,
    )
