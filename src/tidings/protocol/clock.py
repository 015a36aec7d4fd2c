"""Lamport clock rules, and the clock a process shares by default.

Celery orders events by a Lamport clock: a sender moves its clock forward for
each event (:func:`~tidings.protocol.events.build_event` takes the value), a
receiver adjusts its own to every event it sees (:func:`stamp_received`).
An ``App`` has a clock of its own; dispatchers and receivers made without an
app share :func:`default_clock`, as do they and the default app.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kombu.clocks import LamportClock

from .events import CLIENT_CLOCK_SKEW

__all__ = ["LamportClock", "default_clock", "stamp_received"]


def stamp_received(event: dict[str, Any], clock: LamportClock, now: Callable[[], float],
                   client_clock_skew: int = CLIENT_CLOCK_SKEW) -> str:
    """Apply the receiver-side rules to one valid event, in place; returns its type.

    * ``task-sent``: the client's clock is replaced by ours plus the client
      skew (clients do not share the cluster's clock), then ours adjusts to it;
    * otherwise our clock adjusts to the event's, or, when the event has
      none, the event gets our next clock value;
    * ``local_received`` is set to ``now()``.
    """
    type_ = event["type"]
    if type_ == "task-sent":
        value = event["clock"] = (clock.value or 1) + client_clock_skew
        clock.adjust(value)
    else:
        value = event.get("clock")
        if value is None:
            event["clock"] = clock.forward()
        else:
            clock.adjust(value)
    event["local_received"] = now()
    return type_

_default = LamportClock()


def default_clock() -> LamportClock:
    """The process's default clock."""
    return _default
