"""Task messages, Celery protocol v2 (and reading protocol v1), as pure data.

A message is ``(headers, properties, body)``: Celery 5.7's shapes, so that a
Celery client's tasks run on a Tidings worker and a Tidings client's tasks
on a Celery worker.  Body: ``[args, kwargs, {"callbacks", "errbacks",
"chain", "chord"}]``.
"""

from __future__ import annotations

import functools
import math
import os
import reprlib
import socket
import uuid as _uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .events import REPR_MAXLEN

DEFAULT_QUEUE = "celery"
TASK_DELIVERY_MODE = 2

_repr = reprlib.Repr()
_repr.maxlevel = 3
for _attr in ("maxtuple", "maxlist", "maxarray", "maxdict", "maxset", "maxfrozenset",
              "maxdeque"):
    setattr(_repr, _attr, 10_000)
_repr.maxstring = REPR_MAXLEN
_repr.maxlong = REPR_MAXLEN
_repr.maxother = REPR_MAXLEN


def saferepr(obj: Any, maxlen: int = REPR_MAXLEN) -> str:
    """A repr no longer than about ``maxlen``, nesting cut at 3 levels; never raises."""
    try:
        text = _repr.repr(obj)
    except Exception as exc:  # a broken __repr__ must not break publishing
        text = f"<unrepresentable {type(obj).__name__}: {exc!r}>"
    if len(text) > maxlen:
        text = text[:maxlen] + "..."
    return text


#: The host's name, looked up once, as Celery does (once per task costs a system call).
_gethostname = functools.lru_cache(maxsize=1)(socket.gethostname)


def anon_origin() -> str:
    return f"gen{os.getpid()}@{_gethostname()}"


def to_iso(value: datetime | float | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, timezone.utc)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


def from_iso(value: Any) -> datetime | None:
    """A header's ISO-8601 time as an aware datetime (naive means UTC); None if absent."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, timezone.utc)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass
class TaskMessage:
    """What a client publishes for one task call."""

    headers: dict[str, Any]
    properties: dict[str, Any]
    body: list[Any]
    queue: str
    expiration: float | None = None


def build_message(
    name: str,
    args: tuple | list | None = None,
    kwargs: dict | None = None,
    *,
    task_id: str | None = None,
    countdown: float | None = None,
    eta: datetime | None = None,
    expires: datetime | float | None = None,
    retries: int = 0,
    root_id: str | None = None,
    parent_id: str | None = None,
    origin: str | None = None,
    queue: str = DEFAULT_QUEUE,
    ignore_result: bool = False,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    now: datetime | None = None,
) -> TaskMessage:
    """Headers, properties and body of a protocol-2 task message."""
    task_id = task_id or str(_uuid.uuid4())
    args = list(args or ())
    kwargs = dict(kwargs or {})
    now = now or datetime.now(timezone.utc)
    if countdown is not None:
        eta = now + timedelta(seconds=countdown)
    expiration = None
    if isinstance(expires, int | float):
        expiration = float(expires)
        expires = now + timedelta(seconds=expires)
    elif expires is not None:
        expiration = max((from_iso(expires) - now).total_seconds(), 0.0)  # type: ignore[operator]
    headers = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": None,
        "eta": to_iso(eta),
        "expires": to_iso(expires),
        "group": None,
        "group_index": None,
        "retries": retries,
        "timelimit": [time_limit, soft_time_limit],
        "root_id": root_id or task_id,
        "parent_id": parent_id,
        "argsrepr": saferepr(tuple(args)),
        "kwargsrepr": saferepr(kwargs),
        "origin": origin or anon_origin(),
        "ignore_result": ignore_result,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    properties = {"correlation_id": task_id, "reply_to": ""}
    body = [args, kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    return TaskMessage(headers, properties, body, queue, expiration)


class BadMessage(ValueError):
    """A task message that cannot be run; the text says why."""


@dataclass
class TaskRequest:
    """A task message as the worker understands it (either protocol)."""

    id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    retries: int = 0
    eta: datetime | None = None
    expires: datetime | None = None
    root_id: str | None = None
    parent_id: str | None = None
    argsrepr: str = ""
    kwargsrepr: str = ""
    origin: str | None = None
    ignore_result: bool = False
    time_limit: float | None = None  # hard, seconds (the ``timelimit`` header)
    soft_time_limit: float | None = None


def _limits(value: Any) -> tuple[float | None, float | None]:
    """The ``timelimit`` header, ``[hard, soft]``; anything else means no limits."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None, None
    return tuple(  # type: ignore[return-value]
        float(v) if isinstance(v, int | float) and not isinstance(v, bool)
        and 0 < v < math.inf else None
        for v in value)


def parse_message(headers: dict[str, Any] | None, body: Any) -> TaskRequest:
    """Read a task message; raises :class:`BadMessage` with the reason."""
    headers = headers or {}
    try:
        if "task" in headers:
            if not isinstance(body, list | tuple) or len(body) < 2:
                raise BadMessage("protocol 2 body must be [args, kwargs, embed]")
            args, kwargs = body[0], body[1]
            source = headers
            task_id = headers.get("id")
        else:
            if not isinstance(body, dict) or "task" not in body:
                raise BadMessage("message is neither protocol 2 (no 'task' header) "
                                 "nor protocol 1 (no 'task' in the body)")
            source = body
            args, kwargs = body.get("args", []), body.get("kwargs", {})
            task_id = body.get("id")
        if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
            raise BadMessage("args must be a list and kwargs an object")
        if not isinstance(task_id, str) or not task_id:
            raise BadMessage("message has no task id")
        name = source.get("task")
        if not isinstance(name, str) or not name:
            raise BadMessage("message has no task name")
        retries = source.get("retries") or 0
        if not isinstance(retries, int):
            raise BadMessage("retries must be an integer")
        hard, soft = _limits(source.get("timelimit"))
        return TaskRequest(
            id=task_id, name=name, args=list(args), kwargs=dict(kwargs), retries=retries,
            eta=from_iso(source.get("eta")), expires=from_iso(source.get("expires")),
            root_id=source.get("root_id"), parent_id=source.get("parent_id"),
            argsrepr=headers.get("argsrepr") or saferepr(tuple(args)),
            kwargsrepr=headers.get("kwargsrepr") or saferepr(dict(kwargs)),
            origin=headers.get("origin"), ignore_result=bool(headers.get("ignore_result")),
            time_limit=hard, soft_time_limit=soft,
        )
    except BadMessage:
        raise
    except (ValueError, TypeError) as exc:
        raise BadMessage(f"unreadable task message: {exc}") from None
