"""A task as a monitor sees it through its events (``celery.events.state.Task``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ...protocol import states
from ...protocol.events import (
    EVENT_META_FIELDS,
    RECEIVED_MERGE_FIELDS,
    TASK_DICT_FIELDS,
    TASK_EVENT_FIELDS,
    TASK_EVENT_TO_STATE,
    TASK_INFO_FIELDS,
    TASK_TIME_FIELDS,
)
from .keys import KeyPolicy

if TYPE_CHECKING:
    from .cluster import State

__all__ = ["Task"]

READY_STATES = states.READY_STATES
RETRY = states.RETRY
_RANK = states.PRECEDENCE_RANK
_UNKNOWN_RANK = states.UNKNOWN_RANK
_META = frozenset(EVENT_META_FIELDS)

#: What an attribute reads as until an event sets it (Celery's defaults).
#: Every field an event of the table carries has a slot, so the common
#: fields take no per-task dict.
TASK_DEFAULTS: dict[str, Any] = dict.fromkeys(
    f for f in (*TASK_EVENT_FIELDS, *TASK_TIME_FIELDS, *EVENT_META_FIELDS,
                "worker", "client", "state") if f != "uuid")
TASK_DEFAULTS["state"] = states.PENDING
TASK_DEFAULTS["clock"] = 0

#: Slots that events never set.  ``first_key``/``last_key`` are the sort keys
#: ``(clock, origin, timestamp, uuid)`` of the task's earliest and latest
#: events: time order sorts on them (see :mod:`.timeline`).
_INTERNAL = ("uuid", "cluster_state", "_children", "first_key", "last_key")
_INTERNAL_DEFAULTS = {"_children": None, "first_key": None, "last_key": None,
                      "cluster_state": None}


class Task:
    """A task as seen through its events.

    Fields not set by any event read as Celery's defaults (``None``;
    ``state`` ``PENDING``; ``clock`` 0) without taking memory.
    """

    __slots__ = (*_INTERNAL, *TASK_DEFAULTS, "__dict__", "__weakref__")

    _fields = TASK_DICT_FIELDS
    _defaults = TASK_DEFAULTS
    _info_fields = TASK_INFO_FIELDS
    #: Keys events may set (besides unknown custom keys, which go to ``__dict__``).
    _settable = (frozenset(TASK_DEFAULTS) | {"uuid"}) - {"worker", "state"}
    #: Names events may never set (besides methods, properties and private names).
    _protected = frozenset({"cluster_state", "children", "worker", "state", "event"})
    _keys: KeyPolicy
    #: Celery's merge rules: what a late event of that state may contribute.
    merge_rules = {states.RECEIVED: RECEIVED_MERGE_FIELDS}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._keys = KeyPolicy(cls, cls._protected)

    def __init__(self, uuid: str | None = None, cluster_state: State | None = None,
                 children: Iterable[Any] | None = None, **kwargs: Any) -> None:
        self.uuid = uuid
        self.cluster_state = cluster_state
        self._children = None
        self.first_key: tuple | None = None
        self.last_key: tuple | None = None
        if children:
            self._children = {getattr(c, "uuid", c) for c in children}
        kwargs.pop("root", None)
        kwargs.pop("parent", None)
        for key, value in kwargs.items():
            setattr(self, key, value)

    def __getattr__(self, name: str) -> Any:
        # Only reached for a slot that no event has set yet.
        try:
            return TASK_DEFAULTS[name]
        except KeyError:
            if name in _INTERNAL_DEFAULTS:
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
        keys = self._keys
        allowed = keys.allowed
        if (state != RETRY and current != RETRY
                and _RANK.get(state, _UNKNOWN_RANK) > _RANK.get(current, _UNKNOWN_RANK)):
            # A late event: take its data, keep the newer event's metadata.
            rule = self.merge_rules.get(state)
            ok = keys.ok
            for key, value in fields.items():
                if (key not in _META and (rule is None or key in rule)
                        and (key in ok or allowed(key))):
                    setattr(self, key, value)
            return
        self.state = state
        if fields.keys() <= keys.ok:
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
        data = {name: getattr(self, name) for name in TASK_DEFAULTS
                if name != "worker" and _slot_is_set(self, name)}
        data["worker"] = self.worker
        data["uuid"] = self.uuid
        data["children"] = sorted(self._children or ())
        extra = dict(self.__dict__)
        return _rebuild_task, (self.__class__, data, extra, self.first_key,
                              self.last_key)

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

    def copy(self, cluster_state: Any) -> Task:
        """A copy that later events do not change, resolving links through ``cluster_state``."""
        new = Task.__new__(self.__class__)
        for name in _COPIED:  # unset slots read as their defaults: no exceptions
            setattr(new, name, getattr(self, name))
        children = self._children
        new._children = set(children) if children else None
        new.cluster_state = cluster_state
        if self.__dict__:
            new.__dict__.update(self.__dict__)
        return new

    def add_child(self, uuid: str) -> None:
        if self._children is None:
            self._children = {uuid}
        else:
            self._children.add(uuid)


Task._keys = KeyPolicy(Task, Task._protected)

_COPIED = ("uuid", "first_key", "last_key", *TASK_DEFAULTS)


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
    task.first_key, task.last_key = first, last
    return task
