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

__all__ = ["FANOUT_DRIVERS", "control_mailbox", "event_queue", "get_exchange", "task_queue"]

#: Transports whose exchanges must be ``fanout`` to broadcast (kombu maps
#: fanout onto Redis PUB/SUB; a topic exchange there would queue, not publish).
FANOUT_DRIVERS = frozenset({"redis", "gcpubsub"})


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
) -> Queue:
    """A receiver queue bound to the event exchange (Celery's declaration)."""
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
    )


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
