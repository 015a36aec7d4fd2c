"""What each page shows, as plain data: pure functions of State and the monitor's figures.

The HTML (:mod:`.pages`) only lays these out, so what a page says is tested
without a browser.  Every value here is still raw event data: escaping is
the layout's job, done once, where text meets HTML.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from ..metrics import exception_class
from ..protocol import states
from ..protocol.events import TASK_TIME_FIELDS

__all__ = ["RateHistory", "dashboard", "failures", "task_detail", "worker_rows"]

#: Seconds between two samples of the event rate.
RATE_SAMPLE = 10.0
#: Samples kept: 15 minutes of them.
RATE_SAMPLES = 90
#: Tasks walked down a workflow tree, at most.
MAX_TREE = 500


class RateHistory:
    """Events per second over the last 15 minutes, sampled every 10 s."""

    def __init__(self) -> None:
        #: Bounded: :data:`RATE_SAMPLES` points of (time, events/s).
        self.points: deque[tuple[float, float]] = deque(maxlen=RATE_SAMPLES)
        self._last: tuple[float, int] | None = None

    def sample(self, count: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if self._last is not None and now > self._last[0]:
            self.points.append((now, (count - self._last[1]) / (now - self._last[0])))
        self._last = (now, count)

    def due(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self._last is None or now - self._last[0] >= RATE_SAMPLE


def worker_rows(state: Any, outcomes: dict[str, dict[str, int]] | None = None
                ) -> list[dict[str, Any]]:
    """One row per worker, online first, with what its events say (and its tasks'
    outcomes, from :func:`_tally` unless given)."""
    def read() -> list[dict[str, Any]]:
        rows = []
        for hostname, w in dict.items(state.workers):
            rows.append({
                "hostname": hostname, "online": bool(w.alive), "active": w.active,
                "processed": w.processed, "loadavg": w.loadavg,
                "last_heartbeat": w.heartbeats[-1] if w.heartbeats else None,
                "sw": " ".join(str(x) for x in (w.sw_ident, w.sw_ver) if x),
                "pid": w.pid, "freq": w.freq,
            })
        return rows

    rows = state.freeze_while(read)
    by_worker = outcomes if outcomes is not None else state.freeze_while(_tally, state)[1]
    for row in rows:
        row.update(by_worker.get(row["hostname"], {}))
    rows.sort(key=lambda r: (not r["online"], r["hostname"]))
    return rows


def _tally(state: Any) -> tuple[Counter[str], dict[str, dict[str, int]]]:
    """Tasks by state, and each worker's outcomes, in one pass over the tasks."""
    by_state: Counter[str] = Counter()
    out: dict[str, Counter[str]] = {}
    for task in dict.values(state.tasks):
        by_state[task.state] += 1
        host = getattr(task.worker, "hostname", None)
        if host is not None:
            out.setdefault(host, Counter())[task.state] += 1
    return by_state, {host: {"succeeded": c[states.SUCCESS], "failed": c[states.FAILURE],
                             "retried": c[states.RETRY]} for host, c in out.items()}


@dataclass
class Dashboard:
    workers: list[dict[str, Any]]
    by_state: dict[str, int]
    rates: list[tuple[float, float]]
    events: int
    skipped: dict[str, int]
    reconnects: int
    connection: str
    tasks: int
    evicted: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)


def dashboard(monitor: Any) -> Dashboard:
    state = monitor.state
    by_state, outcomes = state.freeze_while(_tally, state)
    ok, health = monitor.health()
    source = monitor.source
    return Dashboard(
        workers=worker_rows(state, outcomes),
        by_state={s: by_state[s] for s in _state_order(by_state)},
        rates=list(monitor.rates.points), events=source.event_count,
        skipped=dict(source.errors), reconnects=source.reconnects,
        connection=health["connection"] + (f" ({health['detail']})" if health["detail"]
                                           and not ok else ""),
        tasks=len(state.tasks), evicted=dict(state.evicted), lost=source.losses.as_dict())


def _state_order(counts: Counter[str]) -> list[str]:
    """The lifecycle's states in order, then custom ones by name; only those present."""
    known = [s for s in states.LIFECYCLE_ORDER if counts.get(s)]
    return known + sorted((s for s in counts if s not in states.LIFECYCLE_ORDER), key=str)


def task_detail(state: Any, uuid: str) -> dict[str, Any] | None:
    """Every field of one task, its timeline and its workflow tree."""
    def read() -> dict[str, Any] | None:
        task = dict.get(state.tasks, uuid)
        if task is None:
            return None
        fields = task.as_dict()
        worker = fields.pop("worker", None)
        fields["worker"] = getattr(worker, "hostname", worker)
        times = sorted((getattr(task, f), f) for f in TASK_TIME_FIELDS
                       if isinstance(getattr(task, f, None), int | float))
        timeline = []
        for i, (when, name) in enumerate(times):
            timeline.append({"event": name, "at": when,
                             "after": when - times[i - 1][0] if i else None})
        root = task.root or task
        return {"fields": fields, "timeline": timeline, "tree": _tree(root, uuid)}

    return state.freeze_while(read)


def _tree(root: Any, current: str) -> list[dict[str, Any]]:
    """The workflow under ``root``, depth first, as rows with a depth."""
    rows: list[dict[str, Any]] = []
    stack = [(root, 0)]
    seen: set[str] = set()
    while stack and len(rows) < MAX_TREE:
        task, depth = stack.pop()
        if task.uuid in seen:
            continue
        seen.add(task.uuid)
        rows.append({"uuid": task.uuid, "name": task.name, "state": task.state,
                     "depth": depth, "current": task.uuid == current})
        children = sorted(task.children, key=lambda t: str(t.uuid), reverse=True)
        stack.extend((child, depth + 1) for child in children)
    return rows


def failures(state: Any) -> list[dict[str, Any]]:
    """Failures grouped by exception class and task name, most frequent first."""
    def read() -> list[dict[str, Any]]:
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for task in dict.values(state.tasks):
            if task.state != states.FAILURE:
                continue
            key = (exception_class(task.exception), str(task.name))
            when = task.failed or task.timestamp
            group = groups.get(key)
            if group is None:
                groups[key] = {"exception": key[0], "name": key[1], "count": 1,
                               "first": when, "last": when, "example": task.uuid,
                               "traceback": task.traceback, "message": task.exception}
                continue
            group["count"] += 1
            if when is not None:
                if group["first"] is None or when < group["first"]:
                    group["first"] = when
                if group["last"] is None or when > group["last"]:
                    group.update(last=when, example=task.uuid, traceback=task.traceback,
                                 message=task.exception)
        return sorted(groups.values(), key=lambda g: (-g["count"], g["exception"], g["name"]))

    return state.freeze_while(read)
