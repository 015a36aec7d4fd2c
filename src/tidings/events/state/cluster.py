"""The :class:`State`: tasks and workers rebuilt from events, and how to read them."""

from __future__ import annotations

import copy
import heapq
import pickle
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from operator import attrgetter
from typing import Any, SupportsIndex, TypeVar

from ...protocol import states
from ...utils.gcpause import PAUSE_ABOVE, collector_paused
from .indexes import TaskIndex, TaskMap, WorkerMap
from .reducer import Reducer
from .task import FIRST_KEY, LAST_KEY, Task
from .timeline import Timeline
from .worker import DriftWarnings, Worker

__all__ = ["Changes", "State"]

READY_STATES = states.READY_STATES
T = TypeVar("T")


@dataclass(frozen=True)
class Changes:
    """What :meth:`State.copy_changes` hands out: copies, taken at one instant.

    ``tasks`` maps each uuid changed since the previous call to a copy of the
    task, or to ``None`` when the task is gone.  With ``reset`` true, the
    state was cleared (or this is the first call): ``tasks`` then holds every
    task, and whatever the caller kept from earlier calls is stale.
    """

    generation: int
    reset: bool
    tasks: dict[str, Task | None]
    workers: dict[str, Worker]
    event_count: int
    task_count: int


class State(Reducer):
    """Cluster state rebuilt from events.

    ``State(callback=None, workers=None, tasks=None, taskheap=None,
    max_workers_in_memory=5000, max_tasks_in_memory=10000, on_node_join=None,
    on_node_leave=None, tasks_by_type=None, tasks_by_worker=None)``.
    Feed it with :meth:`event` (usually as a receiver's ``'*'`` handler).

    **Reading from another thread.**  Ingest runs in the receiver's thread.
    A reader never takes the lock itself; it uses :meth:`freeze_while`
    (Celery's: run a function with ingest paused), :meth:`task_list`,
    :meth:`read_tasks` (fields of some tasks at one instant) or
    :meth:`copy_changes` (incremental copies, for cameras and history).

    **Extending.**  As in Celery, set ``Task``/``Worker`` to subclasses of
    your own: every task and worker this State creates is of those classes.
    Override these hooks (they run under the lock, after the event applied;
    keep them short):

    * ``on_task_event(task, subject, created)`` — after every task event;
    * ``on_worker_event(worker, subject, created)`` — after every worker event;
    * ``on_task_evicted(task)`` — a task dropped to stay within
      ``max_tasks_in_memory``.

    The steps of a task event are methods of :class:`~.reducer.Reducer`,
    overridable one by one.
    """

    Worker = Worker
    Task = Task
    event_count = 0
    task_count = 0
    heap_multiplier = 4

    def __init__(self, callback: Callable[[State, dict], Any] | None = None,
                 workers: dict[str, Worker] | None = None,
                 tasks: dict[str, Task] | None = None,
                 taskheap: Any = None,
                 max_workers_in_memory: int = 5000,
                 max_tasks_in_memory: int = 10000,
                 on_node_join: Callable[[Worker], Any] | None = None,
                 on_node_leave: Callable[[Worker], Any] | None = None,
                 tasks_by_type: Any = None,
                 tasks_by_worker: Any = None) -> None:
        self.event_callback = callback
        self.max_workers_in_memory = max_workers_in_memory
        self.max_tasks_in_memory = max_tasks_in_memory
        self.on_node_join = on_node_join
        self.on_node_leave = on_node_leave
        self.workers = WorkerMap(workers or {})
        self.workers.limit = max_workers_in_memory
        self.tasks = TaskMap(tasks or {})
        self.tasks.limit = max_tasks_in_memory
        self._mutex = threading.RLock()
        #: Custom handlers by event group: ``handlers['custom'] = fun(subject, event)``.
        self.handlers: dict[str, Callable[[str, dict], Any]] = {}
        #: Every task by its latest event (``tasks_by_time``, newest first).
        self._newest = Timeline(self.tasks)
        self.tasks.on_remove = self._removed_from_map
        self.tasks_by_type = TaskIndex(self.tasks, self._sorted_tasks, _name_of)
        self.tasks_by_worker = TaskIndex(self.tasks, self._sorted_tasks, _hostname_of)
        #: Children seen before their parent: parent uuid -> child uuids (bounded
        #: by ``max_tasks_in_memory`` parents, oldest forgotten first).
        self._tasks_to_resolve: OrderedDict[str, set[str]] = OrderedDict()
        #: Task uuids, first seen first: what goes when no finished task is left.
        #: Made the first time it is needed, from the task map's order (which
        #: is first seen): until then it would cost 8 bytes per task for
        #: nothing, and most States never need it (their tasks finish).
        self._order: deque[str] = deque()
        self._order_kept = False
        self._ready: deque[str] = deque()  # uuids in the order they became ready
        #: Tasks dropped to stay within ``max_tasks_in_memory``, by reason.
        self.evicted = {"ready": 0, "unready": 0}
        #: Hosts already warned about clock drift (bounded).
        self.drift_warnings = DriftWarnings()
        #: uuids of tasks changed since :meth:`take_changes` (None: not tracked).
        self._dirty: set[str] | None = None
        #: Bumped whenever tasks are cleared, so snapshot takers start afresh.
        self._generation = 0
        for task in dict.values(self.tasks):
            task.cluster_state = self
        for worker in dict.values(self.workers):
            worker.drift_warnings = self.drift_warnings
        self.rebuild_taskheap()

    @property
    def callback(self) -> Callable | None:
        return self.event_callback

    # -- hooks (override in a subclass) --------------------------------------------------

    def on_task_event(self, task: Task, subject: str, created: bool) -> None:
        """Called after each task event is applied (under the lock)."""

    def on_worker_event(self, worker: Worker, subject: str, created: bool) -> None:
        """Called after each worker event is applied (under the lock)."""

    def on_task_evicted(self, task: Task) -> None:
        """Called when a task is dropped to stay within ``max_tasks_in_memory``."""

    # -- feeding -------------------------------------------------------------------------

    def event(self, event: dict[str, Any]) -> Any:
        """Apply one event; returns ``((obj, created), subject)`` as Celery does."""
        with self._mutex:
            return self._event(event)

    def task_event(self, type_: str, fields: dict[str, Any]) -> Any:
        """Deprecated (as in Celery): apply ``task-<type_>`` without taking the lock."""
        fields["type"] = f"task-{type_}"
        result = self._event(fields)
        return result[0] if result else None

    def worker_event(self, type_: str, fields: dict[str, Any]) -> Any:
        """Deprecated (as in Celery): apply ``worker-<type_>`` without taking the lock."""
        fields["type"] = f"worker-{type_}"
        result = self._event(fields)
        return result[0] if result else None

    # -- reading -------------------------------------------------------------------------

    def freeze_while(self, fun: Callable[..., T], *args: Any, clear_after: bool = False,
                     **kwargs: Any) -> T:
        """Run ``fun`` with ingest paused (the lock is re-entrant: ``fun`` may read freely)."""
        with self._mutex:
            try:
                return fun(*args, **kwargs)
            finally:
                if clear_after:
                    self._clear()

    def task_list(self) -> list[Task]:
        """Every task, at one instant (the objects are live: read them with :meth:`read_tasks`)."""
        with self._mutex:
            return list(dict.values(self.tasks))

    def read_tasks(self, tasks: Iterable[Task], read: Callable[[Task], T]) -> list[T]:
        """``read(task)`` for each of ``tasks``, all at one instant (ingest paused).

        A read of more than ``PAUSE_ABOVE`` tasks holds the collector off,
        as :meth:`itertasks` does: a read that makes a dict of each task
        makes several objects per task.
        """
        with self._mutex:
            listed = tasks if type(tasks) is list else list(tasks)
            with collector_paused(len(listed)):
                return [read(task) for task in listed]

    def copy_changes(self, generation: int | None = None, cluster_state: Any = None,
                     clear_after: bool = False) -> Changes:
        """Copies of what changed since the call that returned ``generation``.

        Pass the previous result's ``generation`` (``None`` the first time).
        The pause costs time proportional to the tasks changed, not to the
        size of the state.  Copied tasks resolve ``parent``/``children``
        through ``cluster_state`` (anything with a ``tasks`` mapping).
        """
        with self._mutex:
            reset = generation != self._generation
            if reset:
                self._dirty = set()
                uuids: Collection[str] = list(dict.keys(self.tasks))
            else:
                uuids = self.take_changes()
            live = self.tasks
            copies: dict[str, Task | None] = {}
            with collector_paused(len(uuids)):
                for uuid in uuids:
                    task = dict.get(live, uuid)
                    copies[uuid] = None if task is None else task.copy(cluster_state)
            workers = {h: w.copy() for h, w in dict.items(self.workers)}
            changes = Changes(self._generation, reset, copies, workers, self.event_count,
                              self.task_count)
            if clear_after:
                self._clear()
                changes = Changes(self._generation, reset, copies, workers,
                                  changes.event_count, changes.task_count)
            return changes

    def track_changes(self) -> None:
        """Start recording which tasks change (used by cameras; costs one set add per event)."""
        with self._mutex:
            if self._dirty is None:
                self._dirty = set()

    def take_changes(self) -> set[str]:
        """uuids of the tasks changed or dropped since the last call."""
        with self._mutex:
            changed = self._dirty or set()
            self._dirty = set()
            return changed

    def itertasks(self, limit: int | None = None) -> Iterator[tuple[str, Task]]:
        # the first ``limit`` pairs, copied in one C call (atomic under the GIL: safe
        # while another thread feeds), and no more of them
        with collector_paused(limit):
            return iter(list(islice(dict.items(self.tasks), limit)))

    def tasks_by_time(self, limit: int | None = None, reverse: bool = True
                      ) -> Iterator[tuple[str, Task]]:
        """``(uuid, task)`` by the logical time of their events, newest first.

        Newest first orders tasks by their latest event, oldest first by their
        earliest event, like Celery's heap walk (but exactly: see
        :mod:`.timeline`).  ``limit`` caps the number of tasks returned.  The
        tasks are chosen at one instant (ingest paused).

        Newest first is what monitors ask for, on every refresh: it is kept
        in order as events come, and with a ``limit`` costs that of
        ``limit`` tasks, not of the whole State.  Oldest first is a sort of
        every task by its earliest key when asked for (over 100k tasks:
        about 0.3 s for all of them, as before, and 0.06 s with a ``limit``
        of 100, where it was 0.1 ms): keeping that order too cost 84 bytes
        per task and a second structure to feed on every new task, for a
        read monitors do not repeat.  A read of more than
        :data:`~tidings.utils.gcpause.PAUSE_ABOVE` tasks holds the garbage
        collector off while it makes its pairs (see :mod:`tidings.utils.gcpause`).
        """
        with self._mutex:
            if limit and limit <= PAUSE_ABOVE:  # collector_paused's own test, made here so
                return self._by_time(limit, reverse)  # a page's read enters no null context
            with collector_paused():
                return self._by_time(limit or None, reverse)

    def _by_time(self, limit: int | None, reverse: bool) -> Iterator[tuple[str, Task]]:
        if reverse:
            return iter(self._newest.take(limit))
        return self._sorted_tasks(dict.values(self.tasks), limit, False)

    tasks_by_timestamp = tasks_by_time

    def _sorted_tasks(self, tasks: Iterable[Task], limit: int | None, reverse: bool
                      ) -> Iterator[tuple[str, Task]]:
        """Some of the tasks (an index's) in :meth:`tasks_by_time`'s order."""
        key = LAST_KEY if reverse else FIRST_KEY
        tasks = [t for t in tasks if t.last_key is not None]
        if limit:
            chosen = (heapq.nlargest if reverse else heapq.nsmallest)(limit, tasks, key=key)
        else:
            chosen = sorted(tasks, key=key, reverse=reverse)
        return iter([(t.uuid, t) for t in chosen])

    def _tasks_by_type(self, name: str, limit: int | None = None, reverse: bool = True
                       ) -> Iterator[tuple[str, Task]]:
        return self.tasks_by_type(name, limit, reverse)

    def _tasks_by_worker(self, hostname: str, limit: int | None = None, reverse: bool = True
                         ) -> Iterator[tuple[str, Task]]:
        return self.tasks_by_worker(hostname, limit, reverse)

    def task_types(self) -> list[str]:
        """Names of the tasks in the state, sorted."""
        return sorted(self.tasks_by_type.keys())

    def alive_workers(self) -> Iterator[Worker]:
        return (w for w in self.workers.values() if w.alive)

    # -- creating and clearing -----------------------------------------------------------

    def get_or_create_worker(self, hostname: str, **kwargs: Any) -> tuple[Worker, bool]:
        try:
            worker = self.workers[hostname]
            if kwargs:
                worker.update(kwargs)
            return worker, False
        except KeyError:
            worker = self._new_worker(hostname)
            if kwargs:
                worker.update(kwargs)
            self._store_worker(hostname, worker)
            return worker, True

    def get_or_create_task(self, uuid: str) -> tuple[Task, bool]:
        try:
            return self.tasks[uuid], False
        except KeyError:
            task = self.Task(uuid, cluster_state=self)
            self._store_task(uuid, task)
            return task, True

    def clear_tasks(self, ready: bool = True) -> None:
        with self._mutex:
            return self._clear_tasks(ready)

    def _clear_tasks(self, ready: bool = True) -> None:
        self._generation += 1
        if ready:
            keep = {u: t for u, t in dict.items(self.tasks) if t.state not in READY_STATES}
            dict.clear(self.tasks)
            dict.update(self.tasks, keep)
        else:
            dict.clear(self.tasks)
        self.rebuild_taskheap()

    def _clear(self, ready: bool = True) -> None:
        dict.clear(self.workers)
        self._clear_tasks(ready)
        self.event_count = 0
        self.task_count = 0

    def clear(self, ready: bool = True) -> None:
        with self._mutex:
            return self._clear(ready)

    def rebuild_taskheap(self) -> None:
        r"""Rebuild the eviction and index bookkeeping from ``tasks``.

        There is no heap: newest-first time order is kept by a
        :class:`.Timeline`, rebuilt here from the tasks' keys.
        """
        tasks = dict.values(self.tasks)
        self._newest.rebuild(tasks)
        self._order, self._order_kept = deque(), False
        self._ready = deque(t.uuid for t in tasks if t.state in READY_STATES)
        self.tasks_by_type.clear()
        self.tasks_by_worker.clear()
        for task in tasks:
            if task.name is not None:
                self.tasks_by_type.add(task.name, task.uuid)
            if task.worker is not None:
                self.tasks_by_worker.add(task.worker.hostname, task.uuid)

    def __repr__(self) -> str:
        return f"<State: events={self.event_count} tasks={len(self.tasks)}>"

    def __reduce__(self) -> tuple:
        return self.__class__, (
            self.event_callback, self.workers, self.tasks, None,
            self.max_workers_in_memory, self.max_tasks_in_memory,
            self.on_node_join, self.on_node_leave,
            None, None,  # the indexes are rebuilt from the tasks
        )

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple:
        """A pickle of the State is made here, whole, with ingest paused and the
        collector held off, and the pickle being made holds it as bytes.

        Pickling makes a few objects per task, kept until the pickle is
        done; in a process holding one State of 100k tasks, they set off
        three full collections of everything alive, which cost more than
        the pickling.  Loading holds the collector off too.  So an object
        pickled beside the State (in one ``pickle.dumps``) that the State
        also holds comes back as two objects.
        """
        with self._mutex, collector_paused():
            inner = pickle.dumps(self.__reduce__(), protocol)
        return _unpickle_state, (inner,)

    def __copy__(self) -> State:
        cls, args = self.__reduce__()
        return cls(*args)  # a State over the same task and worker objects, as before

    def __deepcopy__(self, memo: dict) -> State:
        cls, args = self.__reduce__()
        return cls(*copy.deepcopy(args, memo))


def _unpickle_state(inner: bytes) -> State:
    with collector_paused():
        cls, args = pickle.loads(inner)  # the pickle this one held: as trusted as it
        return cls(*args)


_name_of = attrgetter("name")


def _hostname_of(task: Task) -> str | None:
    """The key of ``tasks_by_worker``."""
    worker = task.worker
    return None if worker is None else worker.hostname
