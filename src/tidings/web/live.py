"""Live updates for open pages: which tasks changed, pushed as Server-Sent Events.

The ingest thread notes each changed task id in :class:`ChangeLog` (a bounded
ring with a sequence number: one deque append per event, never a wait on a
client).  Each open page has one coroutine that, every
:data:`PUSH_INTERVAL` seconds, takes the ids changed since the sequence it
last saw, reads those tasks at one instant and sends them in one SSE
message: a page gets at most a few updates per second however fast events
come (coalescing).  A page that fell behind by more than the ring holds —
a slow or stalled client — gets a ``resync`` message instead, and reloads
what it shows through the API: it never holds up ingest or another page,
because nothing waits for it but its own coroutine.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

__all__ = ["CHANGE_RING", "MAX_PUSHED_TASKS", "PUSH_INTERVAL", "ChangeLog", "sse_stream"]

#: Seconds between two pushes to one page (at most this many updates a second: 1/x).
PUSH_INTERVAL = 0.5
#: Task changes remembered; a page further behind than this is told to resync.
CHANGE_RING = 20_000
#: Tasks sent in one push; more changed than this and the page is told to resync.
MAX_PUSHED_TASKS = 200
#: Seconds between keep-alive comments, so proxies keep an idle stream open.
KEEPALIVE = 15.0


class ChangeLog:
    """A bounded ring of ``(sequence, task id)``, written by the ingest thread."""

    def __init__(self, size: int = CHANGE_RING) -> None:
        #: Bounded by ``size``: the oldest changes fall off.
        self._ring: deque[tuple[int, str]] = deque(maxlen=size)
        self._seq = 0
        self._lock = threading.Lock()

    @property
    def sequence(self) -> int:
        return self._seq

    def note(self, uuid: str) -> None:
        with self._lock:
            self._seq += 1
            self._ring.append((self._seq, uuid))

    def since(self, seq: int) -> tuple[int, set[str] | None]:
        """``(now, ids changed after seq)``; ``None`` when the ring no longer reaches
        back that far (the caller must resync)."""
        with self._lock:
            now = self._seq
            if now == seq:
                return now, set()
            if not self._ring or self._ring[0][0] > seq + 1:
                return now, None
            changed = set()
            for s, uuid in reversed(self._ring):
                if s <= seq:
                    break
                changed.add(uuid)
            return now, changed


def _message(event: str, data: str) -> bytes:
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\n{lines}\n".encode()


async def sse_stream(log: ChangeLog, read: Callable[[set[str]], str],
                     summary: Callable[[], str], disconnected: Callable[[], Any],
                     interval: float = PUSH_INTERVAL) -> AsyncIterator[bytes]:
    """The SSE byte stream of one page.

    ``read(ids)`` gives the JSON of those tasks, ``summary()`` the JSON of the
    dashboard's figures; both run in a thread so a large read does not stall
    the event loop.
    """
    seq = log.sequence
    idle = 0.0
    yield b"retry: 2000\n\n"
    yield _message("summary", await asyncio.to_thread(summary))
    while True:
        await asyncio.sleep(interval)
        if await disconnected():
            return
        seq, changed = log.since(seq)
        if changed is None or (changed and len(changed) > MAX_PUSHED_TASKS):
            yield _message("resync", "{}")
            idle = 0.0
        elif changed:
            yield _message("tasks", await asyncio.to_thread(read, changed))
            yield _message("summary", await asyncio.to_thread(summary))
            idle = 0.0
        else:
            idle += interval
            if idle >= KEEPALIVE:
                yield b": keep-alive\n\n"
                idle = 0.0
