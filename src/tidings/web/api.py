"""The REST API, at Flower 2.2's paths with its parameters and JSON shapes.

Scripts written against Flower's API keep working: the same paths, query or
form parameters, and answers (``{"message": ...}`` for an action that
worked; ``{task id: task}`` for listings).  :data:`ROUTES` is the one table
both the router and the OpenAPI document (``/api/openapi.json``) are built
from, so the document cannot drift from what is served.

Differences from Flower, and why:

- Errors are JSON, ``{"error": "..."}`` with the status code Flower uses
  (400, 403, 404, 503), instead of Tornado's HTML error page: a script can
  read them.  A worker's refusal of a control command keeps Flower's 403.
- Boolean parameters are read as words (``true``/``1``/``yes``/``on``):
  Flower passes them through ``bool()``, so ``refresh=false`` refreshes.
- ``/api/task/result``, ``/api/task/apply`` and ``/api/task/abort`` need a
  result backend, which an event monitor does not have: they answer 501
  with a message saying so.
- Worker names are checked against the workers seen in events as well as
  those that answered inspect, so a worker that was just seen can be
  controlled at once.
"""

from __future__ import annotations

import datetime
import json
import math
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from .inspector import InspectUnavailable
from .search import QuerySyntaxError
from .tasks import TaskQuery, parse_received, task_json, task_page

__all__ = ["ROUTES", "ApiError", "Route", "json_response", "openapi_document"]

#: The largest request body read (a task's arguments for send-task).
MAX_BODY = 1 << 20
_TRUE = frozenset({"1", "true", "yes", "on", "t", "y"})
_FALSE = frozenset({"0", "false", "no", "off", "f", "n", ""})


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def json_response(data: Any, status: int = 200) -> Response:
    """Strict JSON (no NaN or Infinity: they are not JSON; they become null)."""
    try:
        body = json.dumps(data, allow_nan=False, default=str)
    except ValueError:
        body = json.dumps(_finite(data), allow_nan=False, default=str)
    return Response(body, status_code=status, media_type="application/json")


class Params:
    """A request's parameters: the query string, then a form or JSON object body."""

    def __init__(self, query: dict[str, str], body: dict[str, Any]) -> None:
        self.values = {**body, **query}

    @classmethod
    async def read(cls, request: Request) -> Params:
        body: dict[str, Any] = {}
        if request.method == "POST":
            raw = await request.body()
            if len(raw) > MAX_BODY:
                raise ApiError(413, f"Request body over {MAX_BODY} bytes")
            kind = request.headers.get("content-type", "").split(";")[0].strip()
            if raw and kind == "application/x-www-form-urlencoded":
                body = dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace")))
            elif raw and kind in ("application/json", ""):
                try:
                    parsed = json.loads(raw)
                except ValueError as exc:
                    raise ApiError(400, f"Body is not JSON: {exc}") from None
                if not isinstance(parsed, dict):
                    raise ApiError(400, "Body must be a JSON object")
                body = parsed
        return cls(dict(request.query_params), body)

    def text(self, name: str, default: str | None = None, required: bool = False
             ) -> str | None:
        value = self.values.get(name)
        if value is None:
            if required:
                raise ApiError(400, f"Missing argument {name}")
            return default
        return str(value)

    def number(self, name: str, kind: type, default: Any = None, required: bool = False
               ) -> Any:
        value = self.text(name, required=required)
        if value is None or value == "":
            return default
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ApiError(400, f"{name}: {value!r} is not a number") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise ApiError(400, f"{name}: {value!r} is not a finite number")
        return number

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.values.get(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ApiError(400, f"{name}: {value!r} is not a boolean")


Handler = Callable[[Any, Request, Params], Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    params: tuple[tuple[str, str, str], ...] = ()  # (name, type, description)
    action: bool = False  # changes something: refused when read-only


async def _blocking(fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return await run_in_threadpool(fun, *args, **kwargs)
    except (InspectUnavailable, OSError, ConnectionError) as exc:
        raise ApiError(503, f"The broker did not answer: {exc}") from None


# -- workers ------------------------------------------------------------------------------

async def list_workers(monitor: Any, request: Request, p: Params) -> Any:
    refresh = p.flag("refresh")
    name = p.text("workername")
    if p.flag("status"):
        return monitor.state.freeze_while(
            lambda: {h: w.alive for h, w in dict.items(monitor.state.workers)})
    if refresh or not monitor.inspector.workers:
        await _blocking(monitor.inspector.refresh, name)
    workers = monitor.inspector.workers
    if name:
        if name not in workers:
            raise ApiError(404, f"Unknown worker '{name}'")
        return {name: workers[name]}
    return workers


def _known_worker(monitor: Any, name: str) -> None:
    if not (monitor.inspector.knows(name) or name in monitor.state.workers):
        raise ApiError(404, f"Unknown worker '{name}'")


def _reply_of(replies: Any, name: str) -> dict[str, Any]:
    for reply in replies or ():
        if isinstance(reply, dict) and isinstance(reply.get(name), dict):
            return reply[name]
    return {"error": "No reply (is the worker running?)"}


async def _control(monitor: Any, name: str, command: str, failure: str,
                   message: Callable[[dict[str, Any]], str], **arguments: Any) -> Any:
    _known_worker(monitor, name)
    replies = await _blocking(monitor.app.control.broadcast, command, arguments=arguments,
                              destination=[name], reply=True, timeout=monitor.control_timeout)
    reply = _reply_of(replies, name)
    if "ok" in reply:
        return {"message": message(reply)}
    raise ApiError(403, f"{failure}: {reply.get('error', 'Unknown reason')}")


async def enable_events(monitor: Any, request: Request, p: Params) -> Any:
    name = request.path_params["name"]
    return await _control(monitor, name, "enable_events",
                          f"Failed to enable events on '{name}'", lambda r: str(r["ok"]))


async def disable_events(monitor: Any, request: Request, p: Params) -> Any:
    name = request.path_params["name"]
    return await _control(monitor, name, "disable_events",
                          f"Failed to disable events on '{name}'", lambda r: str(r["ok"]))


async def worker_shutdown(monitor: Any, request: Request, p: Params) -> Any:
    name = request.path_params["name"]
    _known_worker(monitor, name)
    await _blocking(monitor.app.control.broadcast, "shutdown", destination=[name])
    return {"message": "Shutting down!"}


async def pool_restart(monitor: Any, request: Request, p: Params) -> Any:
    name = request.path_params["name"]
    return await _control(monitor, name, "pool_restart",
                          f"Failed to restart the '{name}' pool",
                          lambda r: f"Restarting '{name}' worker's pool", reload=False)


async def pool_grow(monitor: Any, request: Request, p: Params) -> Any:
    name, n = request.path_params["name"], p.number("n", int, 1)
    return await _control(monitor, name, "pool_grow", f"Failed to grow '{name}' worker's pool",
                          lambda r: f"Growing '{name}' worker's pool by {n}", n=n)


async def pool_shrink(monitor: Any, request: Request, p: Params) -> Any:
    name, n = request.path_params["name"], p.number("n", int, 1)
    return await _control(monitor, name, "pool_shrink",
                          f"Failed to shrink '{name}' worker's pool",
                          lambda r: f"Shrinking '{name}' worker's pool by {n}", n=n)


async def pool_autoscale(monitor: Any, request: Request, p: Params) -> Any:
    name = request.path_params["name"]
    low, high = p.number("min", int, required=True), p.number("max", int, required=True)
    return await _control(monitor, name, "autoscale", f"Failed to autoscale '{name}' worker",
                          lambda r: f"Autoscaling '{name}' worker (min={low}, max={high})",
                          min=low, max=high)


async def add_consumer(monitor: Any, request: Request, p: Params) -> Any:
    name, queue = request.path_params["name"], p.text("queue", required=True)
    return await _control(monitor, name, "add_consumer",
                          f"Failed to add '{queue}' consumer to '{name}' worker",
                          lambda r: str(r["ok"]), queue=queue)


async def cancel_consumer(monitor: Any, request: Request, p: Params) -> Any:
    name, queue = request.path_params["name"], p.text("queue", required=True)
    return await _control(monitor, name, "cancel_consumer",
                          f"Failed to cancel '{queue}' consumer from '{name}' worker",
                          lambda r: str(r["ok"]), queue=queue)


# -- tasks --------------------------------------------------------------------------------

async def list_tasks(monitor: Any, request: Request, p: Params) -> Any:
    try:
        query = TaskQuery(
            limit=p.number("limit", int), offset=p.number("offset", int, 0),
            sort_by=p.text("sort_by"), worker=p.text("workername"), name=p.text("taskname"),
            state=p.text("state"), received_start=parse_received(p.text("received_start")),
            received_end=parse_received(p.text("received_end")), search=p.text("search"))
    except ValueError as exc:
        if "sort_by" in str(exc):
            raise ApiError(400, str(exc)) from None
        raise ApiError(400, "Invalid received_start or received_end, expected format "
                            "'YYYY-MM-DD HH:MM'") from None
    try:
        page = list(task_page(monitor.state, query, monitor.recent))
    except QuerySyntaxError as exc:
        raise ApiError(400, str(exc)) from None
    rows = monitor.state.read_tasks([task for _, task in page], task_json)
    return {uuid: row for (uuid, _), row in zip(page, rows, strict=True)}


async def task_types(monitor: Any, request: Request, p: Params) -> Any:
    return {"task-types": monitor.state.freeze_while(monitor.state.task_types)}


async def task_info(monitor: Any, request: Request, p: Params) -> Any:
    uuid = request.path_params["uuid"]
    task = monitor.state.tasks.get(uuid)
    if task is None:
        raise ApiError(404, f"Unknown task '{uuid}'")
    return monitor.state.read_tasks([task], task_json)[0]


async def queue_lengths(monitor: Any, request: Request, p: Params) -> Any:
    return {"active_queues": [{"name": name, "messages": length}
                              for name, length in monitor.queue_lengths()]}


async def revoke(monitor: Any, request: Request, p: Params) -> Any:
    uuid = request.path_params["uuid"]
    terminate, signal = p.flag("terminate"), p.text("signal", "SIGTERM")
    await _blocking(monitor.app.control.revoke, uuid, terminate=terminate, signal=signal)
    return {"message": f"Revoked '{uuid}'"}


async def _limit(monitor: Any, name: str, worker: str, command: str, failure: str,
                 **arguments: Any) -> Any:
    if not monitor.knows_task(name):
        raise ApiError(404, f"Unknown task '{name}'")
    return await _control(monitor, worker, command, failure, lambda r: str(r["ok"]),
                          task_name=name, **arguments)


async def rate_limit(monitor: Any, request: Request, p: Params) -> Any:
    name = request.path_params["name"]
    worker = p.text("workername", required=True)
    limit = p.text("ratelimit", required=True)
    return await _limit(monitor, name, worker, "rate_limit", "Failed to set rate limit",
                        rate_limit=limit)


async def time_limit(monitor: Any, request: Request, p: Params) -> Any:
    name = request.path_params["name"]
    worker = p.text("workername", required=True)
    return await _limit(monitor, name, worker, "time_limit", "Failed to set timeouts",
                        hard=p.number("hard", float), soft=p.number("soft", float))


def _task_arguments(p: Params) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    options = {k: v for k, v in p.values.items()}
    args, kwargs = options.pop("args", []), options.pop("kwargs", {})
    if not isinstance(args, list):
        raise ApiError(400, "args must be an array")
    if not isinstance(kwargs, dict):
        raise ApiError(400, "kwargs must be an object")
    allowed = {"queue", "countdown", "eta", "expires", "task_id", "time_limit",
               "soft_time_limit"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ApiError(400, f"Unknown option(s): {', '.join(unknown)}")
    for name in ("queue", "task_id"):
        if name in options and not isinstance(options[name], str):
            raise ApiError(400, f"{name} must be a string")
    if "countdown" in options:
        options["countdown"] = p.number("countdown", float)
    for name in ("time_limit", "soft_time_limit"):
        if name in options:
            options[name] = p.number(name, float)
    for name in ("eta", "expires"):
        if options.get(name) is not None:
            options[name] = _when(name, options[name], allow_seconds=name == "expires")
    return args, kwargs, options


def _when(name: str, value: Any, allow_seconds: bool) -> Any:
    """Flower's formats: ``YYYY-MM-DD HH:MM:SS.ffffff`` (or ISO); ``expires`` also seconds."""
    if allow_seconds and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value)
    if allow_seconds:
        try:
            return float(text)
        except ValueError:
            pass
    for parse in (lambda t: datetime.datetime.strptime(t, "%Y-%m-%d %H:%M:%S.%f"),
                  datetime.datetime.fromisoformat):
        try:
            return parse(text)
        except ValueError:
            continue
    raise ApiError(400, f"{name}: {text!r} is not a date-time (YYYY-MM-DD HH:MM:SS.ffffff)")


async def send_task(monitor: Any, request: Request, p: Params) -> Any:
    args, kwargs, options = _task_arguments(p)
    try:
        result = await _blocking(monitor.app.send_task, request.path_params["name"],
                                 args=args, kwargs=kwargs, **options)
    except (TypeError, ValueError) as exc:  # arguments that cannot be sent (not JSON ...)
        raise ApiError(400, f"Cannot send this task: {exc}") from None
    return {"task-id": result.id}


async def async_apply(monitor: Any, request: Request, p: Params) -> Any:
    name = request.path_params["name"]
    if name not in monitor.app.tasks:
        raise ApiError(404, f"Unknown task '{name}'")
    return await send_task(monitor, request, p)


async def needs_backend(monitor: Any, request: Request, p: Params) -> Any:
    raise ApiError(501, "This needs a result backend; an event monitor has none. "
                        "Read results where your tasks store them.")


async def healthcheck(monitor: Any, request: Request, p: Params) -> Any:
    return Response("OK", media_type="text/plain")


_W = (("name", "string", "worker name"),)
ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/workers", list_workers, "Workers and their inspect answers",
          (("refresh", "boolean", "inspect again"), ("workername", "string", "one worker"),
           ("status", "boolean", "only online/offline"))),
    Route("POST", "/api/worker/shutdown/{name}", worker_shutdown, "Shut a worker down", _W,
          action=True),
    Route("POST", "/api/worker/pool/restart/{name}", pool_restart, "Restart a worker's pool",
          _W, action=True),
    Route("POST", "/api/worker/pool/grow/{name}", pool_grow, "Grow a worker's pool",
          (*_W, ("n", "integer", "processes to add")), action=True),
    Route("POST", "/api/worker/pool/shrink/{name}", pool_shrink, "Shrink a worker's pool",
          (*_W, ("n", "integer", "processes to remove")), action=True),
    Route("POST", "/api/worker/pool/autoscale/{name}", pool_autoscale,
          "Set a worker's autoscale bounds",
          (*_W, ("min", "integer", "lower bound"), ("max", "integer", "upper bound")),
          action=True),
    Route("POST", "/api/worker/queue/add-consumer/{name}", add_consumer,
          "Make a worker consume a queue", (*_W, ("queue", "string", "queue name")),
          action=True),
    Route("POST", "/api/worker/queue/cancel-consumer/{name}", cancel_consumer,
          "Make a worker stop consuming a queue", (*_W, ("queue", "string", "queue name")),
          action=True),
    Route("POST", "/api/worker/events/enable/{name}", enable_events,
          "Turn a worker's task events on (not in Flower)", _W, action=True),
    Route("POST", "/api/worker/events/disable/{name}", disable_events,
          "Turn a worker's task events off (not in Flower)", _W, action=True),
    Route("GET", "/api/tasks", list_tasks, "Tasks, filtered, searched, sorted and paged",
          (("limit", "integer", "page size"), ("offset", "integer", "tasks to skip"),
           ("sort_by", "string", "column, '-' first for descending"),
           ("workername", "string", "worker"), ("taskname", "string", "task name"),
           ("state", "string", "state"),
           ("received_start", "string", "YYYY-MM-DD HH:MM"),
           ("received_end", "string", "YYYY-MM-DD HH:MM"),
           ("search", "string", "search query"))),
    Route("GET", "/api/task/types", task_types, "Task names seen"),
    Route("GET", "/api/queues/length", queue_lengths, "Queue lengths"),
    Route("GET", "/api/task/info/{uuid}", task_info, "One task",
          (("uuid", "string", "task id"),)),
    Route("POST", "/api/task/revoke/{uuid}", revoke, "Revoke (or terminate) a task",
          (("uuid", "string", "task id"), ("terminate", "boolean", "kill it if running"),
           ("signal", "string", "signal for terminate")), action=True),
    Route("POST", "/api/task/rate-limit/{name}", rate_limit, "Set a task's rate limit",
          (("name", "string", "task name"), ("workername", "string", "worker"),
           ("ratelimit", "string", "e.g. 10/m")), action=True),
    Route("POST", "/api/task/timeout/{name}", time_limit, "Set a task's time limits",
          (("name", "string", "task name"), ("workername", "string", "worker"),
           ("soft", "number", "soft limit, s"), ("hard", "number", "hard limit, s")),
          action=True),
    Route("POST", "/api/task/async-apply/{name}", async_apply,
          "Send a task registered in the app", (("name", "string", "task name"),),
          action=True),
    Route("POST", "/api/task/send-task/{name}", send_task, "Send a task by name",
          (("name", "string", "task name"),), action=True),
    Route("GET", "/api/task/result/{uuid}", needs_backend, "501: needs a result backend",
          (("uuid", "string", "task id"),)),
    Route("POST", "/api/task/apply/{name}", needs_backend, "501: needs a result backend",
          (("name", "string", "task name"),), action=True),
    Route("POST", "/api/task/abort/{uuid}", needs_backend, "501: needs a result backend",
          (("uuid", "string", "task id"),), action=True),
    Route("GET", "/healthcheck", healthcheck, "Liveness of the monitor"),
)


def openapi_document(version: str) -> dict[str, Any]:
    """OpenAPI 3.1 for :data:`ROUTES` (and ``/metrics``)."""
    paths: dict[str, Any] = {}
    for route in ROUTES:
        in_path = {part[1:-1] for part in route.path.split("/") if part.startswith("{")}
        params = [{"name": name, "in": "path" if name in in_path else "query",
                   "required": name in in_path, "description": text,
                   "schema": {"type": kind}} for name, kind, text in route.params]
        operation: dict[str, Any] = {
            "summary": route.summary, "parameters": params,
            "responses": {"200": {"description": "OK", "content": {
                "application/json": {"schema": {"type": "object"}}}}
                if route.path != "/healthcheck" else
                {"description": "OK", "content": {"text/plain": {"schema": {
                    "type": "string"}}}},
                "400": {"description": "Bad request"}, "401": {"description": "No auth"},
                "403": {"description": "Refused"}, "404": {"description": "Unknown"},
                "503": {"description": "Broker unreachable"}},
        }
        if route.action and route.handler in (send_task, async_apply):
            operation["requestBody"] = {"content": {"application/json": {"schema": {
                "type": "object", "properties": {"args": {"type": "array"},
                                                 "kwargs": {"type": "object"}}}}}}
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    paths["/metrics"] = {"get": {"summary": "Prometheus metrics", "responses": {
        "200": {"description": "OK", "content": {"text/plain": {"schema": {
            "type": "string"}}}}}}}
    return {"openapi": "3.1.0", "info": {"title": "Tidings web monitor", "version": version},
            "paths": paths,
            "components": {"securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer"}}}}


def endpoint(monitor: Any, route: Route) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint for one route."""

    async def serve(request: Request) -> Response:
        try:
            params = await Params.read(request)
            result = await route.handler(monitor, request, params)
        except ApiError as exc:
            return json_response({"error": exc.message}, exc.status)
        if isinstance(result, Response):
            return result
        return json_response(result)

    return serve

