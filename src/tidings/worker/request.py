"""A task message a worker is handling: the parsed request, its message and its task."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..protocol.tasks import TaskRequest

__all__ = ["Request"]


class Request:
    """A task message being handled: the parsed request plus its message and state."""

    def __init__(self, req: TaskRequest, message: Any, task: Any) -> None:
        self.req = req
        self.message = message
        self.task = task
        self.acked = False
        self.started_at: float | None = None

    @property
    def id(self) -> str:
        return self.req.id

    @property
    def name(self) -> str:
        return self.req.name

    @property
    def acks_late(self) -> bool:
        return bool(self.task is not None and self.task.acks_late)

    def ack(self) -> None:
        if not self.acked:
            self.acked = True
            self.message.ack()

    def reject(self, requeue: bool = False) -> None:
        if not self.acked:
            self.acked = True
            self.message.reject(requeue=requeue)

    def expired(self, now: datetime | None = None) -> bool:
        expires = self.req.expires
        return expires is not None and (now or datetime.now(timezone.utc)) >= expires
