"""The worker: consume task messages, run them in a pool, call lifecycle hooks.

Everything that touches the broker happens in the worker's own thread:
consuming, acknowledging, publishing events and retries, answering remote
control.  Pools report outcomes through a queue that this thread drains
between polls of the connection, so a kombu channel is never shared between
threads.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections import OrderedDict, deque
from datetime import datetime, timedelta, timezone
from typing import Any

from kombu import Consumer, Exchange, Queue
from kombu.pidbox import Mailbox

from ..app import App
from ..events.dispatcher import EventDispatcher
from ..protocol.tasks import BadMessage, TaskRequest, build_message, parse_message
from .control import CONTROL_HANDLERS
from .hooks import EventsMiddleware, Middleware
from .pool import POOLS, BasePool, Job, Outcome

logger = logging.getLogger("tidings.worker")

REVOKES_MAX = 50_000
REVOKE_EXPIRES = 3 * 3600.0


class Revoked:
    """Ids of revoked tasks: bounded (oldest forgotten first) and expiring."""

    def __init__(self, maxlen: int = REVOKES_MAX, expires: float = REVOKE_EXPIRES) -> None:
        self.maxlen = maxlen
        self.expires = expires
        self._ids: OrderedDict[str, float] = OrderedDict()

    def add(self, task_id: str) -> None:
        self._ids[task_id] = time.monotonic()
        self._ids.move_to_end(task_id)
        while len(self._ids) > self.maxlen:
            self._ids.popitem(last=False)

    def __contains__(self, task_id: object) -> bool:
        added = self._ids.get(task_id)  # type: ignore[call-overload]
        if added is None:
            return False
        if time.monotonic() - added > self.expires:
            del self._ids[task_id]  # type: ignore[arg-type]
            return False
        return True

    def __len__(self) -> int:
        return len(self._ids)


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


def nodename(name: str | None) -> str:
    """``-n`` value with ``%h`` (host), ``%n`` (short host), ``%d`` (domain) expanded."""
    host = socket.gethostname()
    if not name:
        return f"tidings@{host}"
    short, _, domain = host.partition(".")
    name = name.replace("%h", host).replace("%n", short).replace("%d", domain)
    return name if "@" in name else f"{name}@{host}"


class Worker:
    """``Worker(app, hostname=None, concurrency=None, pool='prefork', queues=None, ...)``."""

    def __init__(self, app: App, hostname: str | None = None, concurrency: int | None = None,
                 pool: str = "prefork", queues: list[str] | None = None,
                 task_events: bool | None = None, heartbeat: bool = True,
                 heartbeat_interval: float = 2.0, prefetch_multiplier: int = 4,
                 middleware: list[Middleware] | None = None) -> None:
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r} (choose from {', '.join(POOLS)})")
        self.app = app
        self.hostname = nodename(hostname)
        self.concurrency = concurrency or (1 if pool == "solo" else os.cpu_count() or 1)
        self.pool_name = pool
        self.queues = list(queues or [app.conf.task_default_queue])
        self.task_events = (app.conf.worker_send_task_events if task_events is None
                            else task_events)
        self.heartbeat_enabled = heartbeat
        self.heartbeat_interval = heartbeat_interval
        self.prefetch_multiplier = prefetch_multiplier
        self.middleware: list[Middleware] = [EventsMiddleware(), *(middleware or [])]
        self.revoked = Revoked()
        self.processed = 0
        self.dispatcher: EventDispatcher | None = None
        self._done: queue.SimpleQueue[tuple[Job, Outcome]] = queue.SimpleQueue()
        self._requests: dict[str, Request] = {}
        self._waiting: deque[Request] = deque()  # ready to run, waiting for a pool slot
        self._timers: list[tuple[float, int, Request]] = []
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._stop_now = False
        self.pool: BasePool = POOLS[pool](app, self.concurrency, self._on_done)
        self.ready = threading.Event()
        self._first_buffered: float | None = None

    # -- hooks -----------------------------------------------------------------------------

    def hook(self, name: str, *args: Any, **kwargs: Any) -> None:
        for middleware in self.middleware:
            try:
                getattr(middleware, name)(self, *args, **kwargs)
            except Exception:
                logger.exception("Hook %s of %r failed", name, middleware)

    @property
    def active_count(self) -> int:
        return len(self.pool.active)

    @property
    def task_events_enabled(self) -> bool:
        d = self.dispatcher
        return bool(d and d.enabled and (not d.groups or "task" in d.groups))

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self, immediately: bool = False) -> None:
        """Warm shutdown (finish running tasks); ``immediately`` kills them."""
        if immediately or self._stop.is_set():
            self._stop_now = True
        self._stop.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            if self._stop.is_set():
                logger.warning("Cold shutdown (second signal): stopping now")
                self.stop(immediately=True)
            else:
                logger.warning("Warm shutdown: finishing running tasks (again to stop now)")
                self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> None:
        """Run until :meth:`stop`; reconnects when the broker connection is lost."""
        self.pool.start()
        try:
            delay = 1.0
            while not self._stop.is_set():
                conn = self.app.connection_for_write()
                try:
                    conn.ensure_connection(max_retries=None if self.ready.is_set() else 3,
                                           interval_start=0.5, interval_step=0.5,
                                           interval_max=4)
                    self._run_connected(conn)
                    delay = 1.0
                except (*conn.connection_errors, *conn.channel_errors, OSError) as exc:
                    if self._stop.is_set():
                        break
                    if not self.ready.is_set():
                        raise
                    logger.error("Connection to broker lost (%r); reconnecting in %.0fs",
                                 exc, delay)
                    self._forget_unacked()
                    self._stop.wait(delay)
                    delay = min(delay * 2, 16)
                finally:
                    try:
                        conn.close()
                    except Exception:
                        pass
        finally:
            if self._stop_now:
                self.pool.kill()
            else:
                self.pool.stop()

    def _setup_dispatcher(self, conn: Any) -> None:
        """Events get a connection of their own (as in Celery).

        py-amqp polls its connection before every publish; on the consuming
        connection that would deliver task messages in the middle of
        publishing an event batch.
        """
        previous = self.dispatcher
        groups = None if self.task_events else {"worker"}
        if previous is not None:
            groups = previous.groups  # remote enable/disable survives reconnects
        self.dispatcher = EventDispatcher(
            conn, hostname=self.hostname, app=self.app,
            enabled=bool(self.task_events or self.heartbeat_enabled),
            groups=groups, buffer_group=["task"], buffer_limit=100,
            on_send_buffered=self._on_send_buffered)
        self._first_buffered = None
        if previous is not None:
            self.dispatcher.extend_buffer(previous)
            previous.close()

    def _run_connected(self, conn: Any) -> None:
        event_conn = self.app.connection_for_write()
        try:
            event_conn.ensure_connection(max_retries=3)
            self._run_consuming(conn, event_conn)
        finally:
            try:
                event_conn.close()
            except Exception:
                pass

    def _run_consuming(self, conn: Any, event_conn: Any) -> None:
        self._setup_dispatcher(event_conn)
        channel = conn.channel()
        channel.basic_qos(0, self.concurrency * self.prefetch_multiplier, False)
        task_queues = [Queue(q, Exchange(q, "direct"), routing_key=q, durable=True)
                       for q in self.queues]
        consumer = Consumer(channel, task_queues, callbacks=[self._on_message],
                            accept=self.app.conf.accept_content,
                            on_decode_error=self._on_decode_error)
        consumer.consume()
        control_channel = conn.channel()
        node = self._control_node(control_channel)
        node.listen(callback=None)
        if not self.ready.is_set():
            logger.warning("%s ready: pool %s (%d), queues %s, task events %s",
                           self.hostname, self.pool_name, self.concurrency,
                           ",".join(self.queues), "ON" if self.task_events else "OFF")
        if self.heartbeat_enabled:
            self.hook("worker_online")
        self.dispatcher.flush()
        self.ready.set()
        next_beat = time.monotonic() + self.heartbeat_interval
        try:
            while not self._stop.is_set():
                idle = self._poll(conn)
                self._tick()
                now = time.monotonic()
                if self.heartbeat_enabled and now >= next_beat:
                    next_beat = now + self.heartbeat_interval
                    self.hook("worker_heartbeat")
                # Batch task events: publish when nothing else is happening, or
                # when the oldest buffered event is 90 ms old (the promise is 100).
                first = self._first_buffered
                if first is not None and (idle or now - first >= 0.09):
                    self._first_buffered = None
                    self.dispatcher.flush()
                elif self.dispatcher._outbound_buffer:  # sends that failed: retry them
                    self.dispatcher.flush(groups=False)
            self._shutdown(conn, consumer)
        finally:
            for channel_ in (channel, control_channel):
                try:
                    channel_.close()
                except Exception:
                    pass

    def _poll(self, conn: Any) -> bool:
        """Wait for broker messages or finished jobs; True if nothing happened.

        While jobs run, the broker is polled without blocking and the wait is
        on the pool's outcomes, so a finished job is handled at once (its ack
        lets the broker send the next message).
        """
        if self.pool.active:
            try:
                conn.drain_events(timeout=0.0005)
                return False
            except TimeoutError:
                pass
            try:
                job, outcome = self._done.get(timeout=0.002)
            except queue.Empty:
                return True
            self._finished(job, outcome)
            return False
        try:
            conn.drain_events(timeout=0.05)
            return False
        except TimeoutError:
            conn.heartbeat_check()
            return True

    def _on_send_buffered(self) -> None:
        if self._first_buffered is None:
            self._first_buffered = time.monotonic()

    def _shutdown(self, conn: Any, consumer: Consumer) -> None:
        """Stop consuming, let running tasks finish, say goodbye."""
        try:
            consumer.cancel()
        except Exception:
            pass
        if self._stop_now:
            self.pool.kill()
        deadline = time.monotonic() + 3600
        while self.pool.active and not self._stop_now and time.monotonic() < deadline:
            try:
                conn.drain_events(timeout=0.05)
            except TimeoutError:
                pass
            self._tick(start_new=False)
        self._tick(start_new=False)
        # Messages held for an ETA or a free slot were never acked: the broker
        # gives them back when this channel closes.
        if self.heartbeat_enabled:
            self.hook("worker_offline")
        self.dispatcher.flush()

    def _forget_unacked(self) -> None:
        """After a lost connection, unacked messages will be redelivered: drop them here."""
        self._waiting = deque(r for r in self._waiting if r.acked)
        self._timers = [t for t in self._timers if t[2].acked]
        heapq.heapify(self._timers)
        for task_id, request in list(self._requests.items()):
            if not request.acked and task_id not in self.pool.active:
                del self._requests[task_id]

    # -- remote control --------------------------------------------------------------------

    def _control_node(self, channel: Any) -> Any:
        conf = self.app.conf
        mailbox = Mailbox(conf.control_exchange, type="fanout", accept=conf.accept_content,
                          serializer=conf.task_serializer, clock=self.app.clock,
                          queue_ttl=conf.control_queue_ttl,
                          queue_expires=conf.control_queue_expires,
                          queue_exclusive=conf.control_queue_exclusive,
                          queue_durable=conf.control_queue_durable,
                          reply_queue_ttl=conf.control_queue_ttl,
                          reply_queue_expires=conf.control_queue_expires)
        handlers = {name: self._control_handler(fun) for name, fun in CONTROL_HANDLERS.items()}
        node = mailbox(channel.connection.client).Node(self.hostname, state=self,
                                                       handlers=handlers, channel=channel)
        return node

    def _control_handler(self, fun: Any) -> Any:
        def handle(state: Worker, **kwargs: Any) -> Any:
            self.app.clock.forward()
            return fun(self, **kwargs)
        return handle

    # -- messages --------------------------------------------------------------------------

    def _on_decode_error(self, message: Any, exc: Exception) -> None:
        logger.error("Rejected a task message that cannot be decoded (%s): %s",
                     message.content_type, exc)
        message.reject(requeue=False)

    def _on_message(self, body: Any, message: Any) -> None:
        try:
            req = parse_message(message.headers, body)
        except BadMessage as exc:
            logger.error("Rejected an invalid task message: %s (headers %r)", exc,
                         {k: message.headers.get(k) for k in ("task", "id")})
            message.reject(requeue=False)
            return
        task = self.app.tasks.get(req.name)
        request = Request(req, message, task)
        if task is None:
            logger.error("Received unregistered task %r (id %s): message rejected. Is the "
                         "task's module imported by this worker (-A)?", req.name, req.id)
            self.hook("task_failed", None, f"NotRegistered({req.name!r})", None,
                      task_id=req.id)
            request.reject(requeue=False)
            return
        if self._discarded(request):
            return
        logger.info("Task %s[%s] received", req.name, req.id)
        self._requests[req.id] = request
        if self.task_events_enabled and task.send_events:
            self.hook("task_received", request)
        if req.eta is not None and req.eta > datetime.now(timezone.utc):
            heapq.heappush(self._timers, (req.eta.timestamp(), next(self._seq), request))
        else:
            self._waiting.append(request)

    def _discarded(self, request: Request) -> bool:
        """Drop a revoked or expired task (checked at receipt and again before it runs)."""
        expired = request.expired()
        if not expired and request.id not in self.revoked:
            return False
        logger.info("Discarding revoked task %s[%s]%s", request.name, request.id,
                    " (expired)" if expired else "")
        self._requests.pop(request.id, None)
        if self.task_events_enabled:
            self.hook("task_revoked", request, terminated=False, signum=None, expired=expired)
        request.ack()
        return True

    def _tick(self, start_new: bool = True) -> None:
        """Handle finished jobs, due ETA tasks, and start what fits in the pool."""
        while True:
            try:
                job, outcome = self._done.get_nowait()
            except queue.Empty:
                break
            self._finished(job, outcome)
        now = time.time()
        while self._timers and self._timers[0][0] <= now:
            _, _, request = heapq.heappop(self._timers)
            self._waiting.append(request)
        if not start_new:
            return
        while self._waiting and self.pool.free > 0 and not self._stop.is_set():
            request = self._waiting.popleft()
            if not self._discarded(request):
                self._start(request)

    def _start(self, request: Request) -> None:
        req = request.req
        request.started_at = time.time()
        self.processed += 1
        if not request.acks_late:
            request.ack()
        if self.task_events_enabled and request.task.send_events:
            self.hook("task_started", request)
        context = {"id": req.id, "retries": req.retries, "args": req.args,
                   "kwargs": req.kwargs, "hostname": self.hostname, "root_id": req.root_id,
                   "parent_id": req.parent_id, "eta": req.eta, "expires": req.expires}
        self.pool.apply(Job(req.id, req.name, req.args, req.kwargs, context))

    def _on_done(self, job: Job, outcome: Outcome) -> None:
        self._done.put((job, outcome))
        if self.pool.name == "solo":
            self._finished(*self._done.get_nowait())

    def _finished(self, job: Job, outcome: Outcome) -> None:
        request = self._requests.pop(job.id, None)
        if request is None:
            return
        events = self.task_events_enabled and request.task.send_events
        kind = outcome[0]
        if kind == "success":
            _, result, runtime = outcome
            logger.info("Task %s[%s] succeeded in %.4fs: %s", job.name, job.id, runtime,
                        result)
            if events:
                self.hook("task_succeeded", request, result, runtime)
            request.ack()
        elif kind == "failure":
            _, exc, tb, _runtime = outcome
            logger.error("Task %s[%s] raised unexpected: %s\n%s", job.name, job.id, exc,
                         tb or "")
            if events:
                self.hook("task_failed", request, exc, tb)
            request.ack()
        elif kind == "retry":
            _, exc, tb, countdown = outcome
            self._republish_retry(request, countdown)
            logger.info("Task %s[%s] retry in %ss: %s", job.name, job.id, countdown, exc)
            if events:
                self.hook("task_retried", request, exc, tb)
            request.ack()
        elif kind == "reject":
            _, reason, requeue, tb = outcome
            logger.warning("Task %s[%s] rejected (requeue=%s): %s", job.name, job.id,
                           requeue, reason)
            if request.acked:
                return  # acked early: nothing left to reject (as in Celery)
            if not requeue and events:
                self.hook("task_failed", request, reason, tb)
            request.reject(requeue=requeue)
            if events:
                self.hook("task_rejected", request, requeue)
        elif kind == "terminated":
            _, signum = outcome
            logger.warning("Task %s[%s] terminated by signal %s", job.name, job.id, signum)
            self.revoked.add(job.id)
            if events:
                self.hook("task_revoked", request, terminated=True, signum=signum,
                          expired=False)
            request.ack()

    def _republish_retry(self, request: Request, countdown: float | None) -> None:
        req = request.req
        eta = datetime.now(timezone.utc) + timedelta(seconds=countdown or 0)
        message = build_message(
            req.name, req.args, req.kwargs, task_id=req.id, eta=eta,
            expires=req.expires, retries=req.retries + 1, root_id=req.root_id,
            parent_id=req.id, origin=req.origin,
            queue=request.message.delivery_info.get("routing_key") or self.queues[0])
        self.app.publisher.publish(message)

    # -- control actions -------------------------------------------------------------------

    def terminate(self, task_id: str, signum: int) -> bool:
        return self.pool.terminate(task_id, signum)
