"""The worker: consume task messages, run them in a pool, call lifecycle hooks.

Everything that touches the broker happens in the worker's own thread:
consuming, acknowledging, publishing events and retries, answering remote
control.  Pools report outcomes through a queue that this thread drains
between polls of the connection, so a kombu channel is never shared between
threads.

A received task goes through three holding places before a pool slot: the
ETA timers (``inspect scheduled``), its rate limit's line, and the ready
line (both ``inspect reserved``).  Messages held for an ETA or a rate limit
raise the channel's prefetch count by one each, as Celery does for ETA
tasks, so held tasks never stop other tasks from arriving.
"""

from __future__ import annotations

import faulthandler
import heapq
import itertools
import logging
import os
import signal
import threading
import time
from collections import Counter, deque
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from kombu import Connection, Consumer, Queue
from kombu.common import QoS

from ..events.dispatcher import EventDispatcher
from ..protocol.events import (
    DELIVERY_MODE,
    HEARTBEAT_INTERVAL,
    PERSISTENT,
    TASK_GROUP,
    WORKER_GROUP,
)
from ..protocol.tasks import BadMessage, build_message, parse_message
from ..transport import (
    Reconnector,
    Status,
    control_mailbox,
    first_connect_retries,
    redact_url,
    task_queue,
    waitable_fd,
)
from ..utils.nodenames import nodename
from .autoscale import Autoscaler
from .control import CONTROL_HANDLERS, ShutdownRequested
from .hooks import EventsMiddleware, Middleware
from .outcome import Failed, Outcome, Rejected, Retried, Succeeded, Terminated
from .outcomes import Outcomes
from .pool import POOLS, BasePool, Job
from .ratelimits import RateLimits
from .request import Request, decode_body
from .revoked import Revoked
from .surface import ControlSurface

if TYPE_CHECKING:
    from ..app import App

__all__ = ["Worker"]

logger = logging.getLogger("tidings.worker")

#: Task events are published as ``task.multi`` batches of at most this many.
TASK_EVENT_BATCH = 100
#: Task event batches go when the worker is about to wait for work, when
#: full, or when the oldest event has waited the batch delay (seconds): the
#: first figure whenever the worker has no work waiting, doubling while it
#: has, up to the second (the dispatcher's adaptive batching). At moderate
#: rates monitors see events within a few milliseconds; a busy worker sends
#: a few full batches rather than one small one every 2 ms, which it and
#: every consumer pay for per message.
TASK_EVENT_MAX_DELAY = 0.002
TASK_EVENT_MAX_WINDOW = 0.064
#: Seconds the broker is polled per loop turn when no task runs.
IDLE_POLL = 0.05
#: While tasks run, per loop turn: seconds the broker is read for (first, where
#: its socket cannot be waited for with the finished jobs: see ``Worker._poll``),
#: and milliseconds the wait for a finished job (or a message) lasts at most.
BUSY_BROKER_POLL = 0.0005
BUSY_OUTCOME_WAIT_MS = 2
#: Seconds a warm shutdown waits for running tasks.
WARM_SHUTDOWN_TIMEOUT = 3600.0
#: Seconds a worker stopped between two connections tries to connect once more,
#: to say ``worker-offline`` (see ``Worker._farewell``).
FAREWELL_TIMEOUT = 2.0


class Worker(ControlSurface):
    """``Worker(app, hostname=None, concurrency=None, pool='prefork', queues=None, ...)``."""

    def __init__(self, app: App, hostname: str | None = None, concurrency: int | None = None,
                 pool: str = "prefork", queues: list[str] | None = None,
                 task_events: bool | None = None, heartbeat: bool = True,
                 heartbeat_interval: float = HEARTBEAT_INTERVAL, prefetch_multiplier: int = 4,
                 middleware: list[Middleware] | None = None,
                 autoscale: tuple[int, int] | None = None) -> None:
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r} (choose from {', '.join(POOLS)})")
        self.app = app
        self.hostname = nodename(hostname)
        # solo runs one task at a time in this thread, whatever -c says (as Celery's)
        self.concurrency = 1 if pool == "solo" else concurrency or os.cpu_count() or 1
        self.autoscaler: Autoscaler | None = None
        if autoscale is not None:
            if not POOLS[pool].can_resize:
                raise ValueError(f"the {pool} pool cannot autoscale")
            self.autoscaler = Autoscaler(self, *autoscale)
            self.concurrency = self.autoscaler.min
        self.pool_name = pool
        self.queues = list(queues or [app.conf.task_default_queue])
        #: The kombu queues consumed (add_consumer/cancel_consumer change them).
        self.task_queues: list[Queue] = [task_queue(q) for q in self.queues]
        self.task_events = (app.conf.worker_send_task_events if task_events is None
                            else task_events)
        self.heartbeat_enabled = heartbeat
        self.heartbeat_interval = heartbeat_interval
        self.prefetch_multiplier = prefetch_multiplier
        self.middleware: list[Middleware] = [EventsMiddleware(), *(middleware or [])]
        self.revoked = Revoked()
        self.processed = 0
        self.total: Counter[str] = Counter()  # tasks started, by name (stats: total)
        self.startup_time = time.time()
        self.rate_limits = RateLimits(app.conf)
        self.qos: QoS | None = None
        self._hard_limit_warned: set[str] = set()  # bounded by the registered task names
        self.consumer: Consumer | None = None
        self.connection: Connection | None = None
        self.dispatcher: EventDispatcher | None = None
        self._done = Outcomes()
        self._wait_both = False  # see _poll
        self._requests: dict[str, Request] = {}
        self._waiting: deque[Request] = deque()  # ready to run, waiting for a pool slot
        self._timers: list[tuple[float, int, Request]] = []
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._stop_now = False
        self._said_goodbye = False  # worker-offline sent
        self.pool: BasePool = POOLS[pool](app, self.concurrency, self._on_done)
        self.ready = threading.Event()

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
        return bool(d and d.enabled and (not d.groups or TASK_GROUP in d.groups))

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

        def cold(signum: int, frame: Any) -> None:
            logger.warning("Cold shutdown (SIGQUIT): stopping now")
            self.stop(immediately=True)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGQUIT, cold)  # Celery's cold shutdown
        # As Celery's SIGUSR1: every thread's stack to stderr, here written from C, so
        # even while the worker's thread is stuck (prefork children inherit it).
        faulthandler.register(signal.SIGUSR1, all_threads=True)

    def run(self) -> None:
        """Run until :meth:`stop`; reconnects when the broker connection is lost."""
        self.pool.start()
        try:
            loop = Reconnector(self.app.connection_for_write, self._stop,
                               label=redact_url(self.app.conf.broker_url),
                               first_retries=first_connect_retries(self.app.conf),
                               on_status=self._log_status)
            loop.run(self._run_connected, on_lost=lambda exc: self._forget_unacked())
        finally:
            if self._stop_now:
                self.pool.kill()
            else:
                self.pool.stop()
            self._farewell()

    def _farewell(self) -> None:
        """Stopped between two connections (the last one was lost): ``worker-offline``,
        and the events still held, go over one quick connection if the broker takes
        it, so monitors need not wait for missed heartbeats to see the worker gone."""
        if self._said_goodbye or self.dispatcher is None or self._stop_now:
            return  # said; never connected (no monitor saw it); or asked to stop now
        try:
            with self._event_connection(connect_timeout=FAREWELL_TIMEOUT) as conn:
                conn.ensure_connection(max_retries=1, interval_start=0)
                self._setup_dispatcher(conn)
                self._say_goodbye()
        except Exception as exc:  # the broker is gone as well
            logger.warning("Stopped without a broker: worker-offline not sent (%r)", exc)

    def _log_status(self, status: Status) -> None:
        logger.log(logging.INFO if status.ok else logging.ERROR, "%s", status)

    def _setup_dispatcher(self, conn: Any) -> None:
        """Events get a connection of their own (as in Celery).

        py-amqp polls its connection before every publish; on the consuming
        connection that would deliver task messages in the middle of
        publishing an event batch.
        """
        previous = self.dispatcher
        groups = None if self.task_events else {WORKER_GROUP}
        if previous is not None:
            groups = previous.groups  # remote enable/disable survives reconnects
        self.dispatcher = EventDispatcher(
            conn, hostname=self.hostname, app=self.app,
            delivery_mode=PERSISTENT if self.app.conf.worker_events_confirm else DELIVERY_MODE,
            enabled=bool(self.task_events or self.heartbeat_enabled),
            groups=groups, buffer_group=[TASK_GROUP], buffer_limit=TASK_EVENT_BATCH,
            max_delay=TASK_EVENT_MAX_DELAY, max_window=TASK_EVENT_MAX_WINDOW,
            batch_timer=False)
        if previous is not None:
            self.dispatcher.extend_buffer(previous)
            previous.close()

    def _event_connection(self, **kwargs: Any) -> Connection:
        options = None
        if self.app.conf.worker_events_confirm:  # py-amqp waits for each publish's ack
            options = {**self.app.conf.broker_transport_options, "confirm_publish": True}
        return self.app.connection_for_write(transport_options=options, **kwargs)

    def _run_connected(self, conn: Connection) -> None:
        with self._event_connection() as event_conn:
            event_conn.ensure_connection(max_retries=3)
            self._run_consuming(conn, event_conn)

    def _run_consuming(self, conn: Any, event_conn: Any) -> None:
        self._setup_dispatcher(event_conn)
        channel = conn.channel()
        self.connection = conn
        self._wait_both = self._done.watch(waitable_fd(conn))
        self.qos = QoS(lambda prefetch_count: channel.basic_qos(0, prefetch_count, False),
                       self._prefetch_for(self.pool.size) + self._held_count())
        self.qos.update()
        consumer = self.consumer = Consumer(
            channel, list(self.task_queues), on_message=self._on_message,
            accept=self.app.conf.accept_content, on_decode_error=self._on_decode_error)
        consumer.consume()
        control_channel = conn.channel()
        node = self._control_node(control_channel)
        node.listen(callback=None)
        if not self.ready.is_set():
            logger.warning("%s ready: pool %s (%d), queues %s, task events %s",
                           self.hostname, self.pool_name, self.concurrency,
                           ",".join(self.queues), "ON" if self.task_events else "OFF")
        self.hook("worker_online")
        self.dispatcher.flush()
        self.ready.set()
        next_beat = time.monotonic() + self.heartbeat_interval
        try:
            while not self._stop.is_set():
                idle = self._poll(conn)
                self._tick()
                if self.autoscaler is not None:
                    self.autoscaler.maybe_scale()
                self.qos.update()
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + self.heartbeat_interval
                    self.hook("worker_heartbeat")
                # Task event batches that waited their delay go now (this loop
                # is the dispatcher's timer: no thread to contend for the GIL).
                self.dispatcher.flush_due(idle=idle)
                if self.dispatcher.failed_sends:  # sends that failed: retry them
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

        While jobs run, one wait is for the pool's outcomes, its processes'
        pipes (read by this thread) and, where it tells of a message, the
        broker's socket (elsewhere the broker is read briefly first; see
        :mod:`.outcomes`): a finished job is handled at once.
        """
        done, pool = self._done, self.pool
        if pool.active:
            if not self._wait_both and self._drain(conn, BUSY_BROKER_POLL):
                return False
            if done.empty() and not self._waiting:
                # About to wait for a job, no work held back: not loaded.
                self.dispatcher.flush_due(idle=True)
            message, ready = done.wait(BUSY_OUTCOME_WAIT_MS if done.empty() else 0,
                                       pool.fds())
            pool.collect(ready)
            if message:
                self._drain(conn, BUSY_BROKER_POLL)
                return False
            return done.empty()
        fds = pool.fds()
        if fds:  # no job runs: only a retired process's exit to take, if any
            pool.collect(done.wait(0, fds)[1])
        if self.dispatcher.buffered:
            # About to wait: unless the broker has more for us already (a busy
            # worker's prefetched messages; a poll that does not wait), what is
            # batched goes first.
            if self._drain(conn, 0):
                return False
            self.dispatcher.flush_idle()
        due = self.rate_limits.next_due() if self.rate_limits else None
        if self._drain(conn, IDLE_POLL if due is None else min(IDLE_POLL, max(due, 0.001))):
            return False
        conn.heartbeat_check()
        return True

    def _drain(self, conn: Any, timeout: float) -> bool:
        """Handle what the broker sent within ``timeout``; False if nothing came."""
        try:
            conn.drain_events(timeout=timeout)
        except TimeoutError:
            return False
        except ShutdownRequested:  # the shutdown command; the stop flag is set
            pass
        return True

    def _shutdown(self, conn: Any, consumer: Consumer) -> None:
        """Stop consuming, let running tasks finish, say goodbye."""
        try:
            consumer.cancel()
        except Exception:
            pass
        if self._stop_now:
            self.pool.kill()
        deadline = time.monotonic() + WARM_SHUTDOWN_TIMEOUT
        while self.pool.active and not self._stop_now and time.monotonic() < deadline:
            self._poll(conn)  # reads the outcomes of a pool the worker's thread reads
            self._tick(start_new=False)
        self._tick(start_new=False)
        # Messages held for an ETA or a free slot were never acked: the broker
        # gives them back when this channel closes.
        self._say_goodbye()

    def _say_goodbye(self) -> None:
        """``worker-offline``, and every event still held, out now."""
        self.hook("worker_offline")
        self.dispatcher.flush()
        self._said_goodbye = True

    def _forget_unacked(self) -> None:
        """After a lost connection, unacked messages will be redelivered: drop them here."""
        self._waiting = deque(r for r in self._waiting if r.acked)
        self._timers = [t for t in self._timers if t[2].acked]
        heapq.heapify(self._timers)
        self.rate_limits.forget(lambda r: r.acked)
        for task_id, request in list(self._requests.items()):
            if not request.acked and task_id not in self.pool.active:
                del self._requests[task_id]

    # -- remote control --------------------------------------------------------------------

    def _control_node(self, channel: Any) -> Any:
        mailbox = control_mailbox(self.app.conf, self.app.clock)
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

    def _on_message(self, message: Any) -> None:
        try:
            req = parse_message(message.headers, decode_body(message))
        except BadMessage as exc:
            logger.error("Rejected an invalid task message: %s (headers %r)", exc,
                         {k: message.headers.get(k) for k in ("task", "id")})
            message.reject(requeue=False)
            return
        except Exception as exc:  # the body could not be decoded (as kombu reports it)
            self._on_decode_error(message, exc)
            return
        task = self.app.tasks.get(req.name)
        request = Request(req, message, task)
        if task is None:
            logger.error("Received unregistered task %r (id %s): message rejected. Is the "
                         "task's module imported by this worker (-A)?", req.name, req.id)
            self.hook("task_unregistered", request)
            request.reject(requeue=False)
            return
        if self._discarded(request):
            return
        logger.info("Task %s[%s] received", req.name, req.id)
        self._requests[req.id] = request
        self.hook("task_received", request)
        if req.eta is not None and req.eta > datetime.now(timezone.utc):
            heapq.heappush(self._timers, (req.eta.timestamp(), next(self._seq), request))
            self._hold()
        else:
            self._ready(request)

    def _ready(self, request: Request) -> None:
        """Into the ready line, unless its rate limit makes it wait for a token."""
        if self.rate_limits.admit(request):
            self._waiting.append(request)
        else:
            self._hold()

    def _hold(self) -> None:
        if self.qos is not None:
            self.qos.increment_eventually()

    def _unhold(self) -> None:
        if self.qos is not None:
            self.qos.decrement_eventually()

    def _held_count(self) -> int:
        return len(self._timers) + len(self.rate_limits)

    def _prefetch_for(self, size: int) -> int:
        if self.autoscaler is not None:
            size = max(size, self.autoscaler.max)
        return size * self.prefetch_multiplier

    def _discarded(self, request: Request) -> bool:
        """Drop a revoked or expired task (checked at receipt and again before it runs)."""
        expired = request.expired()
        if not expired and request.id not in self.revoked:
            return False
        logger.info("Discarding revoked task %s[%s]%s", request.name, request.id,
                    " (expired)" if expired else "")
        self._requests.pop(request.id, None)
        self.hook("task_revoked", request, terminated=False, signum=None, expired=expired)
        request.ack()
        return True

    def _tick(self, start_new: bool = True) -> None:
        """Handle finished jobs, due ETA tasks, and start what fits in the pool."""
        for job, outcome in self._done.take():
            self._finished(job, outcome)
        now = time.time()
        while self._timers and self._timers[0][0] <= now:
            _, _, request = heapq.heappop(self._timers)
            self._unhold()
            self._ready(request)
        for request in self.rate_limits.due(self.pool.free - len(self._waiting)):
            self._unhold()
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
        self.total[req.name] += 1
        if not request.acks_late:
            request.ack()
        self.hook("task_started", request)
        context = {"id": req.id, "retries": req.retries, "args": req.args,
                   "kwargs": req.kwargs, "hostname": self.hostname, "root_id": req.root_id,
                   "parent_id": req.parent_id, "eta": req.eta, "expires": req.expires}
        hard, soft = self._time_limits(request)
        if hard and not self.pool.can_terminate and req.name not in self._hard_limit_warned:
            self._hard_limit_warned.add(req.name)
            logger.warning("Task %s has a hard time limit (%ss): the %s pool cannot stop a "
                           "running task, only its soft limit applies", req.name, hard,
                           self.pool.name)
        job = Job(req.id, req.name, req.args, req.kwargs, context, soft_limit=soft,
                  hard_limit=hard)
        self.pool.apply(job)
        request.worker_pid = job.pid

    def _time_limits(self, request: Request) -> tuple[float | None, float | None]:
        """The message's limits, else the task's, else the settings' (Celery's order)."""
        req, task, conf = request.req, request.task, self.app.conf
        hard = (req.time_limit or getattr(task, "time_limit", None)
                or conf.get("task_time_limit"))
        soft = (req.soft_time_limit or getattr(task, "soft_time_limit", None)
                or conf.get("task_soft_time_limit"))
        return hard, soft

    def _on_done(self, job: Job, outcome: Outcome) -> None:
        if self.pool.name == "solo":  # in this thread, one job at a time
            self._finished(job, outcome)
        else:
            self._done.put((job, outcome))

    def _finished(self, job: Job, outcome: Outcome) -> None:
        request = self._requests.pop(job.id, None)
        if request is None:
            return
        match outcome:
            case Succeeded(result, runtime):
                logger.info("Task %s[%s] succeeded in %.4fs: %s", job.name, job.id, runtime,
                            result)
                self.hook("task_succeeded", request, result, runtime)
                request.ack()
            case Failed(exc, tb, _runtime):
                logger.error("Task %s[%s] raised unexpected: %s\n%s", job.name, job.id, exc,
                             tb or "")
                self.hook("task_failed", request, exc, tb)
                request.ack()
            case Retried(exc, tb, countdown):
                self._republish_retry(request, countdown)
                logger.info("Task %s[%s] retry in %ss: %s", job.name, job.id, countdown, exc)
                self.hook("task_retried", request, exc, tb)
                request.ack()
            case Rejected(reason, requeue, tb):
                logger.warning("Task %s[%s] rejected (requeue=%s): %s", job.name, job.id,
                               requeue, reason)
                if request.acked:
                    return  # acked early: nothing left to reject (as in Celery)
                if not requeue:
                    self.hook("task_failed", request, reason, tb)
                request.reject(requeue=requeue)
                self.hook("task_rejected", request, requeue)
            case Terminated(signum):
                logger.warning("Task %s[%s] terminated by signal %s", job.name, job.id,
                               signum)
                self.revoked.add(job.id)
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
            queue=(request.message.delivery_info.get("routing_key")
                   or self.app.conf.task_default_queue))
        self.app.publisher.publish(message)
