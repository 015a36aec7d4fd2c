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

The one thing a buffer changes: bytes already read are no longer visible to
``select``/``poll`` on the socket.  Every consumer here reads with
``drain_events`` (which looks at the buffer first); an event loop that
waits for the socket to be readable (kombu's hub, as Celery's worker uses)
must not be given these connections, which is why only
:meth:`App.connection_for_read <tidings.app.App.connection_for_read>` makes them.
"""

from __future__ import annotations

import errno
from contextlib import AbstractContextManager, nullcontext
from struct import unpack_from
from typing import Any

from amqp.exceptions import UnexpectedFrame
from amqp.transport import TCPTransport
from kombu.transport import pyamqp

__all__ = ["READ_SIZE", "BufferedAMQPTransport", "BufferedTCPTransport"]

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
        self._no_timeout = nullcontext(self.sock)

    def _frame_buffered(self) -> bool:
        """Whether the next frame is wholly in the buffer (reading it needs no socket)."""
        ahead = len(self._chunks) - self._start
        return ahead >= 8 and ahead >= unpack_from(">I", self._chunks, self._start + 3)[0] + 8

    def having_timeout(self, timeout: float | None) -> AbstractContextManager[Any]:
        """py-amqp's: a socket timeout around one read; no two ``settimeout``
        calls when the frame is already buffered (most frames, under load)."""
        if self._frame_buffered():
            return self._no_timeout
        return super().having_timeout(timeout)

    def _fill(self, need: int, initial: bool) -> None:
        """Read until ``need`` bytes past ``_start`` are buffered."""
        buf = self._chunks
        if self._start:  # what was framed goes, once, before the socket is read
            del buf[:self._start]
            self._start = 0
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
        if end != FRAME_END:
            raise UnexpectedFrame(f"Received frame_end {end:#04x} while expecting 0xce")
        return frame_type, channel, payload


class _Connection(pyamqp.Connection):
    """kombu's py-amqp connection, on :class:`BufferedTCPTransport` unless TLS."""

    def Transport(self, host: str, connect_timeout: float | None, ssl: Any = False,
                  read_timeout: float | None = None, write_timeout: float | None = None,
                  socket_settings: Any = None, **kwargs: Any) -> Any:
        if ssl:
            return super().Transport(host, connect_timeout, ssl, read_timeout, write_timeout,
                                     socket_settings=socket_settings, **kwargs)
        return BufferedTCPTransport(host, connect_timeout=connect_timeout,
                                    read_timeout=read_timeout, write_timeout=write_timeout,
                                    socket_settings=socket_settings, **kwargs)


class BufferedAMQPTransport(pyamqp.Transport):
    """kombu's ``amqp://`` transport whose connections read in large chunks."""

    Connection = _Connection
