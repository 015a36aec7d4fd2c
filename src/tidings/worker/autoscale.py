"""The autoscaler: grow the pool when tasks wait, shrink it when it idles.

``tidings worker --autoscale MAX,MIN`` (threads and prefork pools).  The
pool starts at MIN; once a second the worker asks :meth:`Autoscaler.maybe_scale`
to compare the tasks it holds (running plus ready) with the pool size.  It
grows at once, up to MAX, and shrinks one slot at a time, down to MIN, only
after :data:`KEEPALIVE` seconds without growth, so a bursty queue does not
make it fork and kill processes in a loop.

Differences from Celery: the decision runs in the worker's loop instead of a
thread of its own, so it never races the worker for the pool.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["KEEPALIVE", "Autoscaler"]

#: Seconds after the last growth before the pool may shrink (Celery's default).
KEEPALIVE = 30.0
#: Seconds between two looks at the load.
INTERVAL = 1.0


class Autoscaler:
    """Keeps the worker's pool between ``min`` and ``max`` slots."""

    def __init__(self, worker: Worker, max: int, min: int = 0) -> None:
        self.worker = worker
        self.max, self.min = self._checked(max, min)
        self.keepalive = KEEPALIVE
        self._last_grow = time.monotonic()
        self._next_look = 0.0

    @staticmethod
    def _checked(max_: Any, min_: Any) -> tuple[int, int]:
        max_, min_ = int(max_), int(min_ or 0)
        if max_ < 1 or min_ < 0 or min_ > max_:
            raise ValueError(f"autoscale needs 1 <= max and 0 <= min <= max "
                             f"(got max={max_} min={min_})")
        return max_, max(min_, 1)  # a pool keeps one slot

    def update(self, max: int | None = None, min: int | None = None
               ) -> tuple[int, int]:
        """New bounds (the ``autoscale`` command); the pool follows at the next look."""
        self.max, self.min = self._checked(self.max if max is None else max,
                                           self.min if min is None else min)
        self._next_look = 0.0
        return self.max, self.min

    @property
    def qty(self) -> int:
        """Tasks the worker holds that want a slot: running plus ready."""
        return len(self.worker.active_requests()) + len(self.worker.reserved_requests())

    def maybe_scale(self) -> None:
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + INTERVAL
        size, wanted = self.worker.pool.size, self.qty
        if size < self.min or (wanted > size and size < self.max):
            self.worker.resize_pool(min(max(wanted, self.min), self.max) - size)
            self._last_grow = now
        elif size > self.max:
            self.worker.resize_pool(self.max - size)
        elif wanted < size and size > self.min and now - self._last_grow >= self.keepalive:
            self.worker.resize_pool(-1)
            self._last_grow = now  # one slot per keepalive period

    def info(self) -> dict[str, int]:
        return {"max": self.max, "min": self.min, "current": self.worker.pool.size,
                "qty": self.qty}
