"""A task as a monitor sees it through its events (``celery.events.state.Task``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import attrgetter
from types import MemberDescriptorType
from typing import TYPE_CHECKING, Any

from ...protocol import states
from ...protocol.events import (
    EVENT_META_FIELDS,
    EVENT_TYPES,
    RECEIVED_MERGE_FIELDS,
    TASK_DICT_FIELDS,
    TASK_EVENT_FIELDS,
    TASK_EVENT_TO_STATE,
    TASK_EVENT_TYPES,
    TASK_INFO_FIELDS,
    TASK_TIME_FIELDS,
)
from .keys import KeyPolicy, add_extra_fields, extra_fields, slots_setter

if TYPE_CHECKING:
    from .cluster import State

__all__ = ["FIRST_KEY", "LAST_KEY", "Task"]

READY_STATES = states.READY_STATES
RETRY = states.RETRY
_RANK = states.PRECEDENCE_RANK
_UNKNOWN_RANK = states.UNKNOWN_RANK
_META = frozenset(EVENT_META_FIELDS)

#: What an attribute reads as until an event sets it (Celery's defaults).
#: Every field of the table's common events has a slot (``SLOT_FIELDS``),
#: so those fields take no per-task dict.
TASK_DEFAULTS: dict[str, Any] = dict.fromkeys(
    f for f in (*TASK_EVENT_FIELDS, *TASK_TIME_FIELDS, *EVENT_META_FIELDS,
                "worker", "client", "state") if f != "uuid")
TASK_DEFAULTS["state"] = states.PENDING
TASK_DEFAULTS["clock"] = 0

#: Fields of states most tasks never reach (rejected, revoked, retried): their
#: time fields and the fields only their events carry.  They are not slots: a
#: class attribute gives their default, and a task that gets one keeps it in
#: its ``__dict__``.  Every other task saves a slot (8 bytes) for each.
_RARE_SUBJECTS = ("rejected", "revoked", "retried")
_COMMON_FIELDS = {f for t in TASK_EVENT_TYPES if EVENT_TYPES[t].subject not in _RARE_SUBJECTS
                  for f in EVENT_TYPES[t].fields}
RARE_FIELDS = frozenset(
    (*_RARE_SUBJECTS, *(f for t in _RARE_SUBJECTS for f in EVENT_TYPES[f"task-{t}"].fields
                        if f not in _COMMON_FIELDS)))
#: Fields most tasks leave at ``None``: the ``eta`` and ``expires`` of a
#: postponed or expiring task, a failure's ``exception``, ``traceback`` and
#: time.  Class defaults as well, but events often carry them as ``None``
#: (every ``task-sent`` and ``task-received`` has ``eta`` and ``expires``):
#: an event's ``None`` leaves a task that has no value as it is (see
#: :func:`~.keys.slots_setter`), so a task keeps a ``__dict__`` for them only
#: once one holds a value.  40 bytes less for each task that never fails.
SPARSE_FIELDS = frozenset({"eta", "expires", "exception", "traceback", "failed"})
#: The fields with a slot, in slot order.
SLOT_FIELDS = tuple(f for f in TASK_DEFAULTS if f not in RARE_FIELDS | SPARSE_FIELDS)

#: Slots that events never set.  ``last_key`` is the time key ``(clock,
#: timestamp)`` of the task's latest event: newest-first time order keeps it
#: (see :mod:`.timeline`).  The key of its earliest event is kept as its two
#: parts (``first_key`` puts them together), a tuple less: oldest first is a
#: sort when asked for (see ``State.tasks_by_time``), so no structure holds
#: that key.  Tasks whose keys are equal are ordered by id (``FIRST_KEY``,
#: ``LAST_KEY``).  Neither the id nor the sender is part of a key: the key's
#: tuple is 16 bytes smaller, the first key a slot less: 31 bytes per task in
#: all (RSS over 100k tasks of ``bench/state_read.py``'s stream, 1,061 -> 1,030).
_INTERNAL = ("uuid", "cluster_state", "_children", "last_key", "_first_clock",
             "_first_time")
#: The protocol's names for a task's fields: events made only of these (and
#: allowed) are applied by a generated setter (:meth:`~.keys.KeyPolicy.setter`).
_NAMED = frozenset(TASK_DEFAULTS) | {"uuid"}


def put_extra(task: Any, key: str, value: Any) -> None:
    """Set a field that has no slot: in a new plain dict, made the task's ``__dict__``.

    Why not ``setattr``: on CPython 3.11 the instance dicts of a class share
    one key table, and every new instance gets a value array as long as
    that table.  A name stored with ``setattr`` (or into the dict ``vars``
    gives) joins the table for good: one event with 25 custom keys made
    every later task about 220 bytes larger, and the fields of failed and
    retried tasks 32 bytes.  A dict made here is a plain one and teaches
    the table nothing.  Its copy is small: few tasks have such fields, and
    those have few.
    """
    task.__dict__ = {**task.__dict__, key: value}


#: Every slot holds a value from the start (the defaults above), so reads
#: never need a Python ``__getattr__`` fallback and a task's fields come out
#: in one C call (``_ALL_VALUES``): ``as_dict()``, pickles and copies cost a
#: fraction of a per-field fallback.
_set_fields = slots_setter(SLOT_FIELDS)
#: ``FIRST_KEY(task)``: its ``first_key`` and then its id, in one C call: what
#: oldest-first order sorts by.
FIRST_KEY = attrgetter("_first_clock", "_first_time", "uuid")
#: ``LAST_KEY(task)``: its ``last_key`` and then its id: what newest-first order sorts by.
LAST_KEY = attrgetter("last_key", "uuid")
_DEFAULT_VALUES = tuple(TASK_DEFAULTS[f] for f in SLOT_FIELDS)


class Task:
    """A task as seen through its events.

    Fields not set by any event read as Celery's defaults (``None``;
    ``state`` ``PENDING``; ``clock`` 0).  Each common field is a slot, set
    to its default when the task is made: it costs no more memory than an
    unset slot.  The fields of rare states (``RARE_FIELDS``) and those most
    tasks leave at ``None`` (``SPARSE_FIELDS``) read as a class attribute
    until set.
    """

    __slots__ = (*_INTERNAL, *SLOT_FIELDS, "__dict__", "__weakref__")

    _fields = TASK_DICT_FIELDS
    _defaults = TASK_DEFAULTS
    _info_fields = TASK_INFO_FIELDS
    #: Keys events may set (besides unknown custom keys, which go to ``__dict__``).
    _settable = (frozenset(TASK_DEFAULTS) | {"uuid"}) - {"worker", "state"}
    #: Names events may never set (besides methods, properties and private names).
    _protected = frozenset({"cluster_state", "children", "worker", "state", "event"})
    _keys: KeyPolicy
    #: The fields events may set that have a slot in this class; the others an
    #: event sets (rare, sparse and custom keys) go to the task's ``__dict__``
    #: through :func:`put_extra`.
    _slotted: frozenset[str]
    #: Celery's merge rules: what a late event of that state may contribute.
    merge_rules = {states.RECEIVED: RECEIVED_MERGE_FIELDS}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _configure(cls)

    def __init__(self, uuid: str | None = None, cluster_state: State | None = None,
                 children: Iterable[Any] | None = None, **kwargs: Any) -> None:
        _set_fields(self, _DEFAULT_VALUES)
        self.uuid = uuid
        self.cluster_state = cluster_state
        self._children = None
        self.last_key: tuple | None = None
        self._first_clock = self._first_time = None
        if children:
            self._children = {getattr(c, "uuid", c) for c in children}
        kwargs.pop("root", None)
        kwargs.pop("parent", None)
        for key, value in kwargs.items():
            setattr(self, key, value)

    def event(self, type_: str, timestamp: float | None = None,
              local_received: float | None = None, fields: dict[str, Any] | None = None,
              setattr: Callable = setattr) -> None:
        """Merge one event of subject ``type_`` (``received``, ``succeeded`` ...)."""
        fields = fields or {}
        state = TASK_EVENT_TO_STATE.get(type_)
        if state is not None:
            # e.g. task.started = <ts>, even if late
            if type_ in self._slotted:
                setattr(self, type_, timestamp)
            else:
                put_extra(self, type_, timestamp)
        else:
            state = type_.upper()  # custom state, e.g. PROGRESS
        current = self.state
        keys = self._keys
        # A late event: take its data (what its state's merge rule names, all of it
        # without one), keep the newer event's metadata.
        late = (state != RETRY and current != RETRY
                and _RANK.get(state, _UNKNOWN_RANK) > _RANK.get(current, _UNKNOWN_RANK))
        shape = tuple(fields)
        if late:
            rule = self.merge_rules.get(state)
            setter = keys.late_setter(rule, shape)
            if setter is not None:
                setter(self, tuple(fields.values()))
                return
        else:
            self.state = state
            setter = keys.setters.get(shape) or keys.setter(shape)
            if setter is not None:
                setter(self, tuple(fields.values()))
                self.timestamp = timestamp
                return
            rule = None
        # key by key, with a generated setter's outcome (see .keys.slots_setter): only
        # keys events may set, and a sparse field's None only over a value
        ok, sparse, allowed, slotted = keys.ok, keys.sparse, keys.allowed, self._slotted
        for key, value in fields.items():
            if ((not late or (key not in _META and (rule is None or key in rule)))
                    and (key in ok or allowed(key))
                    and (value is not None or key not in sparse
                         or getattr(self, key) is not None)):
                if key in slotted:
                    setattr(self, key, value)
                else:
                    put_extra(self, key, value)
        if not late:
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
        if self._fields is not TASK_DICT_FIELDS:  # a subclass's own list of fields
            return {name: self._dict_value(name) for name in self._fields}
        return _as_dict(self)

    def _dict_value(self, name: str) -> Any:
        if name == "children":
            return [task.id for task in self.children]
        return getattr(self, _DICT_SOURCES.get(name, name))

    def __reduce__(self) -> tuple:
        # A tuple of every field in slot order (no names: small and fast to
        # pickle); loadable by the same version of Tidings.
        children = self._children
        return _rebuild_task, (self.__class__, _ALL_VALUES(self),
                               sorted(children) if children else None,
                               self.first_key, self.last_key, extra_fields(self) or None)

    def __repr__(self) -> str:
        return f"<Task: {self.name}({self.uuid}) {self.state} clock:{self.clock}>"

    @property
    def first_key(self) -> tuple | None:
        """The time key ``(clock, timestamp)`` of the task's earliest event."""
        clock = self._first_clock
        if clock is None:
            return None
        return clock, self._first_time

    def place_in_time(self, key: tuple) -> bool:
        """Widen the task's span of events to include ``key`` (an event's time key,
        ``(clock, timestamp)``); whether ``key`` is now its latest."""
        clock, first = self._first_clock, key[0]
        if clock is None or first < clock or (first == clock and key[1] < self._first_time):
            self._first_clock, self._first_time = key
        last = self.last_key
        if last is None or key > last:
            self.last_key = key
            return True
        return False

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
        _set_copied(new, _COPIED_VALUES(self))  # every slot holds a value: no exceptions
        children = self._children
        new._children = set(children) if children else None
        new.cluster_state = cluster_state
        add_extra_fields(new, extra_fields(self))
        return new

    def add_child(self, uuid: str) -> None:
        if self._children is None:
            self._children = {uuid}
        else:
            self._children.add(uuid)


def _configure(cls: type[Task]) -> None:
    """``cls._slotted`` (the names events may set that ``cls`` keeps in slots: a
    subclass may add some) and ``cls._keys``, its key policy."""
    cls._slotted = frozenset(name for name in cls._settable
                             if isinstance(getattr(cls, name, None), MemberDescriptorType))
    cls._keys = KeyPolicy(cls, cls._protected, _NAMED, SPARSE_FIELDS - cls._slotted,
                          put_extra, unmerged=_META)


_configure(Task)
for _name in sorted(RARE_FIELDS | SPARSE_FIELDS):
    setattr(Task, _name, TASK_DEFAULTS[_name])

_COPIED = ("uuid", "last_key", "_first_clock", "_first_time", *SLOT_FIELDS)
#: A copy reads them in one C call and sets them in one generated assignment,
#: instead of a loop of ``getattr``/``setattr``: copying 100k tasks went from
#: 640-650 to 500-550 ms (three runs each).
_COPIED_VALUES = attrgetter(*_COPIED)
_set_copied = slots_setter(_COPIED)
#: What ``as_dict()`` reads for each of its keys (``root`` is the root's id ...).
_DICT_SOURCES = {"root": "root_id", "parent": "parent_id"}


def _dict_builder(fields: tuple[str, ...]) -> Callable[[Task], dict[str, Any]]:
    """``build(task)``: the task's ``as_dict()``, one dict display of ``fields`` in order.

    Generated (as :func:`~.keys.slots_setter`) because one display, its keys
    constant and its values slot reads, costs less than a tuple of the
    values zipped into a dict (about 12 % over 100k tasks; the fresh
    ``children`` list each dict needs keeps most of the cost).  The names
    are the protocol table's identifiers.
    """
    assert all(name.isidentifier() for name in fields)
    values = []
    for name in fields:
        if name == "children":
            values.append("'children': [c.id for c in task.children] if task._children else []")
        else:
            values.append(f"{name!r}: task.{_DICT_SOURCES.get(name, name)}")
    namespace: dict[str, Any] = {}
    exec(f"def as_dict(task):\n    return {{{', '.join(values)}}}", namespace)
    return namespace["as_dict"]


_as_dict = _dict_builder(TASK_DICT_FIELDS)
#: Every slot a pickle keeps, in this order (see ``Task.__reduce__``; the rare
#: fields a task has are in its ``__dict__``).
_PICKLED = ("uuid", *SLOT_FIELDS)
_ALL_VALUES = attrgetter(*_PICKLED)
_set_pickled = slots_setter(_PICKLED)


def _rebuild_task(cls: type, values: tuple, children: list | None, first: Any, last: Any,
                  extra: dict | None) -> Task:
    task = cls(values[0])  # a subclass's __init__ runs, as it did when the task was made
    _set_pickled(task, values)
    task._children = set(children) if children else None
    task.last_key = last
    if first is not None:
        task._first_clock, task._first_time = first
    add_extra_fields(task, extra)
    return task
