"""Remote-control commands a worker obeys (Celery's names, arguments and replies).

``disable_events`` really stops task events, also on a worker started with
``-E`` (a Celery worker started with ``-E`` answers "already disabled" and
keeps sending them); ``enable_events`` also switches on a dispatcher that
was off.  ``heartbeat`` sends a full heartbeat (Celery's lacks the gauges).
"""

from __future__ import annotations

import logging
import signal as _signal
from typing import TYPE_CHECKING, Any

from ..protocol.events import TASK_GROUP, WORKER_GROUP

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["CONTROL_HANDLERS"]

logger = logging.getLogger("tidings.worker.control")


def ok(text: Any) -> dict[str, Any]:
    return {"ok": text}


def error(text: Any) -> dict[str, Any]:
    return {"error": text}


def ping(worker: Worker, **kwargs: Any) -> dict[str, Any]:
    return ok("pong")


def enable_events(worker: Worker, **kwargs: Any) -> dict[str, Any]:
    dispatcher = worker.dispatcher
    if dispatcher is None:
        return error("event dispatcher unavailable")
    if worker.task_events_enabled:
        return ok("task events already enabled")
    if dispatcher.groups:
        dispatcher.groups.add(TASK_GROUP)
    if not dispatcher.enabled:
        dispatcher.enable()
    logger.warning("Events of group {task} enabled by remote.")
    return ok("task events enabled")


def disable_events(worker: Worker, **kwargs: Any) -> dict[str, Any]:
    dispatcher = worker.dispatcher
    if dispatcher is None:
        return error("event dispatcher unavailable")
    if not worker.task_events_enabled:
        return ok("task events already disabled")
    dispatcher.groups = {WORKER_GROUP}  # an empty set meant "every group"
    logger.warning("Events of group {task} disabled by remote.")
    return ok("task events disabled")


def heartbeat(worker: Worker, **kwargs: Any) -> None:
    worker.hook("worker_heartbeat", remote=True)
    if worker.dispatcher is not None:
        worker.dispatcher.flush()
    return None


def _signum(value: Any) -> int:
    if value is None:
        return _signal.SIGTERM
    if isinstance(value, int):
        return value
    name = str(value).upper()
    if name.isdigit():
        return int(name)
    if not name.startswith("SIG"):
        name = "SIG" + name
    return int(getattr(_signal, name))


def revoke(worker: Worker, task_id: Any = None, terminate: bool = False, signal: Any = None,
           **kwargs: Any) -> dict[str, Any]:
    ids = [task_id] if isinstance(task_id, str) else list(task_id or [])
    for tid in ids:
        worker.revoked.add(tid)
    if terminate:
        try:
            signum = _signum(signal)
        except (AttributeError, ValueError):
            return error(f"unknown signal {signal!r}")
        killed = [tid for tid in ids if worker.terminate(tid, signum)]
        return ok(f"terminate: {', '.join(killed)}" if killed else "terminate: tasks unknown")
    logger.info("Tasks flagged as revoked: %s", ", ".join(ids))
    return ok(f"tasks {set(ids)!r} flagged as revoked")


def clock(worker: Worker, **kwargs: Any) -> dict[str, Any]:
    return {"clock": worker.app.clock.value}


CONTROL_HANDLERS = {
    "ping": ping,
    "enable_events": enable_events,
    "disable_events": disable_events,
    "heartbeat": heartbeat,
    "revoke": revoke,
    "clock": clock,
}
