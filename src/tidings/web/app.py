"""The ASGI application: pages, API, live stream, metrics and static files.

Flower's paths (``/``, ``/workers``, ``/worker/{name}``, ``/tasks``,
``/task/{id}``, ``/broker``), plus ``/failures``; the API of :mod:`.api`;
``/api/live`` (Server-Sent Events, :mod:`.live`); ``/metrics``
(the metrics module's exposition) and ``/api/openapi.json``.  Mounted under
``--url-prefix`` when one is given, behind :class:`~.security.SecurityMiddleware`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .._version import __version__
from ..protocol.events import WORKER_STATE_FIELDS
from . import pages, views
from .api import ROUTES, endpoint, json_response, openapi_document
from .inspector import InspectUnavailable
from .live import sse_stream
from .security import SecurityMiddleware
from .tasks import task_json

__all__ = ["build_app"]

STATIC = Path(__file__).with_name("static")


def build_app(monitor: Any) -> Any:
    prefix = monitor.options.url_prefix.rstrip("/")
    access = monitor.access

    def page(request: Request, title: str, body: str, name: str,
             extra: dict[str, str] | None = None, status: int = 200) -> HTMLResponse:
        return HTMLResponse(pages.layout(
            title, body, prefix=prefix, csrf=request.scope["state"]["csrf_token"],
            read_only=access.read_only, page=name, extra=extra), status_code=status)

    async def dashboard(request: Request) -> Response:
        d = await run_in_threadpool(views.dashboard, monitor)
        return page(request, "Dashboard", pages.dashboard_page(d, prefix), "/")

    async def tasks(request: Request) -> Response:
        return page(request, "Tasks", pages.tasks_page(), "/tasks")

    async def task(request: Request) -> Response:
        uuid = request.path_params["uuid"]
        detail = await run_in_threadpool(views.task_detail, monitor.state, uuid)
        if detail is None:
            return page(request, "Unknown task", f"<p>No task {pages.e(uuid)} in memory.</p>",
                        "/tasks", status=404)
        return page(request, f"Task {detail['fields'].get('name') or uuid}",
                    pages.task_page_html(detail, prefix, access.read_only), "/tasks",
                    {"task": uuid})

    async def worker(request: Request) -> Response:
        name = request.path_params["name"]
        events = await run_in_threadpool(_worker_fields, monitor.state, name)
        error = None
        try:
            info = (await run_in_threadpool(monitor.inspector.refresh, name)).get(name)
        except InspectUnavailable as exc:
            info, error = None, f"the broker did not answer: {exc}"
        if info is None and events is None and error is None:
            return page(request, "Unknown worker", f"<p>No worker {pages.e(name)}.</p>", "/",
                        status=404)
        return page(request, f"Worker {name}",
                    pages.worker_page(name, info, events, prefix, access.read_only, error),
                    "/", {"worker": name})

    async def failures(request: Request) -> Response:
        groups = await run_in_threadpool(views.failures, monitor.state)
        return page(request, "Failures", pages.failures_page(groups, prefix), "/failures")

    async def broker(request: Request) -> Response:
        queues = await run_in_threadpool(monitor.queue_lengths)
        return page(request, "Broker", pages.broker_page(queues, monitor.source.label),
                    "/broker")

    async def live(request: Request) -> Response:
        def read(ids: set[str]) -> str:
            state = monitor.state
            found = [t for t in (state.tasks.get(u) for u in ids) if t is not None]
            rows = state.read_tasks(found, task_json)
            return json.dumps({r["uuid"]: r for r in rows}, default=str)

        async def gone() -> bool:  # the page left, or the server is stopping
            return monitor.closing.is_set() or await request.is_disconnected()

        stream = sse_stream(monitor.changes, read, monitor.summary_json, gone)
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    async def metrics(request: Request) -> Response:
        monitor.metrics.before_scrape()
        body = await run_in_threadpool(generate_latest, monitor.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return json_response(openapi_document(__version__))

    routes: list[Any] = [
        Route("/", dashboard), Route("/workers", dashboard), Route("/tasks", tasks),
        Route("/task/{uuid:path}", task), Route("/worker/{name:path}", worker),
        Route("/failures", failures), Route("/broker", broker),
        Route("/api/live", live), Route("/metrics", metrics),
        Route("/api/openapi.json", openapi),
        *(Route(r.path.replace("{uuid}", "{uuid:path}").replace("{name}", "{name:path}"),
                endpoint(monitor, r), methods=[r.method]) for r in ROUTES),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=[Mount(prefix, routes=routes)] if prefix else routes)
    return SecurityMiddleware(app, access, prefix)


def _worker_fields(state: Any, name: str) -> dict[str, Any] | None:
    def read() -> dict[str, Any] | None:
        worker = dict.get(state.workers, name)
        if worker is None:
            return None
        fields = {f: getattr(worker, f) for f in WORKER_STATE_FIELDS if f != "heartbeats"}
        fields["alive"] = worker.alive
        fields["last_heartbeat"] = worker.heartbeats[-1] if worker.heartbeats else None
        return fields

    return state.freeze_while(read)
