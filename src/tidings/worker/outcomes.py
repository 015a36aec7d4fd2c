"""Finished jobs on their way to the worker's thread, and its one wait for them and the broker.

The worker handles outcomes in its own thread, the only one that touches
the broker.  They reach it two ways: the solo and threads pools put them
here from the thread that ran the job (each such put also writes a byte
to a pipe, to wake the worker), and the prefork pool's children write
them to their pipes, which the worker's thread reads itself
(:meth:`~tidings.worker.pool.BasePool.collect`).  While jobs run, the
worker waits for all of these and for the broker's socket in one ``poll``
(:meth:`Outcomes.wait`).

Why: before, a worker with jobs running read the broker for up to 0.5 ms,
then waited for an outcome for up to 2 ms.  An outcome that came during
the broker read waited for that read to end, and so did the pool process
that had finished: with no new message to end the read early, each
finished job cost its process a few hundred microseconds of idleness.
And a prefork outcome went through a thread of the pool's own, woken to
read it and hand it over.  A prefork worker of two processes with ``-E``
went from about 1,830 no-op tasks a second to 2,300-2,400 with the one
wait, then to 2,800-3,200 reading its children's pipes itself, its CPU
per task from about 330 to about 240 µs (``bench/worker_throughput.py``'s
worker, three interleaved runs of each).

The broker's socket is waited for where its being readable tells that a
message is there (:func:`tidings.transport.waitable_fd`: py-amqp over
plain TCP); elsewhere the worker reads the broker briefly, then waits for
outcomes, as before.
"""

from __future__ import annotations

import os
import select
import threading
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Any

__all__ = ["Outcomes"]

#: Bytes read from the wake-up pipe at once: one per outcome put since the last
#: read, and at most one outcome per running job is pending.
_DRAIN_BYTES = 4096


class Outcomes:
    """``(job, outcome)`` pairs, first finished first.

    Unbounded on purpose: at most one pair per running job is ever pending,
    and the pool's size bounds the running jobs.
    """

    def __init__(self) -> None:
        # A deque: appends and pops are atomic, and nobody blocks on it (the
        # wait is on the pipe below), so a queue's locks would only cost.
        self._pairs: deque[tuple[Any, Any]] = deque()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        # Closed with this object, never before: whoever can still put holds it,
        # so no late put writes to a descriptor number reused by another file.
        weakref.finalize(self, _close, self._read_fd, self._write_fd)
        self._broker_fd: int | None = None
        self._waiter: int | None = None  # the thread that waits (see watch)
        self._poller: Any = None
        self._polled: tuple[int, ...] = ()  # the extra descriptors _poller has

    def put(self, item: tuple[Any, Any]) -> None:
        """From any thread; from another than the waiting one, it also wakes it."""
        self._pairs.append(item)
        if threading.get_ident() == self._waiter:
            return  # it takes the pairs before it waits again
        try:
            os.write(self._write_fd, b"\0")
        except OSError:  # the pipe is full: wake-ups are pending already
            pass

    def take(self) -> list[tuple[Any, Any]]:
        """Every pair there is, first finished first."""
        pairs, popleft = [], self._pairs.popleft
        while self._pairs:
            pairs.append(popleft())
        return pairs

    def empty(self) -> bool:
        return not self._pairs

    def watch(self, broker_fd: int | None) -> bool:
        """Wait for the broker socket ``broker_fd`` too in :meth:`wait` (``None``: no
        socket to wait for, see :func:`tidings.transport.waitable_fd`); whether
        there is one.  Called by the thread that will wait."""
        self._waiter = threading.get_ident()
        self._broker_fd = broker_fd
        self._poller = None
        return broker_fd is not None

    def wait(self, timeout_ms: int, fds: Sequence[int] = ()) -> tuple[bool, list[int]]:
        """Wait for an outcome, the watched socket or one of ``fds`` (a pool's, see
        :meth:`~tidings.worker.pool.BasePool.fds`); returns whether the socket
        is readable (or closed: reading it then raises the connection's
        error), and which of ``fds`` are.

        The pending wake-ups are consumed: the caller then takes every pair
        there is.  A pair put meanwhile leaves a wake-up behind, so none is
        missed (at worst one wait returns early).
        """
        fds = tuple(fds)
        if self._poller is None or fds != self._polled:
            self._poller = select.poll()
            for fd in (self._read_fd, self._broker_fd, *fds):
                if fd is not None:
                    self._poller.register(fd, select.POLLIN)
            self._polled = fds
        message = False
        ready = []
        for fd, _ in self._poller.poll(timeout_ms):
            if fd == self._read_fd:
                try:
                    while len(os.read(fd, _DRAIN_BYTES)) == _DRAIN_BYTES:
                        pass
                except OSError:  # nothing more pending
                    pass
            elif fd == self._broker_fd:
                message = True
            else:
                ready.append(fd)
        return message, ready


def _close(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
