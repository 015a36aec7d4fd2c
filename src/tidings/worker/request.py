"""A task message a worker is handling: the parsed request, its message and its task."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..protocol.tasks import TaskRequest
from ..utils.jsoncodec import JSON_CONTENT_TYPE, TEXT_ENCODINGS
from ..utils.jsoncodec import loads as json_loads

__all__ = ["Request", "decode_body"]

#: A body that names no encoding is left to kombu, whose decoding then decides.
_UTF8 = TEXT_ENCODINGS - {None}


def decode_body(message: Any) -> Any:
    """A task message's body, as kombu's ``message.decode()`` gives it.

    JSON, what Celery sends by default, is decoded by :mod:`~tidings.utils.jsoncodec`
    (orjson when installed), where kombu builds a decoder per message; the
    result is the standard library's, the values kombu's.  A body with a
    ``"__type__"`` key (kombu's encoding of a datetime, a Decimal, bytes ...)
    and any other content type, or JSON the consumer does not accept, go to
    kombu, which turns those into their values or raises as it always did.
    """
    body = message.body
    accept = message.accept
    if (message.content_type == JSON_CONTENT_TYPE and message.content_encoding in _UTF8
            and (accept is None or JSON_CONTENT_TYPE in accept)
            and (b'"__type__"' if body.__class__ is bytes else '"__type__"') not in body):
        return json_loads(body)
    return message.decode()


class Request:
    """A task message being handled: the parsed request plus its message and state."""

    def __init__(self, req: TaskRequest, message: Any, task: Any) -> None:
        self.req = req
        self.message = message
        self.task = task
        self.acked = False
        self.started_at: float | None = None
        self.worker_pid: int | None = None  # the process running it, once started

    def info(self, hostname: str, safe: bool = False) -> dict[str, Any]:
        """What ``inspect active|reserved|scheduled|query_task`` report (Celery's shape).

        ``safe`` gives the argument reprs instead of the arguments themselves.
        """
        req = self.req
        delivery = self.message.delivery_info or {}
        properties = self.message.properties or {}
        return {
            "id": req.id,
            "name": req.name,
            "args": req.argsrepr if safe else req.args,
            "kwargs": req.kwargsrepr if safe else req.kwargs,
            "type": req.name,
            "hostname": hostname,
            "time_start": self.started_at,
            "acknowledged": self.acked,
            "delivery_info": {
                "exchange": delivery.get("exchange"),
                "routing_key": delivery.get("routing_key"),
                "priority": properties.get("priority", delivery.get("priority")),
                "redelivered": delivery.get("redelivered"),
            },
            "worker_pid": self.worker_pid,
        }

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
