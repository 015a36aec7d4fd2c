"""What remote control reads and changes on a worker: the surface its commands use.

:class:`ControlSurface` is a mixin of :class:`~.worker.Worker`; the
commands (:mod:`.control`, :mod:`.inspect`) call these methods rather than
reaching into the worker's loop.  It reads the worker's ``pool``,
``qos``, ``consumer``, ``task_queues``, ``queues``, ``rate_limits`` and its
request lines, and its ``_prefetch_for``/``_held_count`` rules.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING

from kombu import Queue

if TYPE_CHECKING:
    from kombu import Consumer
    from kombu.common import QoS

    from .pool import BasePool
    from .ratelimits import RateLimits
    from .request import Request

__all__ = ["ControlSurface"]

logger = logging.getLogger("tidings.worker")


class ControlSurface:
    """Remote control's view of a worker (see the module docs)."""

    pool: BasePool
    qos: QoS | None
    consumer: Consumer | None
    task_queues: list[Queue]
    queues: list[str]
    rate_limits: RateLimits
    _requests: dict[str, Request]
    _waiting: deque[Request]
    _timers: list[tuple[float, int, Request]]

    def _prefetch_for(self, size: int) -> int:
        """The prefetch count for a pool of ``size`` (the worker's rule)."""
        raise NotImplementedError

    def _held_count(self) -> int:
        """Messages held for an ETA or a rate limit (each raises the prefetch count)."""
        raise NotImplementedError

    def terminate(self, task_id: str, signum: int) -> bool:
        return self.pool.terminate(task_id, signum)

    def request(self, task_id: str) -> Request | None:
        return self._requests.get(task_id)

    def active_requests(self) -> list[Request]:
        return [r for tid, r in self._requests.items() if tid in self.pool.active]

    def reserved_requests(self) -> list[Request]:
        """Received, not running, not waiting for an ETA."""
        return [*self._waiting, *self.rate_limits.waiting()]

    def scheduled_requests(self) -> list[Request]:
        return [entry[2] for entry in sorted(self._timers)]

    def resize_pool(self, delta: int) -> None:
        """Grow (``delta`` > 0) or shrink the pool; the prefetch window follows."""
        if delta > 0:
            self.pool.grow(delta)
        elif delta < 0:
            self.pool.shrink(-delta)
        if self.qos is not None:
            self.qos.value = self._prefetch_for(self.pool.size) + self._held_count()
            self.qos.update()

    def add_queue(self, queue: Queue) -> bool:
        """Consume ``queue`` too (kept across reconnects); False if already consumed."""
        if any(q.name == queue.name for q in self.task_queues):
            return False
        self.task_queues.append(queue)
        self.queues.append(queue.name)
        if self.consumer is not None:
            self.consumer.add_queue(queue)
            self.consumer.consume()
        logger.info("Started consuming from %s", queue.name)
        return True

    def cancel_queue(self, name: str) -> bool:
        """Stop consuming ``name``; False if it was not consumed."""
        if not any(q.name == name for q in self.task_queues):
            return False
        self.task_queues = [q for q in self.task_queues if q.name != name]
        self.queues = [q for q in self.queues if q != name]
        if self.consumer is not None:
            self.consumer.cancel_by_queue(name)
        logger.info("Stopped consuming from %s", name)
        return True
