"""Tasks and the client side: ``@app.task``, ``delay``, ``apply_async``, ``send_task``.

Messages are Celery protocol v2 (see :mod:`tidings.protocol.tasks`), published
to the default exchange with the queue name as routing key, as Celery does.
With ``task_send_sent_event`` on, a ``task-sent`` event follows each message
on the same channel, at once, as in Celery; with ``task_sent_event_max_delay``
(ours) as well, batched on a connection of its own (see
:mod:`tidings.events.sent`).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kombu import Producer

from .events.dispatcher import EventDispatcher
from .events.sent import SentEvents
from .protocol.control import parse_rate
from .protocol.events import TASK_SENT
from .protocol.tasks import DEFAULT_QUEUE, TASK_DELIVERY_MODE, TaskMessage, build_message
from .transport import Declarations, task_queue
from .utils.nodenames import anon_nodename

if TYPE_CHECKING:
    from .app import App

#: Celery's default publish retry policy (task_publish_retry_policy).
PUBLISH_RETRY_POLICY = {"max_retries": 3, "interval_start": 0, "interval_max": 1,
                        "interval_step": 0.2}


class Retry(Exception):
    """Raised by :meth:`Task.retry`: run the task again later."""

    def __init__(self, message: str | None = None, exc: BaseException | None = None,
                 when: float | None = None) -> None:
        self.exc = exc
        self.when = when
        super().__init__(message or f"Retry in {when}s: {exc!r}")


class Reject(Exception):
    """Raise from a task to reject its message (requeued if ``requeue``)."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)

    def __repr__(self) -> str:
        return f"reject requeue={self.requeue}: {self.reason}"


class MaxRetriesExceededError(Exception):
    """The task asked to retry more than ``max_retries`` times."""


class NotRegistered(KeyError):
    """No task of that name is known to this worker."""

    def __repr__(self) -> str:
        return f"NotRegistered({self.args[0]!r})"


class AsyncResult:
    """A handle on a sent task (there is no result backend: only its id)."""

    def __init__(self, task_id: str, name: str) -> None:
        self.id = task_id
        self.name = name

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"


class RequestContext(threading.local):
    """``task.request`` inside a running task: id, retries, args, kwargs, hostname ..."""

    id: str | None = None
    retries: int = 0
    args: list | None = None
    kwargs: dict | None = None
    hostname: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    eta: Any = None
    expires: Any = None


class Task:
    """A registered task (made by ``@app.task``)."""

    def __init__(self, app: App, fun: Callable[..., Any], name: str, bind: bool = False,
                 max_retries: int | None = 3, default_retry_delay: float = 180,
                 acks_late: bool = False, ignore_result: bool = False,
                 queue: str | None = None, rate_limit: str | float | None = None,
                 time_limit: float | None = None, soft_time_limit: float | None = None,
                 ) -> None:
        self.app = app
        self.run = fun
        self.name = name
        self.bind = bind
        self.max_retries = max_retries
        self.default_retry_delay = default_retry_delay
        self.acks_late = acks_late
        self.ignore_result = ignore_result
        self.queue = queue
        if rate_limit is not None:
            parse_rate(rate_limit)  # a bad rate fails here, not in the worker
        #: Celery's task attributes; a worker reads them for each task it runs,
        #: so ``rate_limit``/``time_limit`` remote commands change them in place.
        self.rate_limit = rate_limit
        self.time_limit = time_limit
        self.soft_time_limit = soft_time_limit
        self.exchange: str | None = None
        self.routing_key: str | None = None
        self.send_events = True
        self.request = RequestContext()
        functools.update_wrapper(self, fun)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.bind:
            return self.run(self, *args, **kwargs)
        return self.run(*args, **kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def apply_async(self, args: tuple | list | None = None, kwargs: dict | None = None,
                    countdown: float | None = None, eta: datetime | None = None,
                    expires: datetime | float | None = None, queue: str | None = None,
                    task_id: str | None = None, **options: Any) -> AsyncResult:
        request = self.request
        parent_id = options.pop("parent_id", request.id)
        root_id = options.pop("root_id", request.root_id if request.id else None)
        return self.app.send_task(self.name, args, kwargs, countdown=countdown, eta=eta,
                                  expires=expires, queue=queue or self.queue, task_id=task_id,
                                  parent_id=parent_id, root_id=root_id,
                                  ignore_result=self.ignore_result, **options)

    def retry(self, exc: BaseException | None = None, countdown: float | None = None,
              max_retries: int | None = None, **options: Any) -> Retry:
        """Ask for this task to run again in ``countdown`` seconds; raises :class:`Retry`."""
        request = self.request
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} "
                f"kwargs:{request.kwargs}")
        when = self.default_retry_delay if countdown is None else countdown
        raise Retry(exc=exc, when=when)


def task_decorator(app: App, *args: Any, **options: Any) -> Any:
    def make(fun: Callable[..., Any]) -> Task:
        name = options.pop("name", None) or f"{fun.__module__}.{fun.__qualname__}"
        task = Task(app, fun, name, **options)
        app.tasks[name] = task
        return task

    if len(args) == 1 and callable(args[0]) and not options:
        return make(args[0])
    return make


#: Task queues a client publishes to, remembered by name (their entities cost
#: more to build than to publish with; least recently used first out).
TASK_QUEUES_CACHED = 256
_task_queue = functools.lru_cache(maxsize=TASK_QUEUES_CACHED)(task_queue)


class Publisher:
    """Publishes task messages, one connection per thread, declared queues cached."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._local = threading.local()
        #: The ``task-sent`` events of every thread when batched (``task_sent_event_max_delay``).
        self.sent_events = SentEvents(app)

    def _producer(self) -> Producer:
        producer = getattr(self._local, "producer", None)
        if producer is None:
            conn = self.app.connection_for_write()
            producer = Producer(conn)
            self._local.conn = conn
            self._local.producer = producer
            self._local.declarations = Declarations()
        return producer

    def close(self) -> None:
        """Release this thread's connection, and publish the ``task-sent`` events waiting."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.release()
        self._local.__dict__.clear()
        self.sent_events.close()

    def publish(self, message: TaskMessage, sent_event: bool | None = None) -> None:
        app = self.app
        producer = self._producer()
        queue = self._local.declarations.for_producer(producer, _task_queue(message.queue))
        props = dict(message.properties)
        if message.expiration is not None:
            props["expiration"] = message.expiration
        producer.publish(
            message.body, exchange="", routing_key=message.queue, headers=message.headers,
            declare=[queue], serializer="json", delivery_mode=TASK_DELIVERY_MODE,
            retry=True, retry_policy=PUBLISH_RETRY_POLICY, **props,
        )
        if app.conf.task_send_sent_event if sent_event is None else sent_event:
            headers = message.headers
            fields = {
                "uuid": headers["id"], "root_id": headers["root_id"],
                "parent_id": headers["parent_id"], "name": headers["task"],
                "args": headers["argsrepr"], "kwargs": headers["kwargsrepr"],
                "retries": headers["retries"], "eta": headers["eta"],
                "expires": headers["expires"], "queue": message.queue, "exchange": "",
                "routing_key": message.queue,
            }
            if app.conf.task_sent_event_max_delay:
                self.sent_events.send(fields)  # batched, on a connection of their own
            else:  # Celery's way: at once, on the task's channel
                self._sent_dispatcher(producer).publish(
                    TASK_SENT, fields, producer, retry=True,
                    retry_policy=PUBLISH_RETRY_POLICY)

    def _sent_dispatcher(self, producer: Producer) -> EventDispatcher:
        dispatcher = getattr(self._local, "dispatcher", None)
        hostname = anon_nodename()  # per call: a forked child reports its own pid
        if dispatcher is None or dispatcher.hostname != hostname:
            dispatcher = EventDispatcher(producer.connection, hostname=hostname, app=self.app,
                                         enabled=False)
            self._local.dispatcher = dispatcher
        return dispatcher


def send_task(app: App, name: str, args: tuple | list | None = None,
              kwargs: dict | None = None, *, queue: str | None = None, **options: Any
              ) -> AsyncResult:
    message = build_message(name, args, kwargs,
                            queue=queue or app.conf.task_default_queue or DEFAULT_QUEUE,
                            **options)
    app.publisher.publish(message)
    return AsyncResult(message.headers["id"], name)
