"""Rate limits per task name: a token bucket each, and a line of tasks waiting for tokens.

A rate-limited task waits in its task's line until it has a token *and* a
pool slot is free, so the limit is on starts (a busy pool does not bank
tokens and then start a burst); tasks of other names go on running.  The
limit is read from the task (``@app.task(rate_limit='10/s')``, changed at
run time by the ``rate_limit`` command) or from ``task_default_rate_limit``,
on every admission, so a change takes effect at once: a removed limit
releases the line.  ``worker_disable_rate_limits``
switches them all off.

Differences from Celery: Celery takes the token when the task is received
and may then start several at once when pool slots free up; here the
token is taken when a slot is free.  Buckets hold one token, as Celery's;
waiting tasks are listed by ``inspect reserved``, as in Celery.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from kombu.utils.limits import TokenBucket

from ..protocol.control import parse_rate

if TYPE_CHECKING:
    from .request import Request

__all__ = ["RateLimits"]


class _Line:
    def __init__(self, limit: Any) -> None:
        self.limit = limit
        self.bucket = TokenBucket(parse_rate(limit), capacity=1)
        # Bounded by the channel's prefetch window: only received messages wait here.
        self.waiting: deque[Request] = deque()


class RateLimits:
    """The worker's rate-limited tasks, by task name."""

    def __init__(self, conf: Any) -> None:
        self.conf = conf
        self._lines: dict[str, _Line] = {}
        # Requests whose limit was removed while they waited (bounded like a line).
        self._released: deque[Request] = deque()

    def _limit(self, request: Request) -> Any:
        if self.conf.get("worker_disable_rate_limits"):
            return None
        limit = getattr(request.task, "rate_limit", None)
        if limit is None:
            limit = self.conf.get("task_default_rate_limit")
        try:
            return limit if parse_rate(limit) > 0 else None
        except ValueError:
            return None  # refused when set; never here

    def admit(self, request: Request) -> bool:
        """True if ``request`` has no limit; else it waits in its line (see :meth:`due`)."""
        limit = self._limit(request)
        line = self._lines.get(request.name)
        if limit is None and line is None:
            return True
        if line is None or line.limit != limit:
            line = self._renew(request.name, limit, line)
            if line is None:
                return True
        line.waiting.append(request)
        return False

    def _renew(self, name: str, limit: Any, old: _Line | None) -> _Line | None:
        held = old.waiting if old is not None else deque()
        if limit is None:
            self._lines.pop(name, None)
            if held:  # limit removed: what waited is due now
                self._released.extend(held)
            return None
        line = self._lines[name] = _Line(limit)
        line.waiting = held
        return line

    def due(self, budget: int) -> Iterator[Request]:
        """At most ``budget`` requests whose token has come, oldest first per task name."""
        released = self._released
        while released and budget > 0:
            budget -= 1
            yield released.popleft()
        for name, line in list(self._lines.items()):
            if not line.waiting:
                continue
            sample = line.waiting[0]
            limit = self._limit(sample)
            if limit != line.limit:
                renewed = self._renew(name, limit, line)
                if renewed is None:
                    continue  # released: handed out from the next call on
                line = renewed
            while budget > 0 and line.waiting and line.bucket.can_consume(1):
                budget -= 1
                yield line.waiting.popleft()

    def next_due(self) -> float | None:
        """Seconds until a waiting request's token comes (None if nothing waits)."""
        waits = [line.bucket.expected_time(1) for line in self._lines.values() if line.waiting]
        if self._released:
            waits.append(0.0)
        return min(waits) if waits else None

    def __len__(self) -> int:
        return sum(len(line.waiting) for line in self._lines.values()) + len(self._released)

    def waiting(self) -> list[Request]:
        """Every request waiting for a token (``inspect reserved`` lists them)."""
        return [*self._released, *(r for line in self._lines.values() for r in line.waiting)]

    def forget(self, keep: Any) -> None:
        """Drop waiting requests for which ``keep(request)`` is false (connection lost)."""
        for line in self._lines.values():
            line.waiting = deque(r for r in line.waiting if keep(r))
        self._released = deque(r for r in self._released if keep(r))
