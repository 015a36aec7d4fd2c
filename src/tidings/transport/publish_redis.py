"""Publishing an event on Redis as a prepared ``PUBLISH``, with replies turned off.

kombu's Redis path costs about 300 µs per fanout message on 2 cores, and
little of it is Redis's: every publish builds a new ``redis.Redis`` client
(a case-insensitive table of about 170 reply callbacks, filled entry by
entry), checks a connection out of the pool and in again, builds the
message as a dict and serializes it, then waits a round trip for the reply
(the number of subscribers, which nobody reads).  :func:`publish_redis`
keeps one connection of the channel's own pool for publishing, with Redis's
replies to it turned off (``CLIENT REPLY OFF``, on every socket it opens),
and writes the message from a template (the event's base64 body, its
sequence number and a delivery tag spliced in).  The message is byte for
byte the one kombu publishes (``tests/unit/test_prepared_publish_redis.py``
checks it, kombu as oracle).

It applies only where it cannot differ from kombu's path: kombu's own Redis
channel (not the Sentinel one, whose compatibility topics differ), open, no
global key prefix, a fanout exchange (Celery's event exchange on Redis),
``base64`` bodies, a server that takes ``CLIENT REPLY``.  Otherwise
:func:`publish_redis` returns ``False`` and the caller publishes through
kombu, which also reconnects after a failure here.

Differences from Celery, with their reasons:

* The delivery tag has the form of kombu's (a uuid4's text), but only its
  first 20 hex digits are random, once per process; the last 12 count the
  messages (:class:`_DeliveryTags`).  A tag is only ever used to
  acknowledge a message: it must be unique, and a uuid4 per message was
  about a quarter of what a publish cost.
* A ``PUBLISH`` gets no reply: waiting a round trip per event is most of
  what an event costs on Redis, for a reply (the subscriber count) Celery
  ignores.  Replies are turned off rather than read late: a socket closed
  with replies unread in it is reset, not closed, and Redis then drops the
  commands it had not read yet, so the events sent just before
  ``connection.close()`` were lost.  With nothing unread, a close ends
  after the last command, and Redis runs every one.
* The first publish of each topic on a connection has its reply read, so a
  refusal (an ACL that forbids ``PUBLISH`` or the channel) raises there, as
  kombu's path raises it.  A refusal that starts later (an ACL changed
  while the connection is open) is not seen by the sender: the events it
  concerns are missing from the sender's sequence, which every receiver
  reports (``docs/loss.md``).
* Events written just before the server drops a connection may be lost in
  the same way; the publish that finds the connection lost goes through
  kombu's path, with its retries.
"""

from __future__ import annotations

import binascii
import itertools
import json
import logging
import os
import sys
import threading
import time
import uuid
import weakref
from functools import lru_cache
from typing import Any

__all__ = ["IDLE_CHECK", "publish_redis"]

logger = logging.getLogger(__name__)

#: Seconds without a publish after which the connection is checked (a read
#: without blocking) before the next one: a server that closed an idle
#: connection is seen then, and not by losing the next event into it.
IDLE_CHECK = 1.0
#: The body encoding kombu's Redis channel uses unless configured otherwise.
_BASE64 = "base64"
#: Placeholders of what changes per message, unique in the template's JSON.
_BODY, _SEQ, _TAG = "\x00body", "\x00seq", "\x00tag"
#: Kinds of message (headers, exchange and routing key) whose template is kept;
#: also the most topics an outlet remembers as allowed (it then starts over).
MAX_TEMPLATES = 64
#: ``CLIENT REPLY ON`` (answered ``+OK``) and ``OFF`` (answered by nothing).
_REPLY_ON = b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$2\r\nON\r\n"
_REPLY_OFF = b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$3\r\nOFF\r\n"


class _DeliveryTags:
    """Delivery tags in the form kombu gives them (a uuid4's text) without a uuid4
    per message: a uuid4's first 20 hex digits (80 random bits), then a counter
    in the last 12.  0.3 µs a tag in a loop against 3.6 for ``str(uuid4())``;
    a Redis event's publish went from 36-37 to 27-28 µs of CPU (one message
    per event, ``EventDispatcher.send``).

    kombu reads a tag only to acknowledge a message by it, so a tag must be
    unique, not unpredictable.  A forked child draws a prefix of its own rather
    than count on under its parent's.
    """

    __slots__ = ("_count", "_prefix")

    def __init__(self) -> None:
        self.draw()

    def draw(self) -> None:
        digits = uuid.uuid4().hex
        self._prefix = (f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-"
                        .encode("ascii"))
        self._count = itertools.count(int(digits[20:], 16))

    def next(self) -> bytes:
        """A new tag (``next`` of a C counter: safe from any thread)."""
        return self._prefix + b"%012x" % (next(self._count) & 0xFFFF_FFFF_FFFF)


_tags = _DeliveryTags()
os.register_at_fork(after_in_child=_tags.draw)


class _Template:
    """kombu's message for one kind of event, split where the body, the last header's
    value and the delivery tag go."""

    __slots__ = ("command_head", "parts", "topic")

    def __init__(self, topic: str, exchange: str, routing_key: str, content_type: str,
                 content_encoding: str, headers: tuple[tuple[str, Any], ...], last: str,
                 delivery_mode: int) -> None:
        message = {
            "body": _BODY,
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": {**dict(headers), last: _SEQ},
            "properties": {
                "delivery_mode": delivery_mode,
                "delivery_info": {"exchange": exchange, "routing_key": routing_key},
                "priority": 0,
                "body_encoding": _BASE64,
                "delivery_tag": _TAG,
            },
        }
        text = json.dumps(message)
        parts = []
        for placeholder in (_BODY, _SEQ, _TAG):
            head, sep, text = text.partition(json.dumps(placeholder))
            if not sep or json.dumps(placeholder) in text:
                raise ValueError("a header holds a placeholder")
            parts.append(head.encode("ascii"))
        parts.append(text.encode("ascii"))
        self.parts = tuple(parts)
        self.topic = key = topic.encode("utf-8")
        self.command_head = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (len(key), key)

    def command(self, body: bytes, seq: int) -> bytes:
        """The packed ``PUBLISH`` of one message."""
        a, b, c, d = self.parts
        payload = b"".join((a, b'"', binascii.b2a_base64(body, newline=False), b'"', b,
                            b"%d" % seq, c, b'"', _tags.next(), b'"',
                            d))
        return b"".join((self.command_head, b"$%d\r\n" % len(payload), payload, b"\r\n"))


_template = lru_cache(maxsize=MAX_TEMPLATES)(_Template)


class _Outlet:
    """One connection of a channel's pool, kept for publishing, Redis's replies off."""

    __slots__ = ("__weakref__", "allowed", "connection", "last_sent", "lock", "pool")

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.lock = threading.Lock()
        self.allowed: set[bytes] = set()
        self.last_sent = time.monotonic()
        self.connection = pool.get_connection()
        try:
            self._quiet(self.connection)
            # every socket the connection opens again is quieted too (a weak reference)
            self.connection.register_connect_callback(self._quiet)
        except BaseException:
            self.close()
            raise

    def _quiet(self, connection: Any) -> None:
        """Turn replies off on a new socket, once Redis has shown it takes the command
        (a refusal raises: a server without it, or an ACL, gets kombu's path)."""
        connection.send_packed_command((_REPLY_ON,), check_health=False)
        connection.read_response()
        connection.send_packed_command((_REPLY_OFF,), check_health=False)

    def send(self, topic: bytes, command: bytes) -> None:
        connection = self.connection
        now = time.monotonic()
        if now - self.last_sent > IDLE_CHECK:
            self._check()
        if topic in self.allowed:
            connection.send_packed_command((command,), check_health=False)
        else:
            # the topic's first publish: its reply is read (a refusal raises), and
            # the connection is quiet again after it whatever the reply
            connection.send_packed_command((_REPLY_ON, command, _REPLY_OFF),
                                           check_health=False)
            connection.read_response()
            connection.read_response()
            if len(self.allowed) >= MAX_TEMPLATES:
                self.allowed.clear()
            self.allowed.add(topic)
        self.last_sent = now

    def _check(self) -> None:
        """After a quiet spell: what is readable on a connection owed nothing is its end
        (the server closed it), so it is dropped, to open again, quieted, on the next
        write; a read that fails says the same."""
        connection = self.connection
        try:
            ended = connection.can_read(timeout=0)
        except Exception:
            ended = True
        if ended:
            connection.disconnect()

    def close(self) -> None:
        self.connection.deregister_connect_callback(self._quiet)
        self.connection.disconnect()
        self.pool.release(self.connection)


#: The outlet of each open channel; a channel that is collected takes its own.
_outlets: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_outlets_lock = threading.Lock()
#: Channels whose server refused ``CLIENT REPLY`` (an ACL, a Redis-like server
#: without it): kombu's path publishes for them.
_refused: weakref.WeakSet = weakref.WeakSet()
# A forked child must not write into its parent's sockets: it opens its own.
os.register_at_fork(after_in_child=_outlets.clear)


def _redis_channel_class() -> type | None:
    """kombu's Redis channel class, if kombu's Redis transport is in use at all."""
    module = sys.modules.get("kombu.transport.redis")
    return getattr(module, "Channel", None)


def _outlet(channel: Any) -> _Outlet | None:
    """The channel's outlet, made on first use; ``None`` where replies cannot be
    turned off."""
    outlet = _outlets.get(channel)
    if outlet is None:
        with _outlets_lock:
            outlet = _outlets.get(channel)
            if outlet is None and channel not in _refused:
                from redis.exceptions import ResponseError  # imported: a Redis channel exists

                try:
                    outlet = _outlets[channel] = _Outlet(channel.pool)
                except ResponseError as exc:
                    logger.warning("Redis refused CLIENT REPLY (%s): events are published "
                                   "through kombu, a round trip each", exc)
                    _refused.add(channel)
    return outlet


def publish_redis(channel: Any, exchange: Any, routing_key: str, body: bytes,
                  headers: dict[str, Any], last: str, last_value: int, content_type: str,
                  content_encoding: str, delivery_mode: int) -> bool:
    """Publish ``body`` with ``headers`` plus ``{last: last_value}`` on kombu's Redis
    ``channel``; ``False`` if this path does not apply (nothing was sent: publish
    through kombu instead).  Raises the connection's error if the write failed, and
    Redis's if it refused the topic's first publish on this connection."""
    cls = _redis_channel_class()
    if (cls is None or channel.__class__ is not cls or channel.closed
            or channel.global_keyprefix or exchange.type != "fanout"
            or channel.body_encoding != _BASE64):
        return False
    pool = channel.pool  # made on first use, which also completes the fanout prefix
    prefix = channel.keyprefix_fanout
    name = exchange.name
    topic = (f"{prefix}{name}/{routing_key}" if channel.fanout_patterns and routing_key
             else f"{prefix}{name}")
    try:
        template = _template(topic, name, routing_key, content_type, content_encoding,
                             tuple(headers.items()), last, delivery_mode)
        command = template.command(body, last_value)
    except (TypeError, ValueError):
        return False  # a header this template does not take: kombu's path
    outlet = _outlet(channel)
    if outlet is not None and outlet.pool is not pool:  # kombu replaced the pool
        with _outlets_lock:
            _outlets.pop(channel, None)
        outlet = _outlet(channel)
    if outlet is None:
        return False
    with outlet.lock:
        try:
            outlet.send(template.topic, command)
        except BaseException:
            with _outlets_lock:
                _outlets.pop(channel, None)
            try:
                outlet.close()
            except Exception:
                pass
            raise
    return True
