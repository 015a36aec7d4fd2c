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
  receiver reads only its own numbers there (its sequence headers).
* No ``Message`` object exists for such a message: the receiver needs the
  body and the headers, and Redis PUB/SUB has nothing to acknowledge.

Only :meth:`App.connection_for_read <tidings.app.App.connection_for_read>`
makes these connections, as it makes RabbitMQ's buffered ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import loads as kombu_loads

from ..utils.jsoncodec import DECODE_ERRORS
from ..utils.jsoncodec import loads as json_loads
from .pacing import ReadPacer

__all__ = ["EnvelopeHandler", "RedisReadChannel", "RedisReadTransport"]

logger = logging.getLogger(__name__)

#: ``handler(envelope) -> bool``: ``True`` once it took the message, ``False`` to
#: have kombu deliver it instead.
EnvelopeHandler = Callable[[dict[str, Any]], bool]

#: The reply kinds that carry a message (bytes, or text where replies are decoded).
_MESSAGE_KINDS = frozenset({b"message", b"pmessage", "message", "pmessage"})


class RedisReadChannel(kombu_redis.Channel):
    """kombu's Redis channel, with envelope consumers for PUB/SUB queues."""

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
        if self._envelope_handlers:  # a receiver's: paced (see .pacing)
            self._pacer.pace()
        return super()._receive()

    def _receive_one(self, c: Any) -> Any:
        if not self._envelope_handlers:
            return super()._receive_one(c)
        try:
            response = c.parse_response()
        except self.connection_errors:
            self._in_listen = None
            raise
        # a list (hiredis 3: its PushNotification subclass of list)
        if not isinstance(response, list) or not response or response[0] not in _MESSAGE_KINDS:
            # subscription replies and the rest: kombu's handling (which keeps the
            # client's subscription state); none of them is delivered
            if isinstance(response, (list, tuple)):
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
                envelope = json_loads(data)
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
