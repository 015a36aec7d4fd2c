"""Lifecycle hooks of a worker, and the subscriber that turns them into events.

The execution code never sends events: it calls hooks (``task_received``,
``task_started`` ... ``worker_offline``) on each :class:`Middleware` the
worker has.  :class:`EventsMiddleware` is one of them; metrics or logging
subscribe the same way, by overriding the hooks they care about.
"""

from __future__ import annotations

import math
import os
import platform
from typing import TYPE_CHECKING, Any

from .. import __version__

if TYPE_CHECKING:
    from .worker import Request, Worker


class Middleware:
    """Override the hooks you need; each receives the worker first."""

    def worker_online(self, worker: Worker) -> None: ...

    def worker_heartbeat(self, worker: Worker, remote: bool = False) -> None: ...

    def worker_offline(self, worker: Worker) -> None: ...

    def task_received(self, worker: Worker, request: Request) -> None: ...

    def task_started(self, worker: Worker, request: Request) -> None: ...

    def task_succeeded(self, worker: Worker, request: Request, result: str,
                       runtime: float) -> None: ...

    def task_failed(self, worker: Worker, request: Request | None, exception: str,
                    traceback: str | None, task_id: str | None = None) -> None: ...

    def task_retried(self, worker: Worker, request: Request, exception: str,
                     traceback: str) -> None: ...

    def task_rejected(self, worker: Worker, request: Request, requeue: bool) -> None: ...

    def task_revoked(self, worker: Worker, request: Request, terminated: bool,
                     signum: int | None, expired: bool) -> None: ...


def loadavg() -> list[float]:
    """1/5/15-minute load averages rounded up to 2 decimals (Celery's rounding)."""
    try:
        return [math.ceil(x * 100) / 100 for x in os.getloadavg()]
    except (OSError, AttributeError):
        return [0.0, 0.0, 0.0]


class EventsMiddleware(Middleware):
    """Sends Celery 5.7's events for every hook, through the worker's dispatcher."""

    sw_ident = "py-tidings"

    def _worker_fields(self, worker: Worker) -> dict[str, Any]:
        return {"freq": worker.heartbeat_interval, "active": worker.active_count,
                "processed": worker.processed, "loadavg": loadavg(),
                "sw_ident": self.sw_ident, "sw_ver": __version__, "sw_sys": platform.system()}

    def worker_online(self, worker: Worker) -> None:
        worker.dispatcher.send("worker-online", **self._worker_fields(worker))

    def worker_heartbeat(self, worker: Worker, remote: bool = False) -> None:
        # A remote-asked heartbeat carries every field and the real frequency
        # (Celery's says freq=5 and leaves out active/processed/loadavg).
        worker.dispatcher.send("worker-heartbeat", **self._worker_fields(worker))

    def worker_offline(self, worker: Worker) -> None:
        worker.dispatcher.send("worker-offline", **self._worker_fields(worker))

    def task_received(self, worker: Worker, request: Request) -> None:
        r = request.req
        worker.dispatcher.send(
            "task-received", uuid=r.id, name=r.name, args=r.argsrepr, kwargs=r.kwargsrepr,
            root_id=r.root_id, parent_id=r.parent_id, retries=r.retries,
            eta=r.eta.isoformat() if r.eta else None,
            expires=r.expires.isoformat() if r.expires else None)

    def task_started(self, worker: Worker, request: Request) -> None:
        worker.dispatcher.send("task-started", uuid=request.id)

    def task_succeeded(self, worker: Worker, request: Request, result: str,
                       runtime: float) -> None:
        worker.dispatcher.send("task-succeeded", uuid=request.id, result=result,
                               runtime=runtime)

    def task_failed(self, worker: Worker, request: Request | None, exception: str,
                    traceback: str | None, task_id: str | None = None) -> None:
        fields: dict[str, Any] = {"uuid": task_id or request.id,  # type: ignore[union-attr]
                                  "exception": exception}
        if traceback is not None:
            fields["traceback"] = traceback
        worker.dispatcher.send("task-failed", **fields)

    def task_retried(self, worker: Worker, request: Request, exception: str,
                     traceback: str) -> None:
        worker.dispatcher.send("task-retried", uuid=request.id, exception=exception,
                               traceback=traceback)

    def task_rejected(self, worker: Worker, request: Request, requeue: bool) -> None:
        worker.dispatcher.send("task-rejected", uuid=request.id, requeue=requeue)

    def task_revoked(self, worker: Worker, request: Request, terminated: bool,
                     signum: int | None, expired: bool) -> None:
        worker.dispatcher.send("task-revoked", uuid=request.id, terminated=terminated,
                               signum=signum, expired=expired)
