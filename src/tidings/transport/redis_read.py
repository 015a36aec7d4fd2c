"""Redis connections whose PUB/SUB messages go to a consumer as decoded envelopes.

On Redis an event reaches a receiver by PUB/SUB, as kombu's message
envelope: a JSON object holding the base64 body, its content type, the
headers and the delivery properties.  kombu decodes that envelope with its
JSON object hook, builds a ``Message`` (which decodes the body again from
base64), and passes it down a chain of callbacks (the transport's, the
channel's, the consumer's) before the receiver sees it.  Here a consumer
may register for a queue (:meth:`RedisReadChannel.consume_envelopes`): the
envelope of each message for that queue is decoded with
:mod:`tidings.utils.jsoncodec` (orjson when installed) and handed to it
directly.  A consumer that cannot take an envelope (another content type, a
body encoding other than base64) says so, and the message then goes
kombu's whole way, decoded by kombu.

Only the ``message``/``pmessage`` replies of queues with such a consumer
change; subscribing, reconnecting, health checks, other replies and every
other queue are kombu's.  Differences from kombu's path, with their
reasons:

* The envelope is decoded without kombu's object hook, so an object such as
  ``{"__type__": "datetime", ...}`` in the headers stays a dict; the
  receiver reads only its own numbers there (its sequence headers).  An
  integer past 64 bits in it may be read as a float
  (:func:`~tidings.utils.jsoncodec.loads_inexact_ints`): the sequence
  headers stop at 63 bits, so such a header is refused either way.  The
  body, inside the envelope, is decoded exactly.
* No ``Message`` object exists for such a message: the receiver needs the
  body and the headers, and Redis PUB/SUB has nothing to acknowledge.

Replies are read in bulk where hiredis parses them (the ``speedups``
extra): when the poller says the PUB/SUB socket is readable, one ``recv``
takes what has arrived (up to redis-py's read size, 64 KiB) and every reply
complete in it is handled, where kombu asks redis-py for one reply at a time
(its health check, retry wrapper, readiness poll and push handler each time,
and two more ``poll`` calls and a peeking ``recv`` whenever its buffer runs
dry).  redis-py's own bookkeeping is kept: its health check pings
a connection that read nothing for ``health_check_interval`` seconds, and
its ``PONG`` replies are counted as answered (kombu drops a connection whose
pings go unanswered); a read that fails disconnects, and an error reply is
raised, as from ``read_response``.  What this relies on in
redis-py is its hiredis parser's reader and socket read (``parser_class``,
``read_from_socket``), the same in redis-py 5 to 8; without hiredis, or on
a TLS or Unix socket connection, each reply is read kombu's way.  A
receiver's CPU per one-event message: 33 to 50 µs before, 22 to 28 µs after,
in paired runs (``bench/receive.py --brokers redis --modes single``: about
0.45 of Celery's, then about 0.3).

Only :meth:`App.connection_for_read <tidings.app.App.connection_for_read>`
makes these connections, as it makes RabbitMQ's buffered ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import monotonic
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.utils.json import loads as kombu_loads
from redis.connection import DefaultParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.utils import HIREDIS_AVAILABLE

from ..utils.jsoncodec import DECODE_ERRORS, loads_inexact_ints
from .pacing import ReadPacer

__all__ = ["BulkReadConnection", "EnvelopeHandler", "RedisReadChannel", "RedisReadTransport"]

logger = logging.getLogger(__name__)

#: ``handler(envelope) -> bool``: ``True`` once it took the message, ``False`` to
#: have kombu deliver it instead.
EnvelopeHandler = Callable[[dict[str, Any]], bool]

#: The reply kinds that carry a message (bytes, or text where replies are decoded).
_MESSAGE_KINDS = frozenset({b"message", b"pmessage", "message", "pmessage"})


class _BulkHiredisParser(DefaultParser):  # type: ignore[misc, valid-type]
    """redis-py's hiredis parser, which can also hand over every complete reply."""

    def on_connect(self, connection: Any, **kwargs: Any) -> None:
        super().on_connect(connection, **kwargs)
        # What the reader gives while no reply is complete: a fresh reader has none
        # (redis-py's sentinel object, or False in the versions before it had one).
        self._incomplete = self._reader.gets()

    def read_replies(self) -> list[Any]:
        """One ``recv`` (blocking, as redis-py's: the socket is readable), then every
        reply complete in the buffer.  Bound: the replies of one read (64 KiB by
        default), and of the one reply a previous read left incomplete."""
        self.read_from_socket()
        reader, incomplete = self._reader, self._incomplete
        replies = []
        reply = reader.gets()
        while reply is not incomplete:
            replies.append(reply)
            reply = reader.gets()
        return replies


#: Whether redis-py parses with hiredis here (then replies are read in bulk).
BULK_READS = bool(HIREDIS_AVAILABLE) and hasattr(DefaultParser, "read_from_socket")


class BulkReadConnection(redis.Connection):
    """redis-py's TCP connection, whose replies can be read all at once (with hiredis)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if BULK_READS:
            kwargs.setdefault("parser_class", _BulkHiredisParser)
        super().__init__(*args, **kwargs)

    @property
    def reads_in_bulk(self) -> bool:
        """Whether :meth:`read_replies` reads (its parser is hiredis's, ours)."""
        return self._parser.__class__ is _BulkHiredisParser

    def read_replies(self) -> list[Any] | None:
        """Every reply complete after one read of the socket, or ``None`` when this
        connection's parser cannot (without hiredis): read one at a time then.

        As ``read_response``: a failed read disconnects, and the next health check
        is due ``health_check_interval`` after this read."""
        if not self.reads_in_bulk:
            return None
        try:
            replies = self._parser.read_replies()
        except OSError as exc:  # the socket's own errors, as read_response words them
            self.disconnect()
            raise RedisConnectionError(f"Error while reading from the socket: {exc.args}"
                                       ) from exc
        except BaseException:
            self.disconnect()
            raise
        if self.health_check_interval:
            self.next_health_check = monotonic() + self.health_check_interval
        return replies


class RedisReadChannel(kombu_redis.Channel):
    """kombu's Redis channel, with envelope consumers for PUB/SUB queues."""

    connection_class = BulkReadConnection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: Queue name -> its envelope consumer (one per queue: a receiver's own).
        self._envelope_handlers: dict[str, EnvelopeHandler] = {}
        self._pacer = ReadPacer()
        super().__init__(*args, **kwargs)

    def consume_envelopes(self, queue: str, handler: EnvelopeHandler) -> None:
        """Hand the decoded envelopes of ``queue``'s PUB/SUB messages to ``handler``
        (the queue is consumed through kombu as usual: this only short-cuts delivery)."""
        self._envelope_handlers[queue] = handler

    def _receive(self) -> Any:
        if not self._envelope_handlers:
            return super()._receive()
        self._pacer.pace()  # a receiver's: paced (see .pacing)
        c = self.subclient
        conn = c.connection
        read_replies = getattr(conn, "read_replies", None)
        try:
            if getattr(conn, "reads_in_bulk", False):  # else parse_response checks it
                c.check_health()  # a PING when nothing was read for a while, as redis-py's
            replies = read_replies() if read_replies is not None else None
        except self.connection_errors:
            self._in_listen = None
            raise
        if replies is None:  # without hiredis, or another kind of connection
            return super()._receive()
        messages = size = 0  # what the read delivered, for the pacer
        for reply in replies:
            if self._take_reply(c, reply):  # a message, its body text or bytes
                messages += 1
                size += len(reply[-1])
        self._pacer.took(messages, size)
        return messages > 0

    def _receive_one(self, c: Any) -> Any:
        if not self._envelope_handlers:
            return super()._receive_one(c)
        try:
            response = c.parse_response()
        except self.connection_errors:
            self._in_listen = None
            raise
        return self._take_reply(c, response)

    def _take_reply(self, c: Any, response: Any) -> Any:
        """One reply of the PUB/SUB connection: a message goes to its queue's envelope
        consumer, or kombu's way; the rest is kombu's.  Truthy once a message went."""
        if isinstance(response, Exception):  # an error reply, raised as read_response does
            raise response
        # a list (hiredis 3: its PushNotification subclass of list)
        if not isinstance(response, list) or not response or response[0] not in _MESSAGE_KINDS:
            if c.is_health_check_response(response):  # answered, as parse_response counts
                c.health_check_response_counter = max(c.health_check_response_counter - 1, 0)
            elif isinstance(response, (list, tuple)):
                # subscription replies and the rest: kombu's handling (which keeps the
                # client's subscription state); none of them is delivered
                self._handle_message(c, response)
            return None
        channel, data = response[-2], response[-1]
        if not data:
            return None
        name = channel.decode("utf-8", "replace") if isinstance(channel, bytes) else channel
        if name[:1] == "/":  # the database prefix of kombu's fanout keys
            name = name.partition(".")[2]
        exchange = name.split("/", 1)[0]
        queue = self._fanout_to_queue.get(exchange)
        handler = self._envelope_handlers.get(queue) if queue is not None else None
        if handler is not None:
            try:
                envelope = loads_inexact_ints(data)
            except DECODE_ERRORS:
                envelope = None
            if envelope.__class__ is dict and handler(envelope):
                return True
        try:
            message = kombu_loads(data.decode("utf-8") if isinstance(data, bytes) else data)
        except (TypeError, ValueError):  # as kombu: the message is not a message
            logger.warning("Cannot process event on channel %r: %s", name, repr(data)[:4096])
            return None
        return self._deliver_fanout_message(message, exchange)


class RedisReadTransport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`RedisReadChannel` channels."""

    Channel = RedisReadChannel
