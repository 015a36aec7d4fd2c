"""The State's containers: ``tasks``, ``workers``, ``tasks_by_type``, ``tasks_by_worker``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import compress
from typing import Any

from .sweep import live_flags_from_start

__all__ = ["ItemsSnapshot", "TaskIndex", "TaskMap", "WorkerMap"]


class ItemsSnapshot:
    """The ``(key, value)`` pairs of a map at one instant: iterable (more than
    once), sized.

    Two lists, zipped as they are iterated, rather than a list of pairs: a
    copy of 100k tasks (``dict(state.tasks.items())``) then builds no tuple
    per task for the collector to track, 33 instead of 59 ms (Celery's:
    76 ms).  Celery's ``items()`` is a generator, iterable once.
    """

    __slots__ = ("_keys", "_values")

    def __init__(self, keys: list, values: list) -> None:
        self._keys = keys
        self._values = values

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return zip(self._keys, self._values)

    def __len__(self) -> int:
        return len(self._keys)


class _Snapshotting(dict):
    """A plain dict whose iteration works on a snapshot.

    Ingest mutates the dict from the receiver's thread; a reader in another
    thread (a monitor, a camera) iterating at the same time would otherwise
    hit "dictionary changed size during iteration".  Lookups stay the C dict's.
    """

    limit: int | None = None

    def keys(self) -> list:  # type: ignore[override]
        return list(dict.keys(self))

    def values(self) -> list:  # type: ignore[override]
        return list(dict.values(self))

    def items(self) -> ItemsSnapshot:  # type: ignore[override]
        return ItemsSnapshot(list(dict.keys(self)), list(dict.values(self)))

    def __iter__(self) -> Iterator:
        return iter(list(dict.keys(self)))

    @property
    def data(self) -> _Snapshotting:
        """Celery's ``LRUCache.data`` (the underlying mapping)."""
        return self

    def __reduce__(self) -> tuple:
        return self.__class__, (dict(dict.items(self)),)


class TaskMap(_Snapshotting):
    """``State.tasks``: uuid -> :class:`~tidings.events.state.Task`.

    A task removed through the map itself (``del``, ``pop``, ``popitem``,
    ``clear``) is passed to ``on_remove``, which the State sets, so that it
    leaves time order and the indexes too.  (The State's own removals do not
    come this way.)
    """

    on_remove: Callable[[Any], None] | None = None

    def _removed(self, tasks: Iterable[Any]) -> None:
        if self.on_remove is not None:
            for task in tasks:
                self.on_remove(task)

    def __delitem__(self, key: Any) -> None:
        self._removed((dict.pop(self, key),))

    def pop(self, key: Any, *default: Any) -> Any:
        if not dict.__contains__(self, key):
            return dict.pop(self, key, *default)
        task = dict.pop(self, key)
        self._removed((task,))
        return task

    def popitem(self) -> tuple[Any, Any]:
        item = dict.popitem(self)
        self._removed((item[1],))
        return item

    def clear(self) -> None:
        tasks = list(dict.values(self))
        dict.clear(self)
        self._removed(tasks)


class WorkerMap(_Snapshotting):
    """``State.workers``: hostname -> :class:`~tidings.events.state.Worker`."""


Sorter = Callable[[Iterable[Any], "int | None", bool], Iterator[tuple[str, Any]]]


#: Entries an index keeps under one key beyond twice its tasks, before a walk
#: drops the stale ones (so that a key with one task is not compacted on every
#: move); also the stale entries that walk may leave.
INDEX_SLACK = 2


class TaskIndex:
    """``tasks_by_type`` / ``tasks_by_worker``: a key -> tasks index.

    Indexing (``index['proj.add']``) gives the set of tasks under that key;
    calling (``index('proj.add', limit=None, reverse=True)``) yields
    ``(uuid, task)`` newest first, as Celery's callable defaultdict does.
    Keys whose last task is gone are removed, so the index stays bounded.

    Each key keeps a list of task ids, appended to as tasks come under it,
    and the number of tasks under it now.  A task that leaves a key (gone,
    or renamed, or moved to another worker) is not searched for: its entry
    goes stale, and reads skip it (``key_of(task)`` is another key, or the
    task is gone).  When a key's list holds more than twice its tasks (plus
    ``INDEX_SLACK``), a walk from its start drops the stale entries.  A
    list entry costs 8 bytes where a set entry costs 30 to 60: the two
    indexes went from 157 to 17 bytes per task (50k tasks of
    ``bench/state_ingest.py``'s stream, tracemalloc).
    """

    def __init__(self, tasks: dict[str, Any], sort: Sorter,
                 key_of: Callable[[Any], str | None]) -> None:
        self._tasks = tasks
        self._sort = sort
        self._key_of = key_of
        #: key -> ids of the tasks filed under it, stale ones included (at most
        #: 2 * count + INDEX_SLACK of them).
        self._ids: dict[str, list[str]] = {}
        #: key -> how many tasks are under it now.
        self._counts: dict[str, int] = {}

    def add(self, key: str, uuid: str) -> None:
        ids = self._ids.get(key)
        if ids is None:
            self._ids[key] = [uuid]
            self._counts[key] = 1
        else:
            ids.append(uuid)
            self._counts[key] += 1

    def discard(self, key: str | None) -> None:
        """A task filed under ``key`` left it (its entry goes stale: it is not searched
        for)."""
        count = self._counts.get(key)  # type: ignore[arg-type]
        if count is None:
            return
        if count <= 1:
            del self._counts[key], self._ids[key]  # type: ignore[arg-type]
            return
        self._counts[key] = count - 1  # type: ignore[index]
        ids = self._ids[key]  # type: ignore[index]
        if len(ids) > 2 * count + INDEX_SLACK:
            self._drop_stale(key, ids, count - 1)  # type: ignore[arg-type]

    def _drop_stale(self, key: str, ids: list[str], count: int) -> None:
        """Drop stale entries from ``key``'s list (of ``count`` tasks), from the oldest
        on, until all but ``INDEX_SLACK`` of them are found.

        Tasks mostly leave a key in the order they came under it (a bounded
        State evicts the oldest first), so the stale entries are mostly at
        the start, and the walk stops soon after them.  Over
        ``bench/state_ingest.py``'s stream of 100k tasks with 10k kept, the
        tasks read to drop stale entries went from 169k (a pass over the
        whole list each time) to 14k (:func:`.sweep.live_flags_from_start`).
        A walk that reads to the end and still falls short has met an id
        filed twice (a task that left the key and came back): a pass over
        the whole list drops those too.
        """
        get = self._tasks.get
        key_of = self._key_of

        def flags_of(start: int, stop: int) -> list[bool]:
            return [t is not None and key_of(t) == key for t in map(get, ids[start:stop])]

        stale = len(ids) - count
        live, found = live_flags_from_start(len(ids), stale, INDEX_SLACK, flags_of)
        if stale - found > INDEX_SLACK:  # read to the end and short: ids filed twice
            ids[:] = [t.uuid for t in self._live(key, ids)]
        else:
            ids[:len(live)] = compress(ids[:len(live)], live)

    def move(self, old: str | None, new: str | None, uuid: str) -> None:
        """Re-file ``uuid`` from ``old`` to ``new`` (either may be None)."""
        if old is not None:
            self.discard(old)
        if new is not None:
            self.add(new, uuid)

    def clear(self) -> None:
        self._ids.clear()
        self._counts.clear()

    def _live(self, key: str, ids: Iterable[str]) -> list[Any]:
        """The tasks of ``ids`` that are still under ``key``, each once, in filing order."""
        get = self._tasks.get
        key_of = self._key_of
        # duplicates dropped by id (a string's cached hash; a task's is a Python
        # call), then one comprehension (no generator to resume per entry)
        return [t for t in map(get, dict.fromkeys(ids)) if t is not None and key_of(t) == key]

    def __getitem__(self, key: str) -> set[Any]:
        return set(self._live(key, list(self._ids.get(key, ()))))

    def get(self, key: str, default: Any = None) -> set[Any] | Any:
        return self[key] if key in self._counts else default

    def __contains__(self, key: object) -> bool:
        return key in self._counts

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._counts))

    def __len__(self) -> int:
        return len(self._counts)

    def keys(self) -> list[str]:
        return list(self._counts)

    def items(self) -> list[tuple[str, set[Any]]]:
        return [(k, self[k]) for k in list(self._counts)]

    def ids(self, key: str) -> set[str]:
        return {t.uuid for t in self[key]}

    def __call__(self, key: str, limit: int | None = None, reverse: bool = True
                 ) -> Iterator[tuple[str, Any]]:
        return self._sort(self[key], limit, reverse)

    def as_dict(self) -> dict[str, list[str]]:
        """Every key's task ids, sorted (costs a lookup per entry: not for hot paths)."""
        return {k: sorted(self.ids(k)) for k in list(self._counts)}
