"""A worker as a monitor sees it through its events (``celery.events.state.Worker``)."""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ...protocol.events import (
    HEARTBEAT_DRIFT_MAX,
    HEARTBEAT_EXPIRE_WINDOW,
    WORKER_STATE_FIELDS,
)
from .keys import KeyPolicy, add_extra_fields, extra_fields

__all__ = ["DriftWarnings", "Worker", "heartbeat_expires"]

#: Seconds apart below which two times cannot be more than ``HEARTBEAT_DRIFT_MAX``
#: whole seconds apart (truncating adds less than one; one more second of margin
#: for the rounding of a float difference).
_DRIFT_SURE = HEARTBEAT_DRIFT_MAX - 1

logger = logging.getLogger("tidings.events.state")

DRIFT_WARNING = (
    "Substantial drift from %s may mean clocks are out of sync.  Current drift is "
    "%s seconds.  [orig: %s recv: %s]"
)


class DriftWarnings:
    """The hosts already warned about clock drift: one warning per host.

    A :class:`~tidings.events.state.State` keeps one for its workers (Celery
    keeps one for the whole process, so a second monitor in the same process
    never warns).
    """

    #: Hosts remembered; the oldest is forgotten (and may warn again) past this.
    limit = 1000

    def __init__(self) -> None:
        self._hosts: OrderedDict[str, None] = OrderedDict()

    def warn(self, hostname: str | None, drift: float, local_received: float,
             timestamp: float) -> None:
        if hostname in self._hosts:
            return
        self._hosts[hostname] = None  # type: ignore[index]
        if len(self._hosts) > self.limit:
            self._hosts.popitem(last=False)
        logger.warning(DRIFT_WARNING, hostname, drift, timestamp, local_received)


def heartbeat_expires(timestamp: float, freq: float = 60,
                      expire_window: float = HEARTBEAT_EXPIRE_WINDOW) -> float:
    """When a worker whose last heartbeat was at ``timestamp`` counts as gone."""
    if isinstance(freq, Decimal):
        freq = float(freq)
    if isinstance(timestamp, Decimal):
        timestamp = float(timestamp)
    return timestamp + (freq * (expire_window / 1e2))


class Worker:
    """A worker as seen through its events.

    ``drift_warnings`` is where clock-drift warnings are remembered: the
    State that creates the worker sets its own; a worker used on its own
    gets one of its own on first need.
    """

    heartbeat_max = 4
    expire_window = HEARTBEAT_EXPIRE_WINDOW

    _fields = WORKER_STATE_FIELDS
    _settable = frozenset(_fields) - {"heartbeats"}
    #: Names events may never set (besides methods, properties and private names).
    _protected = frozenset({"heartbeats", "event", "drift_warnings"})
    _keys: KeyPolicy
    __slots__ = (*_fields, "drift_warnings", "__dict__", "__weakref__")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._keys = KeyPolicy(cls, cls._protected)

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
        self.drift_warnings: DriftWarnings | None = None

    def __reduce__(self) -> tuple:
        return _rebuild_worker, (self.__class__, {f: getattr(self, f) for f in self._fields},
                                 dict(extra_fields(self)))

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
        keys = self._keys
        if fields.keys() <= keys.ok:
            for key, value in fields.items():
                setattr(self, key, value)
            return
        allowed = keys.allowed
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
        # Times less than _DRIFT_SURE apart cannot be more than the maximum apart
        # in whole seconds: the common case skips Celery's int() arithmetic, which
        # raises on NaN and infinities (those attacker-controlled timestamps count
        # as infinite drift instead).
        if not -_DRIFT_SURE < local_received - timestamp < _DRIFT_SURE:
            drift = (abs(int(local_received) - int(timestamp)) if math.isfinite(timestamp)
                     else math.inf)
        else:
            drift = 0
        if drift > HEARTBEAT_DRIFT_MAX:
            memory = self.drift_warnings
            if memory is None:
                memory = self.drift_warnings = DriftWarnings()
            memory.warn(self.hostname, drift, local_received, timestamp)
        if len(heartbeats) > self.heartbeat_max - 1:
            del heartbeats[0]
        if not heartbeats or local_received > heartbeats[-1]:
            heartbeats.append(local_received)
        else:
            bisect.insort(heartbeats, local_received)

    def update(self, f: dict[str, Any] | None = None, **kw: Any) -> None:
        for key, value in (dict(f or {}, **kw)).items():
            setattr(self, key, value)

    def copy(self) -> Worker:
        """An independent copy that later events do not change (for snapshots)."""
        new = Worker.__new__(self.__class__)
        for name in self._fields:
            setattr(new, name, getattr(self, name))
        new.heartbeats = list(self.heartbeats)
        new.drift_warnings = self.drift_warnings
        add_extra_fields(new, extra_fields(self))
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


Worker._keys = KeyPolicy(Worker, Worker._protected)


def _rebuild_worker(cls: type, fields: dict, extra: dict) -> Worker:
    worker = cls(**fields)
    add_extra_fields(worker, extra)
    return worker
