"""The event table: every event type, its group, its fields and its task state.

This module is the single place that knows what an event looks like on the
wire.  The dispatcher builds envelopes with it, the receiver validates with
it, ``State`` maps types to task states with it, and the dumper and the
monitors use it to label and colour events.  It does no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any

from . import states

#: Envelope keys every event carries, in Celery 5.7's wire order.  The
#: type-specific fields go between ``clock`` and ``timestamp``.
ENVELOPE_HEAD = ("hostname", "utcoffset", "pid", "clock")
ENVELOPE_TAIL = ("timestamp", "type")
ENVELOPE_FIELDS = ENVELOPE_HEAD + ENVELOPE_TAIL

#: Fields shared by worker-online/heartbeat/offline (Celery's Heart).
WORKER_FIELDS = ("freq", "active", "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys")

#: Receiver-side clock skew applied to ``task-sent``: clients are not assumed
#: to share the cluster's Lamport clock (Celery's ``CLIENT_CLOCK_SKEW``).
CLIENT_CLOCK_SKEW = -1

#: Heartbeat constants a monitor must share with Celery to agree on liveness.
HEARTBEAT_INTERVAL = 2.0
HEARTBEAT_EXPIRE_WINDOW = 200  # percent of freq
HEARTBEAT_DRIFT_MAX = 16  # seconds
REMOTE_HEARTBEAT_FREQ = 5

#: Dispatcher defaults (Celery 5.7): events are transient messages.
BUFFER_LIMIT = 24
DELIVERY_MODE = 1
#: ... unless a worker is asked to keep them across a broker restart (ours).
PERSISTENT = 2

#: Event groups whose names other layers need: task events are batched and
#: switched by ``enable_events``/``disable_events``; worker events are not.
TASK_GROUP = "task"
WORKER_GROUP = "worker"
#: The event a client publishes for each task message (``task_send_sent_event``).
TASK_SENT = "task-sent"

#: Repr truncation limit for args/kwargs/result strings.
REPR_MAXLEN = 1024


def group_from(type_: str) -> str:
    """``task-sent`` -> ``task``; a type without a dash is its own group."""
    return type_.partition("-")[0]


def routing_key_for(type_: str) -> str:
    """Routing key of a single event: the type with dashes turned into dots."""
    return type_.replace("-", ".")


def multi_routing_key(group: str) -> str:
    """Routing key of a batch of events of one group."""
    return f"{group}.multi"


@dataclass(frozen=True, slots=True)
class EventType:
    """One event type: what it is called, who sends it and what it carries."""

    type: str
    fields: tuple[str, ...]
    state: str | None = None
    description: str = ""

    @property
    def group(self) -> str:
        return group_from(self.type)

    @property
    def subject(self) -> str:
        return self.type.partition("-")[2]

    @property
    def routing_key(self) -> str:
        return routing_key_for(self.type)


_TASK_COMMON = ("uuid",)
EVENT_TYPES: dict[str, EventType] = {
    e.type: e
    for e in (
        EventType(
            "task-sent",
            (*_TASK_COMMON, "root_id", "parent_id", "name", "args", "kwargs", "retries",
             "eta", "expires", "queue", "exchange", "routing_key"),
            states.PENDING,
            "a client published the task message",
        ),
        EventType(
            "task-received",
            (*_TASK_COMMON, "name", "args", "kwargs", "root_id", "parent_id", "retries",
             "eta", "expires"),
            states.RECEIVED,
            "a worker accepted the task message",
        ),
        EventType("task-started", _TASK_COMMON, states.STARTED, "the task began executing"),
        EventType(
            "task-succeeded", (*_TASK_COMMON, "result", "runtime"), states.SUCCESS,
            "the task returned",
        ),
        EventType(
            "task-failed", (*_TASK_COMMON, "exception", "traceback"), states.FAILURE,
            "the task raised",
        ),
        EventType(
            "task-retried", (*_TASK_COMMON, "exception", "traceback"), states.RETRY,
            "the task will run again",
        ),
        EventType(
            "task-rejected", (*_TASK_COMMON, "requeue"), states.REJECTED,
            "the worker rejected the message",
        ),
        EventType(
            "task-revoked", (*_TASK_COMMON, "terminated", "signum", "expired"), states.REVOKED,
            "the task was revoked, terminated or expired",
        ),
        EventType("worker-online", WORKER_FIELDS, None, "a worker started"),
        EventType("worker-heartbeat", WORKER_FIELDS, None, "a worker is alive"),
        EventType("worker-offline", WORKER_FIELDS, None, "a worker stopped"),
    )
}

#: Task subject (``received``, ``started`` ...) -> state it puts the task in.
TASK_EVENT_TO_STATE: dict[str, str] = {
    e.subject: e.state for e in EVENT_TYPES.values() if e.group == "task" and e.state
}
TASK_EVENT_TYPES = tuple(t for t, e in EVENT_TYPES.items() if e.group == TASK_GROUP)
WORKER_EVENT_TYPES = tuple(t for t, e in EVENT_TYPES.items() if e.group == WORKER_GROUP)

#: ``args``/``kwargs`` texts are shared only when empty (``()``, ``{}``): any
#: other is its task's own.
TASK_SHARED_ARGUMENTS = frozenset({"args", "kwargs"})
EMPTY_ARGUMENTS = ("()", "[]", "{}", "")
#: Task fields whose values most tasks share with others (a task name, a
#: queue, a parent's id): a State keeps one copy of each value, not one per
#: task.
TASK_SHARED_FIELDS = frozenset({"name", "queue", "exchange", "routing_key",
                                "parent_id"}) | TASK_SHARED_ARGUMENTS
#: Longer values are kept as they come (they rarely repeat).
SHARED_TEXT_MAX = 256

#: The key a receiver adds to every event it hands on: when it was received.
LOCAL_RECEIVED = "local_received"
#: Keys a receiver adds to every event it hands on.
RECEIVER_FIELDS = (LOCAL_RECEIVED,)

#: Keys that describe an event rather than its subject: a late event must
#: not overwrite the newer event's values of these.
EVENT_META_FIELDS = (*ENVELOPE_FIELDS, *RECEIVER_FIELDS)

#: Task attributes that record when each task event happened, in lifecycle
#: order (``task.started`` is the timestamp of ``task-started``).  The SQL
#: camera's columns, the monitors' time columns and State's defaults.
TASK_TIME_FIELDS = tuple(EVENT_TYPES[t].subject for t in TASK_EVENT_TYPES)

#: Every field some task event carries (besides the envelope), first seen first.
TASK_EVENT_FIELDS = tuple(dict.fromkeys(
    f for t in TASK_EVENT_TYPES for f in EVENT_TYPES[t].fields))

#: What a late ``task-received`` may still contribute to a task that has
#: moved on (Celery's merge rule): the task-received fields but its id.
RECEIVED_MERGE_FIELDS = frozenset(EVENT_TYPES["task-received"].fields) - {"uuid"}

#: A task as Celery's consumer API shows it (``Task.as_dict()``, Flower's
#: task API), in Celery's order; ``root``, ``parent`` and ``children`` are
#: task ids.
TASK_DICT_FIELDS = (
    "uuid", "name", "state", "received", "sent", "started", "rejected", "succeeded",
    "failed", "retried", "revoked", "args", "kwargs", "eta", "expires", "retries", "worker",
    "result", "exception", "timestamp", "runtime", "traceback", "exchange", "routing_key",
    "clock", "client", "root", "root_id", "parent", "parent_id", "children",
)

#: The fields ``Task.info()`` shows by default (Celery's ``_info_fields``).
TASK_INFO_FIELDS = ("args", "kwargs", "retries", "result", "eta", "runtime", "expires",
                    "exception", "exchange", "routing_key", "root_id", "parent_id")

#: Attributes of a worker as a monitor keeps it (Celery's ``Worker._fields``
#: order): identity from the envelope, the heartbeat fields, and the local
#: receive times of its last heartbeats.
WORKER_STATE_FIELDS = ("hostname", "pid", WORKER_FIELDS[0], "heartbeats", "clock",
                       *WORKER_FIELDS[1:])

#: Human names used by the text dumper (Celery's evdump wording).
HUMAN_TYPES = {
    "worker-online": "started",
    "worker-offline": "shutdown",
    "worker-heartbeat": "heartbeat",
}


def humanize_type(type_: str) -> str:
    """The label the text dump prints for an event type."""
    return HUMAN_TYPES.get(type_) or type_.lower().replace("-", " ")


_offset_cache = [0.0, -1e9]  # value, monotonic time it was computed


def utcoffset() -> float:
    """Local offset in hours *west* of UTC, as Celery 5.7 sends it (UTC+8 -> -8.0).

    Recomputed at most every 10 seconds: it is read for every event sent.
    """
    now = time.monotonic()
    if now - _offset_cache[1] < 10.0:
        return _offset_cache[0]
    if time.daylight and time.localtime().tm_isdst > 0:
        value = time.altzone / 3600
    else:
        value = time.timezone / 3600
    _offset_cache[:] = [value, now]
    return value


def build_event(
    type_: str,
    fields: dict[str, Any],
    *,
    hostname: str,
    utcoffset: float,
    pid: int,
    clock: int | None,
    timestamp: float | None = None,
) -> dict[str, Any]:
    """Assemble an event with Celery's envelope and key order.

    A ``timestamp`` in ``fields`` is kept where the caller put it, as Celery
    does; otherwise it is stamped now and placed before ``type``.
    """
    event = {"hostname": hostname, "utcoffset": utcoffset, "pid": pid, "clock": clock}
    event.update(fields)
    if "timestamp" not in event:
        event["timestamp"] = time.time() if timestamp is None else timestamp
    event.pop("type", None)
    event["type"] = type_
    return event


# -- validation -----------------------------------------------------------------------------

class InvalidEvent(ValueError):
    """An event that cannot be applied; ``cause`` names the counter it goes to."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(detail)
        self.cause = cause


_NUMBER = (int, float)
_STR = (str,)
_INT = (int,)
_NONE = type(None)


#: Fields whose type matters to whoever reads them (State does arithmetic on
#: numbers and keys maps by strings): ``field: (types, null allowed, what it
#: must be)``.  A present field of the wrong type makes the event invalid
#: (``bool`` is no number here).  Fields not listed are carried as they are.
FIELD_CHECKS: dict[str, tuple[tuple[type, ...], bool, str]] = {
    "hostname": (_STR, False, "a string"),
    "type": (_STR, False, "a string"),
    "timestamp": (_NUMBER, False, "a number"),
    "utcoffset": (_NUMBER, True, "a number"),
    "pid": (_INT, True, "an integer"),
    "uuid": (_STR, False, "a string"),
    "name": (_STR, True, "a string"),
    "root_id": (_STR, True, "a string"),
    "parent_id": (_STR, True, "a string"),
    "retries": (_INT, True, "an integer"),
    "runtime": (_NUMBER, True, "a number"),
    "freq": (_NUMBER, True, "a number"),
    "active": (_INT, True, "an integer"),
    "processed": (_INT, True, "an integer"),
    "loadavg": ((list, tuple), True, "a list"),
}

#: The exact classes each checked field may hold: one set lookup per field
#: on the hot path (JSON gives exact classes); any other class, a subclass
#: say, is asked :func:`_has_type`.
_EXACT: dict[str, frozenset[type]] = {
    key: frozenset(types) | ({_NONE} if nullable else frozenset())
    for key, (types, nullable, _) in FIELD_CHECKS.items()}


def _has_type(value: Any, types: tuple[type, ...], nullable: bool) -> bool:
    if value is None:
        return nullable
    return isinstance(value, types) and not isinstance(value, bool)


#: Key layouts (an event's keys, in their order) whose checked fields are known:
#: a getter of their values, the tuples of value classes already found valid,
#: and whether the layout has a ``uuid``.  Events of one type from one sender
#: share a layout, so a valid event costs a few C calls instead of a check per
#: field (see :func:`validate_event`).
CHECKED_LAYOUTS_MAX = 1024
#: Class tuples kept per layout (the set starts over when full).
VALID_CLASSES_MAX = 64


@lru_cache(maxsize=CHECKED_LAYOUTS_MAX)
def _layout_checks(layout: tuple[Any, ...]
                   ) -> tuple[Callable[[dict], tuple], set[tuple], bool] | None:
    """What to look at in events with the keys ``layout``; ``None`` for layouts this
    cache does not take (a key that is not text, no ``type``)."""
    if "type" not in layout or any(key.__class__ is not str for key in layout):
        return None
    checked = [key for key in layout if key in _EXACT]  # "type" among them
    getter = itemgetter(*checked) if len(checked) > 1 else (lambda e, k=checked[0]: (e[k],))
    return getter, set(), "uuid" in layout


def validate_event(event: Any) -> None:
    """Raise :class:`InvalidEvent` unless ``event`` can be applied safely.

    The checks are the ones that would otherwise crash a consumer: a body that
    is not an object, a missing or non-string ``type``, a ``clock`` that is not
    an integer (``null`` only allowed on ``task-sent``, whose clock the
    receiver replaces), and typed fields holding the wrong type.

    An event whose layout and value classes passed every check before (and
    whose clock, if any, is an ``int``) passes again on the classes alone: the
    checks depend on nothing else but the type's ``task-`` prefix, tested
    here too.  Anything else gets every check (:func:`_check`).
    """
    if event.__class__ is not dict:  # JSON gives exact dicts; anything else is checked
        _check(event)
        return
    checks = _layout_checks(tuple(event))
    if checks is None:
        _check(event)
        return
    getter, valid, has_uuid = checks
    classes = tuple(map(type, getter(event)))
    clock_is_int = event.get("clock", 0).__class__ is int
    if classes in valid and clock_is_int:
        if not has_uuid and event["type"].startswith("task-"):
            raise InvalidEvent("missing-field", f"{event['type']} event has no 'uuid'")
        return
    _check(event)  # raises, or the classes are valid for this layout
    if clock_is_int:
        if len(valid) >= VALID_CLASSES_MAX:
            valid.clear()
        valid.add(classes)


def _check(event: Any) -> None:
    """Every check of :func:`validate_event`, field by field."""
    if not isinstance(event, dict):
        raise InvalidEvent("not-an-object", f"event is a {type(event).__name__}, not an object")
    type_ = event.get("type")
    if type_ is None:
        raise InvalidEvent("missing-type", "event has no 'type'")
    if not isinstance(type_, str):
        raise InvalidEvent("bad-field-type", "'type' must be a string")
    if "clock" in event:
        clock = event["clock"]
        if clock is None:
            if type_ != "task-sent":
                raise InvalidEvent("null-clock", f"{type_} event has clock null")
        elif clock.__class__ is not int and not _has_type(clock, _INT, False):
            raise InvalidEvent("bad-field-type", "'clock' must be an integer")
    exact = _EXACT
    for key, value in event.items():
        classes = exact.get(key)
        if classes is not None and value.__class__ not in classes:
            types, nullable, what = FIELD_CHECKS[key]
            if not _has_type(value, types, nullable):
                raise InvalidEvent("bad-field-type", f"{type_}: {key!r} must be {what}")
    if type_.startswith("task-") and "uuid" not in event:
        raise InvalidEvent("missing-field", f"{type_} event has no 'uuid'")
