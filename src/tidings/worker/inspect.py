"""Read-only remote-control commands (``inspect``): what a worker is and what it holds.

Names, arguments and reply shapes are Celery 5.7's (see
:mod:`tidings.protocol.control`), so ``celery inspect``, Flower and
celery-exporter read a Tidings worker as they read a Celery one.  Each
handler takes the worker and the command's arguments; kombu's mailbox turns
an exception into Celery's error reply, so a bad argument never reaches
the worker's loop.

Differences from Celery:

- ``stats`` has ``broker`` without the password, like Celery, and the pool's
  ``implementation`` names the Tidings pool class.
- ``conf`` masks secrets in every setting, known or not (Celery masks by
  key name; so do we, plus the password in any URL value).
- ``report`` lists the software and the settings that differ from the
  defaults; there is no loader line (Tidings has no loaders).
"""

from __future__ import annotations

import os
import platform
import re
import time
from typing import TYPE_CHECKING, Any

from kombu import __version__ as kombu_version

from .._version import __version__
from ..config import SETTINGS
from ..protocol.control import DEFAULT_TASK_INFO_ITEMS, ok
from ..protocol.tasks import saferepr
from ..transport import redact_url

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["INSPECT_HANDLERS"]

#: Setting names whose values are never shown (Celery's list).
SECRET_KEYS = re.compile(r"API|TOKEN|KEY|SECRET|PASS|PROFANITIES_LIST|SIGNATURE|DATABASE",
                         re.IGNORECASE)
MASK = "********"
#: Nesting followed when making a setting's value JSON-friendly; deeper is a repr.
JSON_DEPTH = 8


def ping(worker: Worker, **kwargs: Any) -> dict[str, Any]:
    return ok("pong")


def clock(worker: Worker, **kwargs: Any) -> dict[str, Any]:
    return {"clock": worker.app.clock.value}


def _rusage() -> dict[str, Any] | str:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return "N/A"
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {name: getattr(r, "ru_" + name) for name in (
        "utime", "stime", "maxrss", "ixrss", "idrss", "isrss", "minflt", "majflt", "nswap",
        "inblock", "oublock", "msgsnd", "msgrcv", "nsignals", "nvcsw", "nivcsw")}


def _broker(worker: Worker) -> dict[str, Any]:
    conn = worker.connection
    if conn is None:
        return {}
    info = dict(conn.info())
    info.pop("password", None)
    return _jsonable(info)


def stats(worker: Worker, **kwargs: Any) -> dict[str, Any]:
    reply = {
        "total": dict(worker.total),
        "pid": os.getpid(),
        "clock": str(worker.app.clock.value),
        "uptime": round(time.time() - worker.startup_time),
        "pool": worker.pool.info(),
        "broker": _broker(worker),
        "prefetch_count": worker.qos.value if worker.qos is not None else 0,
        "rusage": _rusage(),
    }
    if worker.autoscaler is not None:
        reply["autoscaler"] = worker.autoscaler.info()
    return reply


def active(worker: Worker, safe: bool = False, **kwargs: Any) -> list[dict[str, Any]]:
    return [r.info(worker.hostname, safe=bool(safe)) for r in worker.active_requests()]


def reserved(worker: Worker, **kwargs: Any) -> list[dict[str, Any]]:
    return [r.info(worker.hostname) for r in worker.reserved_requests()]


def scheduled(worker: Worker, **kwargs: Any) -> list[dict[str, Any]]:
    return [{"eta": r.req.eta.isoformat() if r.req.eta else None,
             "priority": (r.message.properties or {}).get("priority") or 0,
             "request": r.info(worker.hostname)}
            for r in worker.scheduled_requests()]


def revoked(worker: Worker, **kwargs: Any) -> list[str]:
    return worker.revoked.ids()


def registered(worker: Worker, taskinfoitems: Any = None, builtins: bool = False,
               **kwargs: Any) -> list[str]:
    items = [i for i in (taskinfoitems or DEFAULT_TASK_INFO_ITEMS)
             if isinstance(i, str) and not i.startswith("_")]
    tasks = worker.app.tasks

    def describe(name: str) -> str:
        task = tasks[name]
        fields = [f"{item}={value}" for item in items
                  if (value := getattr(task, item, None)) is not None]
        return f"{name} [{' '.join(fields)}]" if fields else name

    return [describe(name) for name in sorted(tasks)
            if builtins or not name.startswith("celery.")]


def active_queues(worker: Worker, **kwargs: Any) -> list[dict[str, Any]]:
    return [dict(q.as_dict(recurse=True)) for q in worker.task_queues]


def _jsonable(value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if depth >= JSON_DEPTH:
        return saferepr(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v, depth + 1) for v in value]
    return saferepr(value)


def _masked(name: str, value: Any) -> Any:
    if SECRET_KEYS.search(name):
        return MASK if value is not None else None
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return _jsonable(value)


def settings_table(worker: Worker, with_defaults: bool = False) -> dict[str, Any]:
    """The worker's settings, secrets masked; only those changed unless ``with_defaults``."""
    conf = worker.app.conf
    table = {}
    for name, value in conf.items():
        if not isinstance(name, str) or name.startswith("_"):
            continue
        setting = SETTINGS.get(name)
        if not with_defaults and setting is not None and value == setting.default:
            continue
        table[name] = _masked(name, value)
    return table


def conf(worker: Worker, with_defaults: bool = False, **kwargs: Any) -> dict[str, Any]:
    return settings_table(worker, bool(with_defaults))


def query_task(worker: Worker, ids: Any = None, **kwargs: Any) -> dict[str, Any]:
    wanted = [ids] if isinstance(ids, str) else list(ids or [])
    states = (("active", worker.active_requests()), ("reserved", worker.reserved_requests()),
              ("scheduled", worker.scheduled_requests()))
    found = {}
    for task_id in wanted:
        request = worker.request(task_id) if isinstance(task_id, str) else None
        if request is None:
            continue
        state = next((name for name, held in states if request in held), "ready")
        found[task_id] = [state, request.info(worker.hostname)]
    return found


def report(worker: Worker, **kwargs: Any) -> dict[str, Any]:
    conf = worker.app.conf
    transport = (conf.broker_url or "filesystem://").split("://", 1)[0]
    lines = [
        "",
        f"software -> tidings:{__version__} kombu:{kombu_version} "
        f"py:{platform.python_version()}",
        f"platform -> system:{platform.system()} arch:{platform.architecture()[0]} "
        f"kernel version:{platform.release()} imp:{platform.python_implementation()}",
        f"settings -> transport:{transport} results:disabled",
        "",
        *(f"{name}: {value!r}" for name, value in settings_table(worker).items()),
        "",
    ]
    return ok("\n".join(lines))


def hello(worker: Worker, from_node: Any = None, revoked: Any = None,
          **kwargs: Any) -> dict[str, Any] | None:
    """Mingle: another worker starting up sends its revoked ids and wants ours."""
    if from_node == worker.hostname:
        return None
    for task_id in revoked or ():
        if isinstance(task_id, str):
            worker.revoked.add(task_id)
    return {"revoked": worker.revoked.ids(), "clock": worker.app.clock.forward()}


INSPECT_HANDLERS = {
    "ping": ping,
    "clock": clock,
    "stats": stats,
    "active": active,
    "reserved": reserved,
    "scheduled": scheduled,
    "revoked": revoked,
    "registered": registered,
    "active_queues": active_queues,
    "conf": conf,
    "query_task": query_task,
    "report": report,
    "hello": hello,
}
