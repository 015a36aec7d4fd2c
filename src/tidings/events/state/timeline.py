"""Tasks in the order of their events' logical time: ``State.tasks_by_time``.

A task's place in time is a sort key ``(clock, origin, timestamp, uuid)``:
the Lamport clock of one of its events, then who sent it and when (for
events with equal clocks), then the task id (so two tasks never tie).  A
:class:`Timeline` keeps the keys of one end of every task's span (its latest
event's key for newest-first, its earliest for oldest-first) in a list
sorted by key.

Why this shape:

* Lamport clocks mostly grow in arrival order, so a new key is nearly
  always the largest: one ``append``.  A late event (a batch from another
  worker, a retry) goes in with a binary search and an insert near the end.
* A task's old key is not searched for and removed when it gets a new
  one: the old entry stays, and a walk skips it because the task's current
  key is another object (an identity test, no comparison).  Entries of
  forgotten tasks are skipped the same way.  When stale entries outnumber
  live ones, one pass drops them, so the list holds at most about twice
  as many entries as there are tasks, and ingest stays amortised O(1).
* Newest-N walks back from the end and stops after N tasks: it costs N
  plus the stale entries it passes, not the number of tasks, and it drops
  the stale entries it passed, so the next read does not pass them again.

Differences from Celery: Celery keeps ``(clock, timestamp, origin, ref)``
in a heap and walks the heap's list, which is in heap order, not sorted,
so its "newest first" is only roughly so, and its ``limit`` counts heap
entries (repeated and dead ones included) rather than tasks.  Here the
order is exact and ``limit`` counts tasks.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable, Iterator
from operator import attrgetter
from typing import Any

__all__ = ["UUID_AT", "Timeline"]

#: Where the task id sits in a sort key.
UUID_AT = 3
#: Stale entries tolerated beyond the live ones before a compaction (so a tiny
#: State does not compact on every event).
STALE_EXTRA = 64


class Timeline:
    """The sort keys of ``tasks`` read from attribute ``attr``, kept sorted.

    Not thread-safe: the State calls it under its lock.
    """

    __slots__ = ("_entries", "_key_of", "_tasks")

    def __init__(self, tasks: dict[str, Any], attr: str) -> None:
        self._tasks = tasks
        self._key_of = attrgetter(attr)
        #: Sort keys, ascending; at most about 2 * len(tasks) + STALE_EXTRA of
        #: them (see :meth:`add`).
        self._entries: list[tuple] = []

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: tuple) -> None:
        """Record that a task's key is now ``key`` (its previous entry goes stale)."""
        entries = self._entries
        if not entries or key >= entries[-1]:
            entries.append(key)
        else:
            insort(entries, key)
        if len(entries) > 2 * len(self._tasks) + STALE_EXTRA:
            self.compact()

    def compact(self) -> None:
        """Drop the entries that are no task's current key."""
        self._entries = list(map(self._key_of, self._tasks_of(self._entries)))

    def rebuild(self, tasks: Iterable[Any]) -> None:
        """Start over from ``tasks``' current keys (after a clear or an unpickle)."""
        key_of = self._key_of
        self._entries = sorted(k for k in map(key_of, tasks) if k is not None)

    def take(self, limit: int | None = None, reverse: bool = True) -> list[Any]:
        """Up to ``limit`` tasks (every one: ``None``) by key, largest first when
        ``reverse``; each task once.

        The stale entries passed on the way are dropped, so that a later read
        does not pass them again: a monitor that asks for the newest few on
        every refresh pays for each stale entry once, not on every read.
        """
        entries = self._entries
        n = len(entries)
        want = n if limit is None else limit
        get = dict.get
        tasks = self._tasks
        key_of = self._key_of
        chosen: list[Any] = []
        live: list[tuple] = []
        walked = 0
        for index in (range(n - 1, -1, -1) if reverse else range(n)):
            if len(chosen) >= want:
                break
            key = entries[index]
            walked += 1
            task = get(tasks, key[UUID_AT])
            if task is not None and key_of(task) is key:
                chosen.append(task)
                live.append(key)
        if len(live) < walked:  # stale entries were passed: the walked end keeps the live
            if reverse:
                live.reverse()
                entries[n - walked:] = live
            else:
                entries[:walked] = live
        return chosen

    def _tasks_of(self, keys: Iterable[tuple]) -> Iterator[Any]:
        get = dict.get
        tasks = self._tasks
        key_of = self._key_of
        for key in keys:
            task = get(tasks, key[UUID_AT])
            if task is not None and key_of(task) is key:
                yield task
