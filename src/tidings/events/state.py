"""In-memory cluster state rebuilt from events (API of ``celery.events.state``).

A consumer written for Celery works by changing its import from
``celery.events.state`` to ``tidings.events.state``: the classes, methods,
attributes and the observable task states are the same.  What differs fixes
Celery's known weaknesses:

* A task event refreshes its worker's liveness with the *local receive time*,
  not the sender's timestamp (a worker with a skewed clock no longer looks
  alive for hours after it died).
* Event keys can never overwrite internals (``children``, ``worker``,
  ``cluster_state``, ``heartbeats``, methods, private names): such keys are
  ignored.
* An event older than the task's current state (it arrives late) fills in
  the task's data but never overwrites the newer event's metadata
  (``timestamp``, ``clock``, ``hostname``, ``pid``, ``type`` ...).  A
  ``task-rejected`` outranks ``RECEIVED``/``STARTED``, so a rejection shows.
* ``tasks_by_type`` and ``tasks_by_worker`` are kept up to date as a task's
  name and worker become known, not only when the task is created; a task is
  indexed under the worker that handles it (not under the client that sent
  it), and client-only tasks no longer break ``tasks_by_worker(host)``.
* ``Task.parent`` and ``Task.root`` are looked up on every access, so a parent
  that arrives late is found.
* When ``max_tasks_in_memory`` is reached, finished tasks are evicted first
  (oldest first); running tasks go only when nothing finished is left.
* Pickling keeps parent/child links; every index and buffer is bounded.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from itertools import islice
from operator import attrgetter
from typing import Any

from ..protocol import states
from ..protocol.events import (
    HEARTBEAT_DRIFT_MAX,
    HEARTBEAT_EXPIRE_WINDOW,
    TASK_EVENT_TO_STATE,
)

__all__ = ["State", "Task", "Worker", "heartbeat_expires"]

logger = logging.getLogger("tidings.events.state")

DRIFT_WARNING = (
    "Substantial drift from %s may mean clocks are out of sync.  Current drift is "
    "%s seconds.  [orig: %s recv: %s]"
)

READY_STATES = states.READY_STATES
RETRY = states.RETRY
RECEIVED = states.RECEIVED
_RANK = states.PRECEDENCE_RANK
_UNKNOWN_RANK = states.UNKNOWN_RANK

#: Keys of an event that describe the event itself rather than the task; a
#: late (stale) event must not overwrite them with older values.
_ENVELOPE_KEYS = frozenset(
    {"hostname", "utcoffset", "pid", "clock", "timestamp", "type", "local_received"}
)
#: What a late ``task-received`` may contribute (Celery's merge rule).
_RECEIVED_MERGE = frozenset(
    {"name", "args", "kwargs", "parent_id", "root_id", "retries", "eta", "expires"}
)

_drift_warned: OrderedDict[str, None] = OrderedDict()


def _warn_drift(hostname: str, drift: float, local_received: float, timestamp: float) -> None:
    """Warn about clock drift once per host (the memory of hosts is bounded)."""
    if hostname in _drift_warned:
        return
    _drift_warned[hostname] = None
    if len(_drift_warned) > 1000:
        _drift_warned.popitem(last=False)
    logger.warning(DRIFT_WARNING, hostname, drift, timestamp, local_received)


def heartbeat_expires(timestamp: float, freq: float = 60,
                      expire_window: float = HEARTBEAT_EXPIRE_WINDOW) -> float:
    """When a worker whose last heartbeat was at ``timestamp`` counts as gone."""
    if isinstance(freq, Decimal):
        freq = float(freq)
    if isinstance(timestamp, Decimal):
        timestamp = float(timestamp)
    return timestamp + (freq * (expire_window / 1e2))


class _KeyPolicy:
    """Which event keys may become attributes of a model object.

    Decided once per key name and cached (the cache is bounded, so a stream
    of random keys cannot grow it).  A key is refused when it names a
    private attribute, a method, a property or an internal slot.
    """

    def __init__(self, cls: type, protected: Iterable[str]) -> None:
        self.cls = cls
        self.protected = frozenset(protected)
        self.cache: dict[str, bool] = {}
        #: Keys known to be allowed: an event whose keys all are in it takes
        #: the fast path (one C-level subset test instead of a check per key).
        self.ok: set[str] = set()

    def allowed(self, key: str) -> bool:
        try:
            return self.cache[key]
        except KeyError:
            pass
        ok = (
            isinstance(key, str)
            and key.isidentifier()
            and not key.startswith("_")
            and key not in self.protected
            and (key in self.cls._settable or not hasattr(self.cls, key))
        )
        if len(self.cache) < 4096:
            self.cache[key] = ok
            if ok:
                self.ok.add(key)
        return ok


# -- Worker ----------------------------------------------------------------------------------


class Worker:
    """A worker as seen through its events."""

    heartbeat_max = 4
    expire_window = HEARTBEAT_EXPIRE_WINDOW

    _fields = ("hostname", "pid", "freq", "heartbeats", "clock", "active", "processed",
               "loadavg", "sw_ident", "sw_ver", "sw_sys")
    _settable = frozenset(_fields) - {"heartbeats"}
    __slots__ = (*_fields, "__dict__", "__weakref__")

    def __init__(self, hostname: str | None = None, pid: int | None = None, freq: float = 60,
                 heartbeats: list[float] | None = None, clock: int = 0,
                 active: int | None = None, processed: int | None = None,
                 loadavg: list[float] | None = None, sw_ident: str | None = None,
                 sw_ver: str | None = None, sw_sys: str | None = None) -> None:
        self.hostname = hostname
        self.pid = pid
        self.freq = freq
        self.heartbeats = [] if heartbeats is None else heartbeats
        self.clock = clock or 0
        self.active = active
        self.processed = processed
        self.loadavg = loadavg
        self.sw_ident = sw_ident
        self.sw_ver = sw_ver
        self.sw_sys = sw_sys

    def __reduce__(self) -> tuple:
        return _rebuild_worker, (self.__class__, {f: getattr(self, f) for f in self._fields},
                                 dict(self.__dict__))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Worker):
            return self.hostname == other.hostname
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        return hash(self.hostname)

    def __repr__(self) -> str:
        return f"<Worker: {self.hostname} ({self.status_string} clock:{self.clock})"

    def _apply(self, fields: dict[str, Any]) -> None:
        if fields.keys() <= _WORKER_KEYS.ok:
            for key, value in fields.items():
                setattr(self, key, value)
            return
        allowed = _WORKER_KEYS.allowed
        for key, value in fields.items():
            if allowed(key):
                setattr(self, key, value)

    def event(self, type_: str | None, timestamp: float | None = None,
              local_received: float | None = None, fields: dict[str, Any] | None = None) -> None:
        """Apply a worker event; any non-offline event with times counts as a heartbeat."""
        if fields:
            self._apply(fields)
        heartbeats = self.heartbeats
        if type_ == "offline":
            heartbeats.clear()
            return
        if not local_received or not timestamp:
            return
        drift = abs(int(local_received) - int(timestamp))
        if drift > HEARTBEAT_DRIFT_MAX:
            _warn_drift(self.hostname, drift, local_received, timestamp)
        if len(heartbeats) > self.heartbeat_max - 1:
            del heartbeats[0]
        if not heartbeats or local_received > heartbeats[-1]:
            heartbeats.append(local_received)
        else:
            bisect.insort(heartbeats, local_received)

    def update(self, f: dict[str, Any] | None = None, **kw: Any) -> None:
        for key, value in (dict(f or {}, **kw)).items():
            setattr(self, key, value)

    def _clone(self) -> Worker:
        """An independent copy, for snapshots."""
        new = Worker.__new__(self.__class__)
        for name in self._fields:
            setattr(new, name, getattr(self, name))
        new.heartbeats = list(self.heartbeats)
        new.__dict__.update(self.__dict__)
        return new

    @property
    def status_string(self) -> str:
        return "ONLINE" if self.alive else "OFFLINE"

    @property
    def heartbeat_expires(self) -> float:
        return heartbeat_expires(self.heartbeats[-1], self.freq, self.expire_window)

    @property
    def alive(self, nowfun: Callable[[], float] = time.time) -> bool:
        return bool(self.heartbeats and nowfun() < self.heartbeat_expires)

    @property
    def id(self) -> str:
        return f"{self.hostname}.{self.pid}"


def _rebuild_worker(cls: type, fields: dict, extra: dict) -> Worker:
    worker = cls(**fields)
    worker.__dict__.update(extra)
    return worker


_WORKER_KEYS = _KeyPolicy(Worker, {"heartbeats", "event"})


# -- Task ------------------------------------------------------------------------------------

_TASK_DEFAULTS: dict[str, Any] = {
    "name": None, "state": states.PENDING, "received": None, "sent": None, "started": None,
    "succeeded": None, "failed": None, "retried": None, "revoked": None, "rejected": None,
    "args": None, "kwargs": None, "eta": None, "expires": None, "retries": None,
    "worker": None, "result": None, "exception": None, "timestamp": None, "runtime": None,
    "traceback": None, "exchange": None, "routing_key": None, "clock": 0, "client": None,
    "root_id": None, "parent_id": None,
    # envelope and per-type fields that nearly every task carries: slots, not a dict
    "hostname": None, "pid": None, "utcoffset": None, "local_received": None, "type": None,
    "queue": None, "requeue": None, "terminated": None, "signum": None, "expired": None,
}
_TASK_INTERNAL = ("uuid", "cluster_state", "_children", "_first", "_last")


class Task:
    """A task as seen through its events.

    Fields not set by any event read as Celery's defaults (``None``;
    ``state`` ``PENDING``; ``clock`` 0) without taking memory.
    """

    __slots__ = (*_TASK_INTERNAL, *_TASK_DEFAULTS, "__dict__", "__weakref__")

    _fields = ("uuid", "name", "state", "received", "sent", "started", "rejected", "succeeded",
               "failed", "retried", "revoked", "args", "kwargs", "eta", "expires", "retries",
               "worker", "result", "exception", "timestamp", "runtime", "traceback",
               "exchange", "routing_key", "clock", "client", "root", "root_id", "parent",
               "parent_id", "children")
    _defaults = _TASK_DEFAULTS
    _info_fields = ("args", "kwargs", "retries", "result", "eta", "runtime", "expires",
                    "exception", "exchange", "routing_key", "root_id", "parent_id")
    #: Keys events may set (besides unknown custom keys, which go to ``__dict__``).
    _settable = (frozenset(_TASK_DEFAULTS) | {"uuid"}) - {"worker", "state"}
    #: Celery's merge rules: what a late event of that state may contribute.
    merge_rules = {RECEIVED: _RECEIVED_MERGE}

    def __init__(self, uuid: str | None = None, cluster_state: State | None = None,
                 children: Iterable[Any] | None = None, **kwargs: Any) -> None:
        self.uuid = uuid
        self.cluster_state = cluster_state
        self._children = None
        self._first = self._last = None
        if children:
            self._children = {getattr(c, "uuid", c) for c in children}
        kwargs.pop("root", None)
        kwargs.pop("parent", None)
        for key, value in kwargs.items():
            setattr(self, key, value)

    def __getattr__(self, name: str) -> Any:
        # Only reached for a slot that no event has set yet.
        try:
            return _TASK_DEFAULTS[name]
        except KeyError:
            if name in ("_children", "_first", "_last", "cluster_state"):
                return None
            raise AttributeError(name) from None

    def event(self, type_: str, timestamp: float | None = None,
              local_received: float | None = None, fields: dict[str, Any] | None = None,
              setattr: Callable = setattr) -> None:
        """Merge one event of subject ``type_`` (``received``, ``succeeded`` ...)."""
        fields = fields or {}
        state = TASK_EVENT_TO_STATE.get(type_)
        if state is not None:
            setattr(self, type_, timestamp)  # e.g. task.started = <ts>, even if late
        else:
            state = type_.upper()  # custom state, e.g. PROGRESS
        current = self.state
        allowed = _TASK_KEYS.allowed
        if (state != RETRY and current != RETRY
                and _RANK.get(state, _UNKNOWN_RANK) > _RANK.get(current, _UNKNOWN_RANK)):
            # A late event: take its data, keep the newer event's metadata.
            rule = self.merge_rules.get(state)
            ok = _TASK_KEYS.ok
            for key, value in fields.items():
                if (key not in _ENVELOPE_KEYS and (rule is None or key in rule)
                        and (key in ok or allowed(key))):
                    setattr(self, key, value)
            return
        self.state = state
        if fields.keys() <= _TASK_KEYS.ok:
            for key, value in fields.items():
                setattr(self, key, value)
        else:
            for key, value in fields.items():
                if allowed(key):
                    setattr(self, key, value)
        self.timestamp = timestamp

    def info(self, fields: Iterable[str] | None = None,
             extra: Iterable[str] | None = None) -> dict[str, Any]:
        """Non-empty fields, for display (``_info_fields`` unless told otherwise)."""
        names = list(self._info_fields if fields is None else fields) + list(extra or ())
        out = {}
        for name in names:
            value = getattr(self, name, None)
            if value is not None:
                out[name] = value
        return out

    def as_dict(self) -> dict[str, Any]:
        out = {}
        for name in self._fields:
            if name == "children":
                out[name] = [task.id for task in self.children]
            elif name == "root":
                out[name] = self.root_id
            elif name == "parent":
                out[name] = self.parent_id
            else:
                out[name] = getattr(self, name)
        return out

    def __reduce__(self) -> tuple:
        data = {name: getattr(self, name) for name in _TASK_DEFAULTS
                if name != "worker" and _slot_is_set(self, name)}
        data["worker"] = self.worker
        data["uuid"] = self.uuid
        data["children"] = sorted(self._children or ())
        extra = dict(self.__dict__)
        return _rebuild_task, (self.__class__, data, extra, self._first, self._last)

    def __repr__(self) -> str:
        return f"<Task: {self.name}({self.uuid}) {self.state} clock:{self.clock}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Task):
            return self.uuid == other.uuid
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        return hash(self.uuid)

    @property
    def id(self) -> str | None:
        return self.uuid

    @property
    def origin(self) -> str | None:
        return self.client if self.worker is None else self.worker.id

    @property
    def ready(self) -> bool:
        return self.state in READY_STATES

    @property
    def children(self) -> set[Task]:
        """Child tasks currently in the cluster state (looked up on each access)."""
        ids = self._children
        cluster = self.cluster_state
        if not ids or cluster is None:
            return set()
        get = cluster.tasks.get
        return {t for t in map(get, ids) if t is not None}

    @property
    def parent(self) -> Task | None:
        pid = self.parent_id
        cluster = self.cluster_state
        return cluster.tasks.get(pid) if pid and cluster is not None else None

    @property
    def root(self) -> Task | None:
        rid = self.root_id
        cluster = self.cluster_state
        return cluster.tasks.get(rid) if rid and cluster is not None else None

    def _clone(self, cluster_state: Any) -> Task:
        """A copy that later events do not change, for snapshots."""
        new = Task.__new__(self.__class__)
        for name in _TASK_COPIED:  # unset slots read as their defaults: no exceptions
            setattr(new, name, getattr(self, name))
        children = self._children
        new._children = set(children) if children else None
        new.cluster_state = cluster_state
        if self.__dict__:
            new.__dict__.update(self.__dict__)
        return new

    def _add_child(self, uuid: str) -> None:
        if self._children is None:
            self._children = {uuid}
        else:
            self._children.add(uuid)


_TASK_COPIED = ("uuid", "_first", "_last", *_TASK_DEFAULTS)


def _slot_is_set(obj: Any, name: str) -> bool:
    try:
        object.__getattribute__(obj, name)
    except AttributeError:
        return False
    return True


def _rebuild_task(cls: type, data: dict, extra: dict, first: Any = None, last: Any = None
                  ) -> Task:
    task = cls(**data)
    task.__dict__.update(extra)
    task._first, task._last = first, last
    return task


_TASK_KEYS = _KeyPolicy(Task, {"cluster_state", "children", "worker", "state", "event"})


# -- indexes ---------------------------------------------------------------------------------


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

    def items(self) -> list:  # type: ignore[override]
        return list(dict.items(self))

    def __iter__(self) -> Iterator:
        return iter(list(dict.keys(self)))

    @property
    def data(self) -> _Snapshotting:
        """Celery's ``LRUCache.data`` (the underlying mapping)."""
        return self

    def __reduce__(self) -> tuple:
        return self.__class__, (dict(dict.items(self)),)


class TaskMap(_Snapshotting):
    """``State.tasks``: uuid -> :class:`Task`."""


class WorkerMap(_Snapshotting):
    """``State.workers``: hostname -> :class:`Worker`."""


class TaskIndex:
    """``tasks_by_type`` / ``tasks_by_worker``: a key -> tasks index.

    Indexing (``index['proj.add']``) gives the set of tasks under that key;
    calling (``index('proj.add', limit=None, reverse=True)``) yields
    ``(uuid, task)`` newest first, as Celery's callable defaultdict does.
    Keys whose last task is gone are removed, so the index stays bounded.
    """

    def __init__(self, state: State) -> None:
        self._state = state
        self._ids: dict[str, set[str]] = {}

    def add(self, key: str, uuid: str) -> None:
        ids = self._ids.get(key)
        if ids is None:
            self._ids[key] = {uuid}
        else:
            ids.add(uuid)

    def discard(self, key: str | None, uuid: str) -> None:
        ids = self._ids.get(key)  # type: ignore[arg-type]
        if ids is not None:
            ids.discard(uuid)
            if not ids:
                del self._ids[key]  # type: ignore[arg-type]

    def clear(self) -> None:
        self._ids.clear()

    def __getitem__(self, key: str) -> set[Task]:
        get = self._state.tasks.get
        return {t for t in map(get, list(self._ids.get(key, ()))) if t is not None}

    def get(self, key: str, default: Any = None) -> set[Task] | Any:
        return self[key] if key in self._ids else default

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._ids))

    def __len__(self) -> int:
        return len(self._ids)

    def keys(self) -> list[str]:
        return list(self._ids)

    def items(self) -> list[tuple[str, set[Task]]]:
        return [(k, self[k]) for k in list(self._ids)]

    def ids(self, key: str) -> set[str]:
        return set(self._ids.get(key, ()))

    def __call__(self, key: str, limit: int | None = None, reverse: bool = True
                 ) -> Iterator[tuple[str, Task]]:
        return self._state._sorted_tasks(self[key], limit, reverse)

    def as_dict(self) -> dict[str, list[str]]:
        return {k: sorted(v) for k, v in self._ids.items()}


# -- State -----------------------------------------------------------------------------------


class State:
    """Cluster state rebuilt from events.

    ``State(callback=None, workers=None, tasks=None, taskheap=None,
    max_workers_in_memory=5000, max_tasks_in_memory=10000, on_node_join=None,
    on_node_leave=None, tasks_by_type=None, tasks_by_worker=None)``.
    Feed it with :meth:`event` (usually as a receiver's ``'*'`` handler).
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
        self.tasks_by_type = TaskIndex(self)
        self.tasks_by_worker = TaskIndex(self)
        self._tasks_to_resolve: OrderedDict[str, set[str]] = OrderedDict()
        self._order: deque[str] = deque()  # task uuids, first seen first
        self._ready: deque[str] = deque()  # uuids in the order they became ready
        #: Tasks dropped to stay within ``max_tasks_in_memory``, by reason.
        self.evicted = {"ready": 0, "unready": 0}
        #: uuids of tasks changed since :meth:`take_changes` (None: not tracked).
        self._dirty: set[str] | None = None
        #: Bumped whenever tasks are cleared, so snapshot takers start afresh.
        self._generation = 0
        for task in dict.values(self.tasks):
            task.cluster_state = self
        self.rebuild_taskheap()

    @property
    def callback(self) -> Callable | None:
        return self.event_callback

    # -- public API ----------------------------------------------------------------------

    def event(self, event: dict[str, Any]) -> Any:
        """Apply one event; returns ``((obj, created), subject)`` as Celery does."""
        with self._mutex:
            return self._event(event)

    def freeze_while(self, fun: Callable[..., Any], *args: Any, clear_after: bool = False,
                     **kwargs: Any) -> Any:
        """Run ``fun`` with ingest paused (the lock is re-entrant: ``fun`` may read freely)."""
        with self._mutex:
            try:
                return fun(*args, **kwargs)
            finally:
                if clear_after:
                    self._clear()

    def track_changes(self) -> None:
        """Start recording which tasks change (used by cameras; costs one set add per event)."""
        with self._mutex:
            if self._dirty is None:
                self._dirty = set()

    def take_changes(self) -> set[str]:
        """uuids of the tasks changed or dropped since the last call (hold the lock)."""
        changed = self._dirty or set()
        self._dirty = set()
        return changed

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

    def get_or_create_worker(self, hostname: str, **kwargs: Any) -> tuple[Worker, bool]:
        try:
            worker = self.workers[hostname]
            if kwargs:
                worker.update(kwargs)
            return worker, False
        except KeyError:
            worker = self.Worker(hostname, **kwargs)
            self._store_worker(hostname, worker)
            return worker, True

    def get_or_create_task(self, uuid: str) -> tuple[Task, bool]:
        try:
            return self.tasks[uuid], False
        except KeyError:
            task = self.Task(uuid, cluster_state=self)
            self._store_task(uuid, task)
            return task, True

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

    def rebuild_taskheap(self) -> None:
        """Rebuild the eviction and index bookkeeping from ``tasks``.

        There is no heap to rebuild: time order is computed when asked for
        (:meth:`tasks_by_time`), which keeps ingest O(1) per event.
        """
        tasks = dict.values(self.tasks)
        self._order = deque(t.uuid for t in tasks)
        self._ready = deque(t.uuid for t in tasks if t.state in READY_STATES)
        self.tasks_by_type.clear()
        self.tasks_by_worker.clear()
        for task in tasks:
            if task.name is not None:
                self.tasks_by_type.add(task.name, task.uuid)
            if task.worker is not None:
                self.tasks_by_worker.add(task.worker.hostname, task.uuid)

    def itertasks(self, limit: int | None = None) -> Iterator[tuple[str, Task]]:
        return islice(self.tasks.items(), 0, limit)

    def tasks_by_time(self, limit: int | None = None, reverse: bool = True
                      ) -> Iterator[tuple[str, Task]]:
        """``(uuid, task)`` by the logical time of their events, newest first.

        Newest first orders tasks by their latest event, oldest first by their
        earliest event, like Celery's heap walk.  ``limit`` caps the number of
        tasks returned.
        """
        return self._sorted_tasks(self.tasks.values(), limit, reverse)

    tasks_by_timestamp = tasks_by_time

    def _sorted_tasks(self, tasks: Iterable[Task], limit: int | None, reverse: bool
                      ) -> Iterator[tuple[str, Task]]:
        key = _last_key if reverse else _first_key
        tasks = [t for t in tasks if t._last is not None]
        if limit:
            chosen = (heapq.nlargest if reverse else heapq.nsmallest)(limit, tasks, key=key)
        else:
            chosen = sorted(tasks, key=key, reverse=reverse)
        return ((t.uuid, t) for t in chosen)

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

    def __repr__(self) -> str:
        return f"<State: events={self.event_count} tasks={len(self.tasks)}>"

    def __reduce__(self) -> tuple:
        return self.__class__, (
            self.event_callback, self.workers, self.tasks, None,
            self.max_workers_in_memory, self.max_tasks_in_memory,
            self.on_node_join, self.on_node_leave,
            self.tasks_by_type.as_dict(), self.tasks_by_worker.as_dict(),
        )

    # -- ingest --------------------------------------------------------------------------

    def _event(self, event: dict[str, Any]) -> Any:
        self.event_count += 1
        if self.event_callback:
            self.event_callback(self, event)
        type_ = event.get("type")
        if not isinstance(type_, str):
            return None
        group, _, subject = type_.partition("-")
        handler = self.handlers.get(group)
        if handler is not None:
            return handler(subject, event), subject
        if group == "task":
            result = self._task_event(subject, event)
        elif group == "worker":
            result = self._worker_event(subject, event)
        else:
            return None
        return None if result is None else (result, subject)

    def _store_worker(self, hostname: str, worker: Worker) -> None:
        workers = self.workers
        if len(workers) >= self.max_workers_in_memory:
            # Prefer forgetting a worker that is gone; else the first seen.
            victim = next((h for h, w in dict.items(workers) if not w.alive), None)
            if victim is None:
                victim = next(iter(dict.keys(workers)))
            dict.__delitem__(workers, victim)
        dict.__setitem__(workers, hostname, worker)

    def _worker_event(self, subject: str, event: dict[str, Any]) -> Any:
        hostname = event.get("hostname")
        timestamp = event.get("timestamp")
        local_received = event.get("local_received")
        if hostname is None or timestamp is None or local_received is None:
            return None
        worker = dict.get(self.workers, hostname)
        created = worker is None
        if created:
            worker = self.Worker(hostname)
            if subject == "offline":
                created = False  # a throw-away object: an unknown worker left
            else:
                self._store_worker(hostname, worker)
        worker.event(subject, timestamp, local_received, event)
        if self.on_node_join and (created or subject == "online"):
            self.on_node_join(worker)
        if subject == "offline" and self.on_node_leave:
            self.on_node_leave(worker)
            dict.pop(self.workers, hostname, None)
        return worker, created

    def _store_task(self, uuid: str, task: Task) -> None:
        dict.__setitem__(self.tasks, uuid, task)
        self._order.append(uuid)

    def _task_event(self, subject: str, event: dict[str, Any]) -> Any:
        get = event.get
        uuid = get("uuid")
        if uuid is None:
            return None
        hostname = get("hostname")
        timestamp = get("timestamp")
        local_received = get("local_received")
        tasks = self.tasks
        task = dict.get(tasks, uuid)
        created = task is None
        if created:
            task = Task(uuid, cluster_state=self)
            dict.__setitem__(tasks, uuid, task)
            self._order.append(uuid)
        old_name = task.name
        old_worker = task.worker
        was_ready = task.state in READY_STATES

        if subject == "sent":
            task.client = hostname
            origin = hostname
        else:
            worker = dict.get(self.workers, hostname)
            if worker is None:
                worker = self.Worker(hostname)
                self._store_worker(hostname, worker)
            task.worker = worker
            if local_received:
                # A task event proves its worker alive: record *our* receive
                # time (Celery swaps the arguments and records the sender's).
                worker.event(None, timestamp, local_received)
            origin = worker.id

        key = (get("clock") or 0, origin or "", timestamp or 0.0)
        if created:
            task._first = task._last = key
        else:
            if task._last is None or key > task._last:
                task._last = key
            if task._first is None or key < task._first:
                task._first = key

        if subject == "received":
            self.task_count += 1
        dirty = self._dirty
        if dirty is not None:
            dirty.add(uuid)

        task.event(subject, timestamp, local_received, event)

        name = task.name
        if name != old_name and name is not None:
            if old_name is not None:
                self.tasks_by_type.discard(old_name, uuid)
            self.tasks_by_type.add(name, uuid)
        worker = task.worker
        if worker is not old_worker and worker is not None:
            if old_worker is not None:
                self.tasks_by_worker.discard(old_worker.hostname, uuid)
            self.tasks_by_worker.add(worker.hostname, uuid)

        parent_id = task.parent_id
        if parent_id:
            parent = dict.get(tasks, parent_id)
            if parent is not None:
                parent._add_child(uuid)
            else:
                self._remember_orphan(parent_id, uuid)
        if created and self._tasks_to_resolve:
            orphans = self._tasks_to_resolve.pop(uuid, None)
            if orphans:
                for child in orphans:
                    task._add_child(child)

        if not was_ready and task.state in READY_STATES:
            self._ready.append(uuid)
        if len(tasks) > self.max_tasks_in_memory:
            self._evict(task)
        return task, created

    def _remember_orphan(self, parent_id: str, uuid: str) -> None:
        pending = self._tasks_to_resolve
        children = pending.get(parent_id)
        if children is None:
            pending[parent_id] = {uuid}
            if len(pending) > self.max_tasks_in_memory:
                pending.popitem(last=False)
        else:
            children.add(uuid)

    def _evict(self, keep: Task) -> None:
        """Drop tasks until within ``max_tasks_in_memory``: finished ones first."""
        tasks = self.tasks
        limit = self.max_tasks_in_memory
        ready_q, order_q = self._ready, self._order
        while len(tasks) > limit:
            victim = None
            while ready_q:
                uuid = ready_q.popleft()
                task = dict.get(tasks, uuid)
                if task is not None and task is not keep and task.state in READY_STATES:
                    victim = task
                    self.evicted["ready"] += 1
                    break
            if victim is None:
                while order_q:
                    uuid = order_q.popleft()
                    task = dict.get(tasks, uuid)
                    if task is not None and task is not keep:
                        victim = task
                        self.evicted["unready"] += 1
                        break
                    if task is keep:
                        order_q.append(uuid)
                        if len(order_q) == 1:
                            break
            if victim is None:
                return
            self._forget(victim)
        # The queues hold uuids of tasks already gone; keep them proportional.
        if len(order_q) > 2 * limit + 64:
            self._order = deque(u for u in order_q if u in tasks)
        if len(ready_q) > 2 * limit + 64:
            self._ready = deque(u for u in ready_q
                                if (t := dict.get(tasks, u)) is not None
                                and t.state in READY_STATES)

    def _forget(self, task: Task) -> None:
        uuid = task.uuid
        dict.pop(self.tasks, uuid, None)
        if self._dirty is not None:
            self._dirty.add(uuid)
        if task.name is not None:
            self.tasks_by_type.discard(task.name, uuid)
        if task.worker is not None:
            self.tasks_by_worker.discard(task.worker.hostname, uuid)


_last_key = attrgetter("_last")
_first_key = attrgetter("_first")
