"""Remote-control commands that change a worker (Celery's names, arguments and replies).

The read-only ones are in :mod:`.inspect`; :data:`CONTROL_HANDLERS` holds
both, by name and by Celery's older aliases.  Commands run in the worker's
own thread, between two polls of the broker.

Differences from Celery:

- ``disable_events`` really stops task events, also on a worker started
  with ``-E`` (a Celery worker started with ``-E`` answers "already
  disabled" and keeps sending them); ``enable_events`` also switches on a
  dispatcher that was off.  ``heartbeat`` sends a full heartbeat (Celery's
  lacks the gauges).
- ``add_consumer`` answers "already consuming" for a queue it consumes, and
  ``cancel_consumer`` says when it did not consume the queue (Celery answers
  as if it had done something).
- ``pool_shrink`` retires busy processes after their task instead of failing.
"""

from __future__ import annotations

import importlib
import logging
import signal as _signal
import sys
from typing import TYPE_CHECKING, Any

from kombu import Exchange, Queue

from ..protocol.control import ALIASES, COMMANDS, error, ok, parse_rate
from ..protocol.events import TASK_GROUP, WORKER_GROUP
from ..transport import task_queue
from .inspect import INSPECT_HANDLERS

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["CONTROL_HANDLERS", "ShutdownRequested"]

logger = logging.getLogger("tidings.worker.control")


class ShutdownRequested(SystemExit):
    """Raised by ``shutdown`` so that no reply is sent, as with Celery's workers.

    kombu's mailbox lets ``SystemExit`` through instead of replying; the
    worker's loop catches it (the stop flag is already set).
    """


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


def terminate(worker: Worker, signal: Any = None, task_id: Any = None,
              **kwargs: Any) -> dict[str, Any]:
    return revoke(worker, task_id=task_id, terminate=True, signal=signal)


def _task(worker: Worker, task_name: Any) -> Any:
    return worker.app.tasks.get(task_name) if isinstance(task_name, str) else None


def rate_limit(worker: Worker, task_name: Any = None, rate_limit: Any = None,
               **kwargs: Any) -> dict[str, Any]:
    try:
        parse_rate(rate_limit)
    except ValueError as exc:
        return error(f"Invalid rate limit string: {exc!r}")
    task = _task(worker, task_name)
    if task is None:
        logger.error("Rate limit attempt for unknown task %r", task_name)
        return error("unknown task")
    task.rate_limit = rate_limit or None  # the worker reads it for every task it admits
    if not rate_limit:
        logger.info("Rate limits disabled for tasks of type %s", task_name)
        return ok("rate limit disabled successfully")
    logger.info("New rate limit for tasks of type %s: %s.", task_name, rate_limit)
    return ok("new rate limit set successfully")


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a number of seconds: {value!r}")
    seconds = float(value)
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"not a number of seconds: {value!r}")
    return seconds or None


def time_limit(worker: Worker, task_name: Any = None, hard: Any = None, soft: Any = None,
               **kwargs: Any) -> dict[str, Any]:
    task = _task(worker, task_name)
    if task is None:
        logger.error("Change time limit attempt for unknown task %r", task_name)
        return error("unknown task")
    try:
        task.soft_time_limit, task.time_limit = _seconds(soft), _seconds(hard)
    except (TypeError, ValueError) as exc:
        return error(f"Invalid time limit: {exc}")
    logger.info("New time limits for tasks of type %s: soft=%s hard=%s", task_name,
                task.soft_time_limit, task.time_limit)
    return ok("time limits set successfully")


def shutdown(worker: Worker, msg: str = "Got shutdown from remote", **kwargs: Any) -> None:
    logger.warning("%s", msg)
    worker.stop()
    raise ShutdownRequested(0)


def _resize(worker: Worker, n: Any, sign: int, command: str) -> dict[str, Any]:
    if worker.autoscaler is not None:
        return error(f"{command} is not supported with autoscale. "
                     "Adjust autoscale range instead.")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        return error(f"{command}: n must be a positive integer, not {n!r}")
    worker.resize_pool(sign * n)
    return ok(f"pool will {'grow' if sign > 0 else 'shrink'}")


def pool_grow(worker: Worker, n: Any = 1, **kwargs: Any) -> dict[str, Any]:
    return _resize(worker, n, 1, "pool_grow")


def pool_shrink(worker: Worker, n: Any = 1, **kwargs: Any) -> dict[str, Any]:
    return _resize(worker, n, -1, "pool_shrink")


def autoscale(worker: Worker, max: Any = None, min: Any = None,
              **kwargs: Any) -> dict[str, Any]:
    if worker.autoscaler is None:
        raise ValueError("Autoscale not enabled")
    max_, min_ = worker.autoscaler.update(max, min)
    return ok(f"autoscale now max={max_} min={min_}")


def pool_restart(worker: Worker, modules: Any = None, reload: bool = False,
                 reloader: Any = None, **kwargs: Any) -> dict[str, Any]:
    """Import ``modules`` (reload them if ``reload``), then renew the pool's processes."""
    if not worker.app.conf.get("worker_pool_restarts"):
        raise ValueError("Pool restarts not enabled")
    for name in modules or ():
        if not isinstance(name, str):
            return error(f"not a module name: {name!r}")
        if name in sys.modules:
            if reload:
                logger.info("Reloading module %s", name)
                importlib.reload(sys.modules[name])
        else:
            logger.info("Importing module %s", name)
            importlib.import_module(name)
    worker.pool.restart()
    return ok("reload started")


def add_consumer(worker: Worker, queue: Any = None, exchange: Any = None,
                 exchange_type: Any = None, routing_key: Any = None,
                 **options: Any) -> dict[str, Any]:
    if not isinstance(queue, str) or not queue:
        return error(f"add_consumer needs a queue name, not {queue!r}")
    if exchange is None:
        q = task_queue(queue)
    else:
        q = Queue(queue, Exchange(str(exchange), str(exchange_type or "direct")),
                  routing_key=str(routing_key or queue), durable=True)
    if not worker.add_queue(q):
        return ok(f"already consuming from {queue!r}")
    return ok(f"add consumer {queue}")


def cancel_consumer(worker: Worker, queue: Any = None, **kwargs: Any) -> dict[str, Any]:
    if not isinstance(queue, str) or not worker.cancel_queue(queue):
        return ok(f"was not consuming from {queue}")
    return ok(f"no longer consuming from {queue}")


_HANDLERS = {
    **INSPECT_HANDLERS,
    "enable_events": enable_events,
    "disable_events": disable_events,
    "heartbeat": heartbeat,
    "revoke": revoke,
    "terminate": terminate,
    "rate_limit": rate_limit,
    "time_limit": time_limit,
    "shutdown": shutdown,
    "pool_grow": pool_grow,
    "pool_shrink": pool_shrink,
    "autoscale": autoscale,
    "pool_restart": pool_restart,
    "add_consumer": add_consumer,
    "cancel_consumer": cancel_consumer,
}

#: Every command of :data:`tidings.protocol.control.COMMANDS`, and Celery's aliases.
CONTROL_HANDLERS = {
    **{name: _HANDLERS[name] for name in COMMANDS},
    **{alias: _HANDLERS[name] for alias, name in ALIASES.items()},
}
