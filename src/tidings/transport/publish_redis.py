"""Publishing an event on Redis as a prepared ``PUBLISH``, its reply read later.

kombu's Redis path costs about 300 µs per fanout message on 2 cores, and
little of it is Redis's: every publish builds a new ``redis.Redis`` client
(a case-insensitive table of about 170 reply callbacks, filled entry by
entry), checks a connection out of the pool and in again, builds the
message as a dict and serializes it, then waits a round trip for the reply
(the number of subscribers, which nobody reads).  :func:`publish_redis`
keeps one connection of the channel's own pool for publishing, writes the
message from a template (the event's base64 body, its sequence number and a
delivery tag spliced in) and reads replies in batches instead of after each
command.  The message is byte for byte the one kombu publishes
(``tests/unit/test_prepared_publish_redis.py`` checks it, kombu as oracle).

It applies only where it cannot differ from kombu's path: kombu's own Redis
channel (not the Sentinel one, whose compatibility topics differ), open, no
global key prefix, a fanout exchange (Celery's event exchange on Redis),
``base64`` bodies.  Otherwise :func:`publish_redis` returns ``False`` and
the caller publishes through kombu, which also reconnects after a failure
here.

Differences from Celery, with their reasons:

* A ``PUBLISH`` does not wait for its reply: the replies of up to
  :data:`READ_AT` commands are read together, without blocking, and a
  publisher never has more than :data:`MAX_UNREAD` unread (it then waits
  for them).  Waiting a round trip per event is most of what an event costs
  on Redis, for a reply (the subscriber count) Celery ignores.
* So an error reply (an ACL that forbids ``PUBLISH``) is seen a few commands
  late: it is logged with its count, as kombu's path would raise it, and the
  events it concerns are missing from the sender's sequence, which every
  receiver reports (``docs/reliability.md``).  Events written just before a
  connection is lost may be lost in the same way; the publish that finds
  the connection lost goes through kombu's path, with its retries.
"""

from __future__ import annotations

import binascii
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

__all__ = ["IDLE_CHECK", "MAX_UNREAD", "READ_AT", "publish_redis"]

logger = logging.getLogger(__name__)

#: Replies read together, without blocking, once this many are unread.
READ_AT = 64
#: The most replies left unread on a connection: a publisher that reaches it
#: waits for them, which bounds both the socket buffers and what a lost
#: connection can take with it.
MAX_UNREAD = 1024
#: Seconds without a publish after which the connection is checked (a read
#: without blocking) before the next one: a server that closed an idle
#: connection is seen then, and not by losing the next event into it.
IDLE_CHECK = 1.0
#: The body encoding kombu's Redis channel uses unless configured otherwise.
_BASE64 = "base64"
#: Placeholders of what changes per message, unique in the template's JSON.
_BODY, _SEQ, _TAG = "\x00body", "\x00seq", "\x00tag"
#: Kinds of message (headers, exchange and routing key) whose template is kept.
MAX_TEMPLATES = 64


class _Template:
    """kombu's message for one kind of event, split where the body, the last header's
    value and the delivery tag go."""

    __slots__ = ("command_head", "parts")

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
        key = topic.encode("utf-8")
        self.command_head = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (len(key), key)

    def command(self, body: bytes, seq: int) -> bytes:
        """The packed ``PUBLISH`` of one message."""
        a, b, c, d = self.parts
        payload = b"".join((a, b'"', binascii.b2a_base64(body, newline=False), b'"', b,
                            b"%d" % seq, c, b'"', str(uuid.uuid4()).encode("ascii"), b'"',
                            d))
        return b"".join((self.command_head, b"$%d\r\n" % len(payload), payload, b"\r\n"))


_template = lru_cache(maxsize=MAX_TEMPLATES)(_Template)


class _Outlet:
    """One connection of a channel's pool, kept for publishing, its replies counted."""

    __slots__ = ("connection", "last_sent", "lock", "pool", "unread")

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.connection = pool.get_connection()
        self.lock = threading.Lock()
        self.unread = 0
        self.last_sent = time.monotonic()

    def send(self, command: bytes) -> None:
        connection = self.connection
        now = time.monotonic()
        if self.unread >= READ_AT or now - self.last_sent > IDLE_CHECK:
            self._read(block=self.unread >= MAX_UNREAD)
        connection.send_packed_command((command,), check_health=False)
        self.unread += 1
        self.last_sent = now

    def _read(self, block: bool) -> None:
        """Read the replies that have come (all unread ones past :data:`MAX_UNREAD`,
        blocking); a closed connection is disconnected, to be opened again by the
        next send."""
        response_error, lost = _errors()
        connection, refused, error = self.connection, 0, None
        try:
            while ((block and self.unread >= READ_AT)
                   or connection.can_read(timeout=0)):  # readable with none unread: closed
                try:
                    connection.read_response()
                except response_error as exc:
                    refused, error = refused + 1, exc
                self.unread = max(self.unread - 1, 0)
        except lost:
            self.unread = 0
            connection.disconnect()
        if refused:
            logger.error("Redis refused %d published event(s): %s", refused, error)

    def close(self) -> None:
        self.connection.disconnect()
        self.pool.release(self.connection)


@lru_cache(maxsize=1)
def _errors() -> tuple[type[BaseException], tuple[type[BaseException], ...]]:
    """redis-py's error reply, and the errors of a lost connection (redis-py is
    imported by then: a kombu Redis channel exists)."""
    from redis.exceptions import ConnectionError, ResponseError, TimeoutError

    return ResponseError, (ConnectionError, TimeoutError, OSError)


#: The outlet of each open channel; a channel that is collected takes its own.
_outlets: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_outlets_lock = threading.Lock()
# A forked child must not write into its parent's sockets: it opens its own.
os.register_at_fork(after_in_child=_outlets.clear)


def _redis_channel_class() -> type | None:
    """kombu's Redis channel class, if kombu's Redis transport is in use at all."""
    module = sys.modules.get("kombu.transport.redis")
    return getattr(module, "Channel", None)


def _outlet(channel: Any) -> _Outlet:
    outlet = _outlets.get(channel)
    if outlet is None:
        with _outlets_lock:
            outlet = _outlets.get(channel)
            if outlet is None:
                outlet = _outlets[channel] = _Outlet(channel.pool)
    return outlet


def publish_redis(channel: Any, exchange: Any, routing_key: str, body: bytes,
                  headers: dict[str, Any], last: str, last_value: int, content_type: str,
                  content_encoding: str, delivery_mode: int) -> bool:
    """Publish ``body`` with ``headers`` plus ``{last: last_value}`` on kombu's Redis
    ``channel``; ``False`` if this path does not apply (nothing was sent: publish
    through kombu instead).  Raises the connection's error if the write failed."""
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
    if outlet.pool is not pool:  # kombu replaced the pool: a new connection
        with _outlets_lock:
            _outlets.pop(channel, None)
        outlet = _outlet(channel)
    with outlet.lock:
        try:
            outlet.send(command)
        except BaseException:
            with _outlets_lock:
                _outlets.pop(channel, None)
            try:
                outlet.close()
            except Exception:
                pass
            raise
    return True
