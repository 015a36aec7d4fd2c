"""Lifecycle hooks of a worker, and the subscriber that turns them into events.

The execution code never sends events: it calls hooks (``task_received``,
``task_started`` ... ``worker_offline``) on each :class:`Middleware` the
worker has, always, whether events are enabled or not.
:class:`EventsMiddleware` is one of them and decides what to send (task
events only while they are enabled and the task sends events; worker events
unless the worker runs without heartbeats); metrics or logging subscribe
the same way, by overriding the hooks they care about.
"""

from __future__ import annotations

import math
import os
import platform
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..protocol.loss import DROPPED_FIELD

if TYPE_CHECKING:
    from .request import Request
    from .worker import Worker

__all__ = ["EventsMiddleware", "Middleware", "loadavg"]


class Middleware:
    """Override the hooks you need; each receives the worker first.

    Hooks (all called in the worker's thread, an exception is logged and
    ignored): ``worker_online``, ``worker_heartbeat`` (``remote=True`` when a
    client asked for it), ``worker_offline``, ``task_received``,
    ``task_started``, ``task_succeeded``, ``task_failed``, ``task_retried``,
    ``task_rejected``, ``task_revoked``, and ``task_unregistered`` (a message
    for a task this worker does not know; it is rejected).
    """

    def worker_online(self, worker: Worker) -> None: ...

    def worker_heartbeat(self, worker: Worker, remote: bool = False) -> None: ...

    def worker_offline(self, worker: Worker) -> None: ...

    def task_received(self, worker: Worker, request: Request) -> None: ...

    def task_started(self, worker: Worker, request: Request) -> None: ...

    def task_succeeded(self, worker: Worker, request: Request, result: str,
                       runtime: float) -> None: ...

    def task_failed(self, worker: Worker, request: Request, exception: str,
                    traceback: str | None) -> None: ...

    def task_retried(self, worker: Worker, request: Request, exception: str,
                     traceback: str) -> None: ...

    def task_rejected(self, worker: Worker, request: Request, requeue: bool) -> None: ...

    def task_revoked(self, worker: Worker, request: Request, terminated: bool,
                     signum: int | None, expired: bool) -> None: ...

    def task_unregistered(self, worker: Worker, request: Request) -> None: ...


def loadavg() -> list[float]:
    """1/5/15-minute load averages rounded up to 2 decimals (Celery's rounding)."""
    try:
        return [math.ceil(x * 100) / 100 for x in os.getloadavg()]
    except (OSError, AttributeError):
        return [0.0, 0.0, 0.0]


class EventsMiddleware(Middleware):
    """Sends Celery 5.7's events for every hook, through the worker's dispatcher."""

    sw_ident = "py-tidings"

    @staticmethod
    def _task_events(worker: Worker, request: Request) -> bool:
        task = request.task
        return worker.task_events_enabled and (task is None or task.send_events)

    def _worker_fields(self, worker: Worker) -> dict[str, Any]:
        dispatcher = worker.dispatcher
        return {"freq": worker.heartbeat_interval, "active": worker.active_count,
                "processed": worker.processed, "loadavg": loadavg(),
                "sw_ident": self.sw_ident, "sw_ver": __version__, "sw_sys": platform.system(),
                # events no receiver can see missing (protocol/loss.py); Celery ignores it
                DROPPED_FIELD: dispatcher.dropped if dispatcher is not None else 0}

    def _send_worker_event(self, worker: Worker, type_: str) -> None:
        dispatcher = worker.dispatcher
        if worker.heartbeat_enabled and dispatcher is not None and dispatcher.enabled:
            dispatcher.send_fields(type_, self._worker_fields(worker))

    def worker_online(self, worker: Worker) -> None:
        self._send_worker_event(worker, "worker-online")

    def worker_heartbeat(self, worker: Worker, remote: bool = False) -> None:
        # A remote-asked heartbeat carries every field and the real frequency
        # (Celery's says freq=5 and leaves out active/processed/loadavg).  It
        # is sent even by a worker without periodic heartbeats: it was asked.
        dispatcher = worker.dispatcher
        if remote and dispatcher is not None and dispatcher.enabled:
            dispatcher.send_fields("worker-heartbeat", self._worker_fields(worker))
        elif not remote:
            self._send_worker_event(worker, "worker-heartbeat")

    def worker_offline(self, worker: Worker) -> None:
        self._send_worker_event(worker, "worker-offline")

    def task_received(self, worker: Worker, request: Request) -> None:
        if not self._task_events(worker, request):
            return
        r = request.req
        worker.dispatcher.send_fields("task-received", {
            "uuid": r.id, "name": r.name, "args": r.argsrepr, "kwargs": r.kwargsrepr,
            "root_id": r.root_id, "parent_id": r.parent_id, "retries": r.retries,
            "eta": r.eta.isoformat() if r.eta else None,
            "expires": r.expires.isoformat() if r.expires else None})

    def task_started(self, worker: Worker, request: Request) -> None:
        if self._task_events(worker, request):
            worker.dispatcher.send_fields("task-started", {"uuid": request.id})

    def task_succeeded(self, worker: Worker, request: Request, result: str,
                       runtime: float) -> None:
        if self._task_events(worker, request):
            worker.dispatcher.send_fields("task-succeeded", {
                "uuid": request.id, "result": result, "runtime": runtime})

    def task_failed(self, worker: Worker, request: Request, exception: str,
                    traceback: str | None) -> None:
        if not self._task_events(worker, request):
            return
        fields: dict[str, Any] = {"uuid": request.id, "exception": exception}
        if traceback is not None:
            fields["traceback"] = traceback
        worker.dispatcher.send_fields("task-failed", fields)

    def task_retried(self, worker: Worker, request: Request, exception: str,
                     traceback: str) -> None:
        if self._task_events(worker, request):
            worker.dispatcher.send_fields("task-retried", {
                "uuid": request.id, "exception": exception, "traceback": traceback})

    def task_rejected(self, worker: Worker, request: Request, requeue: bool) -> None:
        if self._task_events(worker, request):
            worker.dispatcher.send_fields("task-rejected", {"uuid": request.id, "requeue": requeue})

    def task_revoked(self, worker: Worker, request: Request, terminated: bool,
                     signum: int | None, expired: bool) -> None:
        if self._task_events(worker, request):
            worker.dispatcher.send_fields("task-revoked", {
                "uuid": request.id, "terminated": terminated, "signum": signum,
                "expired": expired})

    def task_unregistered(self, worker: Worker, request: Request) -> None:
        # Reported as a failure, so monitors show the task and why it never ran.
        self.task_failed(worker, request, f"NotRegistered({request.name!r})", None)
