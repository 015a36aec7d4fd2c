"""Tasks in the order of their events' logical time: ``State.tasks_by_time``.

A task's place in time is a key ``(clock, timestamp)``: the Lamport clock
of one of its events, then when it was sent (for events with equal
clocks); tasks with equal keys go by task id, so two tasks never tie.
A :class:`Timeline` keeps the key of every task's latest event (its
``last_key``, for newest first) in a list sorted by key and id, and beside
it, at the same index, the task each key was filed for.

Why this shape:

* Lamport clocks mostly grow in arrival order, so a new key is nearly
  always the largest: one ``append``.  A late event (a batch from another
  worker, a retry) goes in with a binary search of the last few entries
  (the whole list only when the key is older than all of them) and an
  insert near the end.  Equal keys are rare (one clock, one timestamp):
  the id, which the key leaves out to be 16 bytes smaller, is read only
  then, from the tasks beside the equal keys, by a binary search among
  them (a sender that gives every event one key, or none, costs a
  logarithm per task, not a walk past all the others).
* A task's old key is not searched for and removed when it gets a new
  one: the old entry stays, and a walk skips it because the task's current
  key is another object (an identity test, no comparison).  A task that
  leaves the State gets copies of its keys (:meth:`Timeline.forget`), so
  its entries are skipped the same way.  When stale entries outnumber
  a quarter of the live ones, a pass drops them, so the list holds at most
  about 1.25 times as many entries as there are tasks (``STALE_SHARE``),
  and ingest stays amortised O(1).  A pass reads the task of each entry it
  looks at, at a cache miss each, so it looks first at the entries filed
  since the last pass: a task's events mostly come close together, so
  that is where nearly all stale entries are.  Only if that leaves more
  than half the allowance (or tasks were evicted: ``forget``) does a
  second walk follow, from the oldest entry on, where evicted tasks are
  and tasks that moved on since the last pass were; it stops once it has
  found the stale entries it knows of (less ``STALE_EXTRA``).  Over
  ``bench/state_ingest.py``'s stream of 100k tasks, the passes read 0.44
  tasks per event instead of 1.33 (one pass over the whole list each
  time), and with ``max_tasks_in_memory`` of 10k, 0.84 instead of 2.43.
* The task beside each key makes a read one identity test per entry: no
  lookup of the id in the task map, whose hash table is spread over all
  of memory, and no read of the key tuple.  Over 100k tasks
  (``bench/state_read.py``, caches cold), the newest 100 went from 0.17
  to 0.12 ms and every task by time from 98 to 71 ms.  The price: eight
  bytes per entry, and a forgotten task stays alive while a stale entry
  holds it, so forgotten tasks also trigger the pass that drops stale
  entries (at most a quarter of ``len(tasks)``, plus ``STALE_EXTRA``, of
  them are held at any time).
* Newest-N walks back from the end and stops after N tasks: it costs N
  plus the stale entries it passes, not the number of tasks, and it drops
  the stale entries it passed, so the next read does not pass them again.

Differences from Celery: Celery keeps ``(clock, timestamp, origin, ref)``
in a heap and walks the heap's list, which is in heap order, not sorted,
so its "newest first" is only roughly so, and its ``limit`` counts heap
entries (repeated and dead ones included) rather than tasks.  Here the
order is exact and ``limit`` counts tasks.  Celery's tuples compare equal
clocks by sender name; here the timestamp decides (of two senders' events
with one clock, the wall clock is the better guess of which came first),
then the task id.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from itertools import compress, islice
from operator import attrgetter, is_
from typing import Any

from .sweep import live_flags_from_start

__all__ = ["Timeline"]

#: Entries kept, as a multiple of the tasks, before a compaction drops the stale
#: ones.  A stale entry keeps its key alive (the tuple, its clock and time:
#: about 140 bytes with the entry), so this bounds memory more than it seems.
#: 1.25 against 1.5, over 100k tasks of ``bench/state_ingest.py``'s stream:
#: 944 against 961 bytes per task on average over the compaction cycle (935
#: against 978 at 100k tasks, where 1.5 is at its peak); ingest no slower
#: (156-173k against 153-159k events/s, interleaved runs; callgrind at 10k
#: tasks 53.8k against 53.9k instructions per event): fewer stale keys also
#: leave the caches to live data.
STALE_SHARE = 1.25
#: Stale entries tolerated beyond that (so a tiny State does not compact on
#: every event).
STALE_EXTRA = 64
#: After a pass over the entries filed since the last pass, the share of tasks
#: that stale entries may still be before a pass over the older ones follows.
STALE_AFTER_TAIL = (STALE_SHARE - 1) / 2
#: How far from the end a late key is first looked for.  Late keys are
#: nearly always a few entries from the end (a batch from another worker);
#: a binary search of the whole list of 150k entries touches 17 tuples
#: spread over memory, about 0.8 µs of a 7 µs event.
NEAR_END = 64
#: Forgotten tasks that stale entries may keep alive, as a fraction of the
#: tasks in the State (plus ``STALE_EXTRA``), before a pass frees them.
FORGOTTEN_SHARE = 4

_uuid_of = attrgetter("uuid")
#: A task's current key, for the passes done at C level (a walk in Python reads
#: ``task.last_key`` itself: a slot read the interpreter specializes, where a
#: call of this getter costs a C call per entry, a fifth of a newest-100 read).
_key_of = attrgetter("last_key")


def _key_and_id(pair: tuple[tuple, Any]) -> tuple[tuple, Any]:
    return pair[0], pair[1].uuid


class Timeline:
    """The tasks' keys (each task's ``last_key``, the key of its latest event),
    kept sorted (equal keys by their tasks' ``uuid``), each beside its task.

    Not thread-safe: the State calls it under its lock.
    """

    __slots__ = ("_clean", "_entries", "_forgotten", "_owners", "_tasks")

    def __init__(self, tasks: dict[str, Any]) -> None:
        self._tasks = tasks
        #: Sort keys, ascending; at most STALE_SHARE * len(tasks) + STALE_EXTRA
        #: of them (see :meth:`add`).
        self._entries: list[tuple] = []
        #: The task each entry of ``_entries`` was filed for, at the same index.
        self._owners: list[Any] = []
        #: Forgotten tasks that stale entries may still hold (see :meth:`forget`).
        self._forgotten = 0
        #: Where the next pass starts: the entries before were looked at by an
        #: earlier one (see :meth:`_drop_stale`).
        self._clean = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: tuple, task: Any) -> None:
        """Record that ``task``'s key is now ``key`` (its previous entry goes stale)."""
        entries = self._entries
        if not entries or key > entries[-1]:
            entries.append(key)
            self._owners.append(task)
        else:
            # a late key belongs near the end: search the last NEAR_END entries
            # (hot in the cache) when the key is not older than all of them
            lo = len(entries) - NEAR_END
            if lo <= 0 or entries[lo - 1] > key:
                lo = 0
            at = bisect_right(entries, key, lo)
            owners = self._owners
            if at and entries[at - 1] == key:
                # equal keys: by task id among them (a binary search as well)
                start = bisect_left(entries, key, 0, at)
                at = bisect_right(owners, task.uuid, start, at, key=_uuid_of)
            entries.insert(at, key)
            owners.insert(at, task)
            if at < self._clean:
                self._clean += 1
        if len(entries) > len(self._tasks) * STALE_SHARE + STALE_EXTRA:
            self._drop_stale()

    def forget(self, task: Any) -> None:
        """``task`` left the State: its entries go stale, and are dropped soon enough
        that forgotten tasks held by them stay a small share of the State.

        The task keeps a key of the same value (a reader may be sorting tasks
        it holds by their keys, outside the State's lock), but as a new
        object, which no entry is.
        """
        key = task.last_key
        if key is not None:
            task.last_key = (*key,)
        self._forgotten += 1
        if self._forgotten > len(self._tasks) // FORGOTTEN_SHARE + STALE_EXTRA:
            self._drop_stale(every=True)

    def _drop_stale(self, every: bool = False) -> None:
        """Drop the stale entries filed since the last pass; then, if too many are
        left (or ``every``), those before them, from the oldest on (see the module
        documentation)."""
        clean, end = self._clean, len(self._entries)
        self._keep(clean, end, self._live_flags(clean, end))
        self._clean = len(self._entries)
        tasks = len(self._tasks)
        stale = len(self._entries) - tasks  # at least: each task has at most one live entry
        if every or stale > tasks * STALE_AFTER_TAIL + STALE_EXTRA:
            self._drop_oldest_stale(stale)

    def _drop_oldest_stale(self, stale: int) -> None:
        """Walk from the oldest entry until all but ``STALE_EXTRA`` of ``stale`` stale
        entries are found (:func:`.sweep.live_flags_from_start`), and drop them.

        Evicted tasks' entries are mostly among the oldest, and so are those
        of tasks that moved on since the last pass; the few left are those of
        tasks under way when it ran, just before its end.
        """
        live, found = live_flags_from_start(len(self._entries), stale, STALE_EXTRA,
                                            self._live_flags)
        self._keep(0, len(live), live)
        self._clean = len(self._entries)
        self._forgotten = max(stale - found, 0)  # at most this many forgotten tasks held

    def _live_flags(self, start: int, stop: int) -> list[bool]:
        """Whether each entry from ``start`` to ``stop`` is still its task's key."""
        return list(map(is_, map(_key_of, self._owners[start:stop]),
                        self._entries[start:stop]))

    def _keep(self, start: int, stop: int, live: list[bool]) -> None:
        """Of the entries from ``start`` to ``stop``, keep those ``live`` flags."""
        entries, owners = self._entries, self._owners
        entries[start:stop] = compress(entries[start:stop], live)
        owners[start:stop] = compress(owners[start:stop], live)

    def rebuild(self, tasks: Iterable[Any]) -> None:
        """Start over from ``tasks``' current keys (after a clear or an unpickle)."""
        pairs = sorted(((key, task) for task in tasks if (key := task.last_key) is not None),
                       key=_key_and_id)
        self._entries = [key for key, _ in pairs]
        self._owners = [task for _, task in pairs]
        self._forgotten = 0
        self._clean = len(self._entries)

    def take(self, limit: int | None = None) -> list[tuple[str, Any]]:
        """``(uuid, task)`` of up to ``limit`` tasks (every one: ``None``) by key,
        largest first; each task once.

        A read touches each chosen task once, and no key: the identity test
        compares references, and the task's key and id are two slot reads.
        The newest ``limit`` entries go through one list comprehension (no
        method call and no length test per entry: the newest 100 of 100k
        tasks in 9 µs, where a loop calling a key getter took 13.5);
        when stale entries were among them, the walk goes on for the tasks
        still wanted.  The stale entries passed on the way are dropped, so
        that a later read does not pass them again: a monitor that asks for
        the newest few on every refresh pays for each stale entry once, not
        on every read.
        """
        entries = self._entries
        owners = self._owners
        n = len(entries)
        want = n if limit is None else min(limit, n)
        if want <= 0:
            return []
        pairs = zip(reversed(entries), reversed(owners))
        chosen = [(task.uuid, task) for key, task in islice(pairs, want)
                  if task.last_key is key]
        walked = want
        if len(chosen) < want:  # stale entries among those: on for the tasks still wanted
            for key, task in pairs:
                walked += 1
                if task.last_key is key:
                    chosen.append((task.uuid, task))
                    if len(chosen) >= want:
                        break
        if walked > len(chosen):  # the walked end keeps its live entries, in order
            kept = [task for _, task in reversed(chosen)]
            entries[n - walked:] = list(map(_key_of, kept))
            owners[n - walked:] = kept
            self._clean = min(self._clean, n - walked)
        return chosen
