"""Finished jobs on their way from a pool's threads to the worker's thread, with a wake-up.

Pools report outcomes from threads of their own (a prefork pool's
collector, a threads pool's task threads); the worker handles them in its
thread, the only one that touches the broker.  Each outcome put here also
writes a byte to a pipe, so the worker can wait for the broker's socket and
for finished jobs in one ``select`` (see ``Worker._poll``).

Why: before, a worker with jobs running read the broker for up to 0.5 ms,
then waited for an outcome for up to 2 ms.  An outcome that came during
the broker read waited for that read to end, and so did the pool process
that had finished: with no new message to end the read early, each
finished job cost its process a few hundred microseconds of idleness.

The one wait works where the broker's socket being readable tells that a
message is there: py-amqp over plain TCP, which reads no further ahead
than the frame it needs.  Not over TLS (decrypted data may wait in the TLS
layer with the socket quiet), nor on Redis and other kombu transports
(kombu polls sockets of its own): there the worker polls the broker
briefly, then waits for outcomes, as before.
"""

from __future__ import annotations

import os
import queue
import select
import weakref
from typing import Any

from amqp.transport import TCPTransport

__all__ = ["Outcomes", "waitable_fd"]

#: Bytes read from the wake-up pipe at once: one per outcome since the last read,
#: and at most one outcome per running job is pending.
_DRAIN_BYTES = 4096


class Outcomes:
    """``(job, outcome)`` pairs, first finished first; :meth:`fileno` is readable
    while a wake-up is pending (a pair was put since the last :meth:`clear`).

    Unbounded on purpose: at most one pair per running job is ever pending,
    and the pool's size bounds the running jobs.
    """

    def __init__(self) -> None:
        self._poller: Any = None  # see watch()
        # queue.Queue, not SimpleQueue: on CPython 3.11 a signal arriving during
        # SimpleQueue.get(timeout=...) can leave it blocked for good.
        self._pairs: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        # Closed with this object, never before: whoever can still put holds it,
        # so no late put writes to a descriptor number reused by another file.
        weakref.finalize(self, _close, self._read_fd, self._write_fd)

    def put(self, item: tuple[Any, Any]) -> None:
        """From any thread."""
        self._pairs.put(item)
        try:
            os.write(self._write_fd, b"\0")
        except OSError:  # the pipe is full: wake-ups are pending already
            pass

    def get_nowait(self) -> tuple[Any, Any]:
        return self._pairs.get_nowait()

    def get(self, timeout: float) -> tuple[Any, Any]:
        return self._pairs.get(timeout=timeout)

    def empty(self) -> bool:
        return self._pairs.empty()

    def watch(self, fd: int | None) -> bool:
        """Wait for the broker socket ``fd`` too in :meth:`wait` (``None``: no socket
        to wait for, see :func:`waitable_fd`); whether there is one."""
        self._poller = None
        if fd is None:
            return False
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN)
        self._poller.register(self._read_fd, select.POLLIN)
        return True

    def wait(self, timeout_ms: int) -> bool:
        """Wait for an outcome or the watched socket; whether the socket is readable
        (or closed: reading it then raises the connection's error).

        The pending wake-ups are consumed: the caller then takes every pair
        there is.  A pair put meanwhile leaves a wake-up behind, so none is
        missed (at worst one wait returns early).
        """
        message = False
        for fd, _ in self._poller.poll(timeout_ms):
            if fd == self._read_fd:
                try:
                    while len(os.read(fd, _DRAIN_BYTES)) == _DRAIN_BYTES:
                        pass
                except OSError:  # nothing more pending
                    pass
            else:
                message = True
        return message


def waitable_fd(conn: Any) -> int | None:
    """The descriptor of a kombu connection's broker socket, where its being readable
    tells that a message is there (see the module documentation); else ``None``."""
    transport = getattr(conn.connection, "transport", None)
    if type(transport) is not TCPTransport or transport.sock is None:
        return None
    return transport.sock.fileno()


def _close(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
