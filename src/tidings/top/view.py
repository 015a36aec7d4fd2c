"""What the monitor shows, computed away from the screen: filtering, sorting, counting.

A :class:`ViewBuilder` takes a snapshot of the State's task list under the
State's lock (a list copy: milliseconds even for 100k tasks), then filters,
sorts and counts outside the lock, so ingest is never held up by the screen.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from operator import attrgetter
from typing import Any

from ..events.state import State, Task
from ..protocol.states import LIFECYCLE_ORDER

#: States in the order the status bar counts them.
STATE_ORDER = LIFECYCLE_ORDER


@dataclass(frozen=True)
class Filter:
    """``/`` filter: words match name, uuid, worker or state (substring, any case).

    ``state:failure``, ``name:proj.add``, ``worker:w1`` and ``uuid:7f1c``
    restrict a word to one field; all words must match.
    """

    text: str = ""
    terms: tuple[tuple[str | None, str], ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> Filter:
        terms = []
        for word in text.split():
            key, sep, value = word.partition(":")
            if sep and key.lower() in ("state", "name", "worker", "uuid", "host"):
                terms.append(("worker" if key.lower() == "host" else key.lower(),
                              value.lower()))
            else:
                terms.append((None, word.lower()))
        return cls(text, tuple(terms))

    def __bool__(self) -> bool:
        return bool(self.terms)

    def matches(self, task: Task) -> bool:
        fields = {
            "name": (task.name or "").lower(),
            "uuid": (task.uuid or "").lower(),
            "worker": (task.worker.hostname if task.worker is not None else "").lower(),
            "state": (task.state or "").lower(),
        }
        for key, value in self.terms:
            if key is None:
                if not any(value in v for v in fields.values()):
                    return False
            elif value not in fields[key]:
                return False
        return True


@dataclass
class View:
    tasks: list[Task]
    total: int
    counts: Counter
    workers: list[tuple[str, bool, Any, Any, Any, float | None]]
    event_count: int
    built_at: float


class Rate:
    """Events per second over the last minute, one bucket per second."""

    def __init__(self, seconds: int = 60) -> None:
        self.samples: deque[tuple[float, int]] = deque(maxlen=seconds + 1)

    def add(self, now: float, count: int) -> None:
        self.samples.append((now, count))

    def per_second(self) -> list[float]:
        pairs = list(self.samples)
        return [max(0.0, (b[1] - a[1]) / max(b[0] - a[0], 1e-6))
                for a, b in itertools.pairwise(pairs)]


def worker_rows(state: State, now: float) -> list[tuple[str, bool, Any, Any, Any, float | None]]:
    rows = []
    for worker in state.workers.values():
        last = worker.heartbeats[-1] if worker.heartbeats else None
        rows.append((worker.hostname, worker.alive, worker.active, worker.processed,
                     worker.loadavg, None if last is None else now - last))
    return sorted(rows)


class ViewBuilder:
    """Builds :class:`View` objects on demand, in the caller's thread."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.filter = Filter()
        self.rate = Rate()

    def build(self) -> View:
        state = self.state
        now = time.time()
        tasks, workers, events = state.freeze_while(_collect, state, now)
        self.rate.add(time.monotonic(), events)
        counts = Counter(t.state for t in tasks)
        flt = self.filter
        if flt:
            tasks = [t for t in tasks if flt.matches(t)]
        tasks = [t for t in tasks if t.last_key is not None]
        tasks.sort(key=_sort_key, reverse=True)
        return View(tasks, sum(counts.values()), counts, workers, events, now)


def _collect(state: State, now: float) -> tuple[list[Task], list, int]:
    """What one view needs, read at one instant (runs with ingest paused)."""
    return state.task_list(), worker_rows(state, now), state.event_count


_sort_key = attrgetter("last_key")


def fmt_time(ts: float | None) -> str:
    if not ts:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).astimezone().strftime("%H:%M:%S")


def fmt_runtime(value: Any) -> str:
    if isinstance(value, int | float):
        return f"{value:.3f}s" if value < 100 else f"{value:.0f}s"
    return ""
