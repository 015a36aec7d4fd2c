"""Tasks as the web API lists them: filter, search, sort and page over a State.

Pure functions of a :class:`~tidings.events.state.State` and the request's
parameters, so they are tested without a server.  The shapes are Flower
2.2's: a task is ``Task.as_dict()`` with ``worker`` replaced by the worker's
hostname; a listing is an object from task id to task, in order.

Differences from Flower, and why:

- ``sort_by`` also takes ``succeeded``, ``failed``, ``runtime``,
  ``timestamp``, ``worker``, ``uuid``, ``retries``, ``args``, ``kwargs`` and
  ``result`` (every column of the tasks page) (Flower: name, state,
  received, started); tasks without the value sort last either way, as the
  table pages show them.
- Without ``sort_by`` the most recently changed tasks come first, so
  ``limit=15`` is the newest fifteen; Flower returns them in the order its
  dict happens to hold them.
"""

from __future__ import annotations

import datetime
import itertools
import math
import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .search import Predicate, compile_query

__all__ = ["SORT_KEYS", "RecentTasks", "TaskQuery", "parse_received", "task_json",
           "task_page"]

#: Columns ``sort_by`` accepts (with ``-`` in front: descending).
SORT_KEYS = frozenset({"name", "state", "received", "started", "succeeded", "failed",
                       "runtime", "timestamp", "worker", "uuid", "retries", "args", "kwargs",
                       "result"})
_NUMERIC = frozenset({"received", "started", "succeeded", "failed", "runtime", "timestamp",
                      "retries"})
#: Flower's format for ``received_start`` / ``received_end`` (local time).
RECEIVED_FORMAT = "%Y-%m-%d %H:%M"


def parse_received(value: str | None) -> float | None:
    """``YYYY-MM-DD HH:MM`` (local time) as a timestamp; ValueError when malformed."""
    if not value:
        return None
    return datetime.datetime.strptime(value, RECEIVED_FORMAT).timestamp()


def _hostname(worker: Any) -> str | None:
    return getattr(worker, "hostname", worker)


def task_json(task: Any) -> dict[str, Any]:
    """One task in Flower's shape."""
    out = task.as_dict()
    worker = out.pop("worker", None)
    if worker is not None:
        out["worker"] = _hostname(worker)
    return out


@dataclass
class TaskQuery:
    """What ``GET /api/tasks`` asks for; ``"All"`` means no filter, as in Flower."""

    limit: int | None = None
    offset: int = 0
    sort_by: str | None = None
    worker: str | None = None
    name: str | None = None
    state: str | None = None
    received_start: float | None = None
    received_end: float | None = None
    search: str | None = None

    def __post_init__(self) -> None:
        for field in ("worker", "name", "state"):
            if getattr(self, field) == "All":
                setattr(self, field, None)
        self.offset = max(self.offset, 0)
        if self.sort_by and self.sort_by.lstrip("-") not in SORT_KEYS:
            raise ValueError(f"Invalid sort_by '{self.sort_by}', expected one of "
                             f"{', '.join(sorted(SORT_KEYS))}")

    def predicate(self) -> Predicate:
        """Every filter as one test; QuerySyntaxError for a bad ``search``."""
        search = compile_query(self.search)
        name, state, worker = self.name, self.state, self.worker
        start, end = self.received_start, self.received_end

        def test(task: Any) -> bool:
            if name is not None and task.name != name:
                return False
            if state is not None and task.state != state:
                return False
            if worker is not None and _hostname(task.worker) != worker:
                return False
            if start is not None or end is not None:
                received = task.received
                if received is not None:
                    if start is not None and received < start:
                        return False
                    if end is not None and received > end:
                        return False
            return search(task)

        return test


def _sort_key(field: str) -> Any:
    def key(task: Any) -> tuple:
        value = _hostname(task.worker) if field == "worker" else getattr(task, field, None)
        uuid = str(task.uuid)
        if value is None:
            return (0, 0.0, "", uuid)
        if field in _NUMERIC:
            try:
                number = float(value)
            except (TypeError, ValueError):
                return (0, 0.0, "", uuid)
            return (1, number if not math.isnan(number) else 0.0, "", uuid)
        return (1, 0.0, str(value).casefold(), uuid)

    return key


_last_key = operator.attrgetter("last_key")
_first = operator.itemgetter(0)
#: The first window of newest tasks a page looks in; grown fourfold until it holds the page.
FIRST_WINDOW = 64


def _newest_matching(tasks: list[Any], test: Predicate, count: int | None) -> list[Any]:
    """Matching tasks by each one's latest event, newest first (as ``State.tasks_by_time``
    orders them); only the first ``count`` when given.

    With a count, the predicate runs on the newest ``w`` tasks only, ``w``
    growing until ``count`` of them match: when they do, no older task can
    belong to the page, so a search that matches often costs a partial sort
    of a small window instead of a test of every task.
    """
    keys = list(map(_last_key, tasks))
    if None in keys:  # a task no event has dated yet (none in practice): left out
        tasks = [t for t, k in zip(tasks, keys, strict=True) if k is not None]
        keys = [k for k in keys if k is not None]
    if count is None or count <= 0:
        found = [t for t in tasks if test(t)]
        found.sort(key=_last_key, reverse=True)
        return found if count is None else []
    # Lamport clocks mostly grow with arrival, so the clocks are nearly sorted already
    # and sorting them is close to linear (timsort); the window's cut-off clock then
    # picks the candidates in C (compress), without a Python step per task.
    clocks = list(map(_first, keys))
    ordered = sorted(clocks)
    window = max(FIRST_WINDOW, count * 4)
    while True:
        cut = ordered[-window] if window < len(ordered) else None
        newest = list(tasks) if cut is None else list(
            itertools.compress(tasks, map(cut.__le__, clocks)))
        newest.sort(key=_last_key, reverse=True)
        found = [t for t in newest if test(t)]
        if len(found) >= count or cut is None:
            return found[:count]
        window *= 4


class RecentTasks:
    """Task ids in the order their latest event arrived: one O(1) move per event.

    With it, a newest-first page walks back from the newest id and stops once
    the page is full, instead of ordering every task in State.  Its order is
    arrival, where ``State.tasks_by_time`` orders by Lamport clock: the two
    differ only among events that arrived out of order (a few within a batch).
    Bounded: once it holds ``limit`` ids, those whose task ``alive`` says is
    gone are dropped (once per ``limit`` new ids: amortised O(1)).
    """

    def __init__(self, alive: Callable[[str], bool], limit: int) -> None:
        self._alive = alive
        self.limit = limit
        #: Bounded by ``limit`` (see :meth:`touch`).
        self._order: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._order)

    def touch(self, uuid: str) -> None:
        with self._lock:
            order = self._order
            if uuid in order:
                order.move_to_end(uuid)
                return
            order[uuid] = None
            if len(order) > self.limit:
                alive = self._alive
                self._order = OrderedDict((u, None) for u in order if alive(u))

    def newest(self, count: int | None) -> list[str]:
        """The ``count`` most recently changed ids (all of them for None), newest first."""
        with self._lock:
            order = self._order
            if count is not None and count >= len(order):
                count = None  # all of them (islice takes no count past sys.maxsize)
            return list(itertools.islice(reversed(order), count))


def _recent_matching(state: Any, recent: RecentTasks, test: Predicate, count: int | None
                     ) -> list[Any]:
    get = state.tasks.get
    window = None if count is None else max(FIRST_WINDOW, count * 4)
    while True:
        ids = recent.newest(window)
        found = []
        for uuid in ids:
            task = get(uuid)
            if task is not None and test(task):
                found.append(task)
                if count is not None and len(found) >= count:
                    return found
        if window is None or len(ids) < window:
            return found
        window *= 4


def task_page(state: Any, query: TaskQuery, recent: RecentTasks | None = None
              ) -> Iterator[tuple[str, Any]]:
    """The ``(uuid, task)`` pairs of one page, in order.

    The tasks are taken from ``state`` at one instant (``State.task_list``), so
    ingest may go on in its thread; read the tasks of the page with
    ``State.read_tasks``.  With ``recent``, a newest-first page is taken from
    it (see :class:`RecentTasks`) and costs what the page holds, not what
    State holds.
    """
    test = query.predicate()
    stop = None if query.limit is None else query.offset + max(query.limit, 0)
    if not query.sort_by and recent is not None:
        for i, task in enumerate(_recent_matching(state, recent, test, stop)):
            if i >= query.offset:
                yield task.uuid, task
        return
    tasks = state.task_list()
    if query.sort_by:
        field = query.sort_by.lstrip("-")
        descending = query.sort_by.startswith("-")
        matched = [t for t in tasks if test(t)]
        key = _sort_key(field)
        present = [t for t in matched if key(t)[0]]
        missing = [t for t in matched if not key(t)[0]]
        present.sort(key=key, reverse=descending)
        ordered: Iterable[Any] = present + missing
    else:
        ordered = _newest_matching(tasks, test, stop)
    for i, task in enumerate(ordered):
        if stop is not None and i >= stop:
            break
        if i >= query.offset:
            yield task.uuid, task
