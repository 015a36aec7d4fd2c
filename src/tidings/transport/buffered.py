"""RabbitMQ connections that read the socket in large chunks (consumers' connections).

py-amqp reads every frame with three exact-size ``recv`` calls (the 7-byte
header, the payload, the end octet), and a message is three frames (method,
content header, body): nine ``recv`` calls per message, each a system call,
plus a ``poll`` when the socket has a timeout.  Here a frame is cut out of a
buffer filled by ``recv`` calls of up to :data:`READ_SIZE` bytes, so a
consumer that is behind reads hundreds of messages per system call.

Only what py-amqp reads changes: frames, their order, heartbeats, timeouts
and errors are the same.  A timeout in the middle of a frame consumes
nothing (the partial frame stays buffered for the next read), as with
py-amqp's own read.  One difference: a read with timeout 0 that finds a
frame incomplete times out, where py-amqp spins until the rest arrives.
TLS connections keep py-amqp's transport (an SSL socket returns at most
one record per read anyway).

Two more savings for a consumer that keeps up with its senders: reads are
paced (:mod:`.pacing`: a read soon after the previous one waits a
millisecond first, four when messages come at thousands a second, so that
one wake-up reads several messages),
and a no-ack consumer may take its messages directly
(:meth:`_Channel.consume_deliveries`, what a receiver does): their frames
are assembled here and handed over as properties and body, without
py-amqp's method dispatch and message object or kombu's message and
callbacks.  Together they take a receiver's CPU per one-event message on
RabbitMQ from about 80 to about 46 µs (``bench/receive.py``).  A receiver
that does not count drains (no ``limit``) also takes every message already
read whole in one ``drain_events``, paying kombu's and py-amqp's layers of a
drain once for them all: 16.5 to 17 µs before, 13.3 to 13.7 µs after, in
paired runs of the same bench (about 0.29 of Celery's, then about 0.24).

The one thing a buffer changes: bytes already read are no longer visible to
``select``/``poll`` on the socket.  Every consumer here reads with
``drain_events`` (which looks at the buffer first); an event loop that
waits for the socket to be readable (kombu's hub, as Celery's worker uses)
must not be given these connections, which is why only
:meth:`App.connection_for_read <tidings.app.App.connection_for_read>` makes them.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from struct import unpack_from
from typing import Any

from amqp.exceptions import UnexpectedFrame
from amqp.serialization import decode_properties_basic
from amqp.transport import TCPTransport
from kombu.transport import pyamqp

from .pacing import ReadPacer

__all__ = ["READ_SIZE", "BufferedAMQPTransport", "BufferedTCPTransport", "DeliveryCallback"]

#: ``callback(properties, body)`` of a direct consumer (see ``consume_deliveries``).
DeliveryCallback = Callable[[dict[str, Any], bytes], Any]
#: The first bytes of a ``basic.deliver`` method frame: class 60, method 60.
_BASIC_DELIVER = b"\x00\x3c\x00\x3c"

#: Bytes asked of the socket per ``recv``.  Bound on the buffer: one read plus
#: the largest frame (the broker's ``frame_max``, 128 KiB by default).
READ_SIZE = 65536
FRAME_END = 0xCE
#: A non-blocking ``recv`` (timeout 0) found nothing: a timeout, as py-amqp
#: makes of it on a frame's first read (and where it would spin on a later
#: one, nothing here is lost by giving up: the partial frame stays buffered).
_WOULD_BLOCK = frozenset({errno.EAGAIN, errno.EWOULDBLOCK})
#: Errors after which the connection is still usable (py-amqp's set).
_UNAVAILABLE = frozenset({errno.EAGAIN, errno.EINTR, errno.ENOENT, errno.EWOULDBLOCK})


class BufferedTCPTransport(TCPTransport):
    """py-amqp's TCP transport with :meth:`read_frame` served from a read buffer."""

    def _setup_transport(self) -> None:
        super()._setup_transport()
        #: Bytes read and not yet framed start at ``_start`` (see READ_SIZE).
        self._chunks = bytearray()
        self._start = 0
        self._pacer = ReadPacer()
        #: Frames and bytes read since the last paced read (what the pacer is told).
        self._frames = self._received = 0
        self._no_timeout = nullcontext(self.sock)

    def frame_buffered(self) -> bool:
        """Whether the next frame is wholly in the buffer (reading it needs no socket)."""
        ahead = len(self._chunks) - self._start
        return ahead >= 8 and ahead >= unpack_from(">I", self._chunks, self._start + 3)[0] + 8

    def having_timeout(self, timeout: float | None) -> AbstractContextManager[Any]:
        """py-amqp's: a socket timeout around one read; no two ``settimeout``
        calls when the frame is already buffered (most frames, under load)."""
        if self.frame_buffered():
            return self._no_timeout
        return super().having_timeout(timeout)

    def _fill(self, need: int, initial: bool) -> None:
        """Read until ``need`` bytes past ``_start`` are buffered."""
        buf = self._chunks
        if self._start:  # what was framed goes, once, before the socket is read
            del buf[:self._start]
            self._start = 0
        if initial and not buf and self.sock.gettimeout() != 0:
            # what came since the last such read (each message is three frames), then
            # the pace: messages coming fast, let a few more arrive first
            self._pacer.took(self._frames // 3, self._received)
            self._frames = self._received = 0
            self._pacer.pace()
        recv = self.sock.recv
        while len(buf) < need:
            try:
                chunk = recv(max(READ_SIZE, need - len(buf)))
            except TimeoutError:
                raise
            except OSError as exc:
                if exc.errno in _WOULD_BLOCK:  # non-blocking (timeout 0): nothing there yet
                    raise TimeoutError() from exc
                if exc.errno == errno.EINTR:
                    if initial and self.raise_on_initial_eintr:
                        raise TimeoutError() from exc
                    continue
                raise
            if not chunk:
                raise OSError("Server unexpectedly closed connection")
            buf += chunk
            self._received += len(chunk)

    def read_frame(self, unpack: Any = None) -> tuple[int, int, bytes]:
        """The next frame: ``(type, channel, payload)``."""
        buf, start = self._chunks, self._start
        try:
            if len(buf) - start < 7:
                self._fill(7, True)
                buf, start = self._chunks, self._start
            frame_type, channel, size = unpack_from(">BHI", buf, start)
            if len(buf) - start < size + 8:
                self._fill(size + 8, False)
                buf, start = self._chunks, self._start
        except TimeoutError:
            raise  # nothing was taken out of the buffer: the next read starts over
        except OSError as exc:
            if exc.errno not in _UNAVAILABLE:
                self.connected = False
            raise
        body = start + 7
        payload = bytes(buf[body:body + size])
        end = buf[body + size]
        self._start = body + size + 1
        self._frames += 1
        if end != FRAME_END:
            raise UnexpectedFrame(f"Received frame_end {end:#04x} while expecting 0xce")
        return frame_type, channel, payload


#: Property flags a direct consumer reads itself: content type, content encoding
#: and headers, then delivery mode and priority (what kombu sets on every message).
_COMMON_FLAGS = 0xF800
_HEADERS_FLAG = 0x2000


def _read_properties(payload: bytes) -> dict[str, Any]:
    """A content header's properties, as py-amqp decodes them.

    The usual case by hand (py-amqp's decoder is general and costs about a
    fifth of a small message): the properties kombu sets, and header values
    that are text, integers, booleans or void.  Anything else goes to
    py-amqp's decoder.
    """
    flags = unpack_from(">H", payload, 12)[0]
    if flags & ~_COMMON_FLAGS or not flags & _HEADERS_FLAG or flags & 0xC000 != 0xC000:
        return decode_properties_basic(payload, 12)[0]
    offset = 14
    size = payload[offset]
    content_type = payload[offset + 1:offset + 1 + size].decode()
    offset += 1 + size
    size = payload[offset]
    content_encoding = payload[offset + 1:offset + 1 + size].decode()
    offset += 1 + size
    headers = _read_table(payload, offset)
    if headers is None:
        return decode_properties_basic(payload, 12)[0]
    return {"content_type": content_type, "content_encoding": content_encoding,
            "application_headers": headers}


def _read_table(payload: bytes, offset: int) -> dict[str, Any] | None:
    """A field table of text, integer, boolean and void values; None for any other."""
    end = offset + 4 + unpack_from(">I", payload, offset)[0]
    offset += 4
    table: dict[str, Any] = {}
    while offset < end:
        size = payload[offset]
        key = payload[offset + 1:offset + 1 + size].decode()
        offset += 1 + size
        kind = payload[offset]
        offset += 1
        if kind == 83:  # 'S'
            size = unpack_from(">I", payload, offset)[0]
            offset += 4
            raw = payload[offset:offset + size]
            try:
                table[key] = raw.decode()
            except UnicodeDecodeError:
                return None  # py-amqp keeps such a value as bytes
            offset += size
        elif kind == 73:  # 'I'
            table[key] = unpack_from(">i", payload, offset)[0]
            offset += 4
        elif kind == 76 or kind == 108:  # 'L', 'l'
            table[key] = unpack_from(">q", payload, offset)[0]
            offset += 8
        elif kind == 116:  # 't'
            table[key] = bool(payload[offset])
            offset += 1
        elif kind == 86:  # 'V'
            table[key] = None
        else:
            return None
    return table


class _Delivery:
    """A message of a direct consumer, between its ``basic.deliver`` and its last frame."""

    __slots__ = ("callback", "chunks", "missing", "properties", "several")

    def __init__(self, callback: DeliveryCallback, several: bool) -> None:
        self.callback = callback
        self.several = several  # its consumer takes several messages per drain
        self.properties: dict[str, Any] | None = None
        self.missing = -1  # body bytes still to come; -1 until the content header
        self.chunks: list[bytes] = []

    def take(self, frame_type: int, payload: bytes) -> bool:
        """One more frame; ``True`` once the message is whole."""
        if frame_type == 3 and self.missing > 0:
            self.chunks.append(payload)
            self.missing -= len(payload)
            return self.missing <= 0
        if frame_type == 2 and self.missing < 0:
            self.missing = unpack_from(">Q", payload, 4)[0]
            self.properties = _read_properties(payload)
            return self.missing == 0
        if frame_type == 8:  # a heartbeat between the frames of a message
            return False
        raise UnexpectedFrame(f"Received frame {frame_type} in the middle of a message")

    def body(self) -> bytes:
        chunks = self.chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _Channel(pyamqp.Channel):
    """kombu's py-amqp channel, whose no-ack consumers can take their messages directly.

    See :meth:`consume_deliveries`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._no_ack_tags: dict[str, str] = {}  # queue name -> consumer tag
        #: consumer tag -> (py-amqp's callback when registered, the direct callback,
        #: whether a drain may hand it several messages)
        self.direct: dict[str, tuple[Any, DeliveryCallback, bool]] = {}

    def basic_consume(self, queue: str = "", consumer_tag: str = "", *args: Any,
                      **kwargs: Any) -> str:
        tag = super().basic_consume(queue, consumer_tag, *args, **kwargs)
        if tag in self.no_ack_consumers:
            self._no_ack_tags[queue] = tag
        return tag

    def consume_deliveries(self, queue: str, callback: DeliveryCallback, *,
                           several: bool = False) -> bool:
        """Have the messages of this channel's no-ack consumer of ``queue`` handed to
        ``callback(properties, body)`` as they are read; ``False`` if there is none.

        ``several``: one ``drain_events`` may hand over every message already
        read whole, not just one (for a consumer that does not count drains,
        as ``capture(limit=N)`` does); the kombu and py-amqp layers of a drain
        are then paid once for all of them.

        What is skipped: py-amqp's method dispatch and message object, and
        kombu's message and its callbacks (about half of what a small
        message costs a consumer).  ``properties`` are py-amqp's decoded
        ones (``content_type``, ``application_headers`` ...).  A consumer
        cancelled, or its channel closed, goes back to the usual path.
        """
        tag = self._no_ack_tags.get(queue)
        if tag is None or tag not in self.callbacks:
            return False
        self.direct[tag] = (self.callbacks[tag], callback, several)
        return True

    def direct_callback(self, tag: str) -> tuple[DeliveryCallback, bool] | None:
        """The direct callback of consumer ``tag`` and whether a drain may hand it
        several messages, while it is the same consumer."""
        entry = self.direct.get(tag)
        if entry is None:
            return None
        if self.callbacks.get(tag) != entry[0]:  # cancelled, or the tag reused
            del self.direct[tag]
            return None
        return entry[1], entry[2]


class _Connection(pyamqp.Connection):
    """kombu's py-amqp connection, on :class:`BufferedTCPTransport` unless TLS.

    Its channels' no-ack consumers can take their messages directly
    (:meth:`_Channel.consume_deliveries`): their frames are assembled here,
    before py-amqp's frame handler sees them.
    """

    Channel = _Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deliveries: dict[int, _Delivery] = {}  # channel id -> message in progress

    def Transport(self, host: str, connect_timeout: float | None, ssl: Any = False,
                  read_timeout: float | None = None, write_timeout: float | None = None,
                  socket_settings: Any = None, **kwargs: Any) -> Any:
        if ssl:
            return super().Transport(host, connect_timeout, ssl, read_timeout, write_timeout,
                                     socket_settings=socket_settings, **kwargs)
        return BufferedTCPTransport(host, connect_timeout=connect_timeout,
                                    read_timeout=read_timeout, write_timeout=write_timeout,
                                    socket_settings=socket_settings, **kwargs)

    def blocking_read(self, timeout: float | None = None) -> bool:
        """py-amqp's read of one frame, except that a direct consumer's message is
        read whole, frame after frame, and handed to its callback (and the messages
        after it too, while they are already read whole and their consumer takes
        several per drain)."""
        transport = self.transport
        deliveries = self._deliveries
        frame_buffered = getattr(transport, "frame_buffered", None)  # None under TLS
        with transport.having_timeout(timeout):
            while True:
                frame_type, channel_id, payload = frame = transport.read_frame()
                delivery = deliveries.get(channel_id) if deliveries else None
                if delivery is None:
                    delivery = self._direct_delivery(frame_type, channel_id, payload)
                    if delivery is None:
                        break  # not a direct consumer's: py-amqp's way
                    deliveries[channel_id] = delivery
                    self.bytes_recv += 1
                    continue  # its content frames follow (a timeout keeps what was read)
                self.bytes_recv += 1
                if delivery.take(frame_type, payload):
                    del deliveries[channel_id]
                    delivery.callback(delivery.properties, delivery.body())
                    if delivery.several and frame_buffered is not None and frame_buffered():
                        continue  # bounded: what one read of the socket brought
                    return True
        return self.on_inbound_frame(frame)

    def _direct_delivery(self, frame_type: int, channel_id: int, payload: bytes
                         ) -> _Delivery | None:
        """A message starting for a direct consumer, or None."""
        if frame_type != 1 or payload[:4] != _BASIC_DELIVER:
            return None
        channel = self.channels.get(channel_id) if self.channels else None
        if channel is None or channel.__class__ is not _Channel or not channel.direct:
            return None
        direct = channel.direct_callback(
            payload[5:5 + payload[4]].decode("utf-8", "surrogatepass"))
        return None if direct is None else _Delivery(*direct)


class BufferedAMQPTransport(pyamqp.Transport):
    """kombu's ``amqp://`` transport whose connections read in large chunks."""

    Connection = _Connection
