"""Publishing an event on RabbitMQ as prepared frames, without kombu's per-message work.

``Producer.publish`` and py-amqp's ``basic_publish`` cost about 100 µs per
message on 2 cores: the retry wrapper, a ``Message`` object, a read of the
socket for a ``connection.blocked`` notice (a ``recv`` and an exception on
every publish), and the method arguments and content properties serialized
afresh.  An event dispatcher publishes thousands of messages that differ in
their body and one header (``tidings-seq``).  :func:`publish_prepared`
keeps the method arguments per routing key and the properties as bytes with
the sequence number spliced in, and hands them to the connection's own
``frame_writer`` (py-amqp's lock, buffer and heartbeat accounting stay in
use).  The frames are byte for byte those py-amqp writes for the same
message (``tests/unit/test_prepared_publish.py`` checks it).

It is used only where it cannot differ from kombu's path: a py-amqp channel
that is open, no publisher confirms, the exchange already declared on this
connection (kombu's own cache of declarations), header values that are text
or integers.  Otherwise :func:`publish_prepared` returns ``False``
and the caller publishes through kombu, with its retries and reconnects.

Difference from Celery: the ``connection.blocked`` check py-amqp makes before
each publish is not made; the notice is read with the next read on the
connection, as on a connection that only consumes.
"""

from __future__ import annotations

from functools import lru_cache
from struct import pack
from typing import Any

import amqp

from .publish_redis import publish_redis

__all__ = ["MAX_PREPARED", "publish_arguments", "publish_prepared"]

#: ``basic.publish``: class 60, method 40.
BASIC_PUBLISH = (60, 40)
#: Property flags of content type, content encoding, headers, delivery mode and
#: priority, the properties kombu sets on every message (in AMQP's flag order).
_FLAGS = pack(">H", 0xF800)
#: The priority kombu sends when none is given.
_PRIORITY = 0
_INT32 = 2147483647
#: Kinds of message, and exchange and routing key pairs, whose bytes are kept
#: (least recently used first out): a dispatcher publishes a handful of each.
MAX_PREPARED = 64


def _shortstr(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > 255:
        raise ValueError("short string over 255 bytes")
    return bytes((len(data),)) + data


def _field(value: Any) -> bytes:
    """A header value as py-amqp encodes it, for the types events use."""
    cls = value.__class__
    if cls is str:
        data = value.encode("utf-8", "surrogatepass")
        return b"S" + pack(">I", len(data)) + data
    if cls is int:
        if -_INT32 <= value <= _INT32:
            return b"I" + pack(">i", value)
        return b"L" + pack(">q", value)
    raise TypeError(f"no prepared encoding for {cls.__name__} header values")


class _Template:
    """The properties of one kind of message, the last header's value left out."""

    __slots__ = ("head", "last_key", "table", "tail")

    def __init__(self, content_type: str, content_encoding: str,
                 headers: tuple[tuple[str, Any], ...], last: str, delivery_mode: int) -> None:
        self.head = _FLAGS + _shortstr(content_type) + _shortstr(content_encoding)
        self.table = b"".join(_shortstr(k) + _field(v) for k, v in headers)
        self.last_key = _shortstr(last)
        self.tail = bytes((delivery_mode, _PRIORITY))

    def properties(self, last_value: int) -> bytes:
        entry = self.last_key + _field(last_value)
        table = self.table + entry
        return self.head + pack(">I", len(table)) + table + self.tail


class _Content:
    """What py-amqp's frame writer reads of a message: its body and its properties."""

    __slots__ = ("_serialized", "body", "properties")

    def __init__(self, body: bytes, serialized: bytes) -> None:
        self.body = body
        self.properties: dict[str, Any] = {}
        self._serialized = serialized

    def _serialize_properties(self) -> bytes:
        return self._serialized


#: The properties of a kind of message (``headers`` as items: hashable).
_template = lru_cache(maxsize=MAX_PREPARED)(_Template)


@lru_cache(maxsize=MAX_PREPARED)
def publish_arguments(exchange: str, routing_key: str) -> bytes:
    """``basic.publish``'s arguments: reserved short, exchange, routing key, mandatory
    and immediate off."""
    return b"\x00\x00" + _shortstr(exchange) + _shortstr(routing_key) + b"\x00"


def publish_prepared(producer: Any, exchange: Any, routing_key: str, body: bytes | str,
                     headers: dict[str, Any], last: str, last_value: int, content_type: str,
                     content_encoding: str, delivery_mode: int) -> bool:
    """Publish ``body`` with ``headers`` plus ``{last: last_value}`` on ``producer``'s
    RabbitMQ channel (or Redis channel: :mod:`.publish_redis`); ``False`` if this path
    does not apply (nothing was sent: publish through kombu instead).

    Not thread-safe on one producer: its owner publishes under its own lock (as
    kombu's producers need too).
    """
    connection = producer.connection
    if connection is None or hash(exchange) not in connection.declared_entities:
        return False  # kombu declares it on first use, and after every reconnect
    if not connection.connected:
        return False
    if delivery_mode.__class__ is not int or not 0 <= delivery_mode <= 255:
        return False  # kombu's names for them ('persistent' ...) go its way
    if body.__class__ is str:
        body = body.encode(content_encoding)
    channel = producer.channel
    if not isinstance(channel, amqp.Channel):
        return publish_redis(channel, exchange, routing_key, body, headers, last, last_value,
                             content_type, content_encoding, delivery_mode)
    wire = getattr(channel, "connection", None)
    if not channel.is_open or wire is None or wire.confirm_publish:
        return False
    try:
        template = _template(content_type, content_encoding, tuple(headers.items()), last,
                             delivery_mode)
        arguments = publish_arguments(exchange.name, routing_key)
        properties = template.properties(last_value)
    except (TypeError, ValueError, OverflowError):
        return False  # a header or a name this encoder does not take: kombu's path
    wire.frame_writer(1, channel.channel_id, BASIC_PUBLISH, arguments,
                      _Content(body, properties))
    return True
