"""Execution pools: ``solo`` (in the worker's thread), ``threads``, ``prefork`` (processes).

A pool runs jobs and reports each outcome through ``on_done(job, outcome)``;
the worker queues outcomes and handles them in its own thread.  The solo
and threads pools call it from the thread that ran the job.  The prefork
pool's outcomes come back on its children's pipes, which the worker's
thread waits for beside the broker (:meth:`BasePool.fds`) and reads
(:meth:`BasePool.collect`).  No thread of the pool's own reads them and
hands them over: that hop (a thread to wake, the GIL to hand over, a
queue) held a prefork worker of two processes with ``-E`` to about 2,300
no-op tasks a second, against 2,800-3,200 without it
(``bench/worker_throughput.py``'s worker; see :mod:`.outcomes`).  Only
the prefork pool can stop one running task: it kills the child process
running it with a signal and starts a new child; that is also how it
enforces hard time limits.  Soft time limits work in every
pool (:mod:`tidings.worker.timelimits`).

The threads and prefork pools grow and shrink at run time (``pool_grow``,
``pool_shrink``, the autoscaler); shrinking never stops a running task: a
busy process or thread leaves when its task is done.

Differences from Celery:

- Celery's threads pool ignores time limits; ours enforces soft ones.
- ``pool_shrink`` on a Celery prefork pool fails when every process is
  busy; ours retires busy processes as their tasks end.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from ..exceptions import TimeLimitExceeded
from ..protocol.tasks import saferepr
from ..task import Reject, Retry
from ..utils.parent import die_with_parent
from ..utils.timer import Timer
from .outcome import Failed, Outcome, Rejected, Retried, Succeeded, Terminated
from .timelimits import ThreadInterrupts, run_with_alarm

__all__ = ["POOLS", "BasePool", "Job", "PreforkPool", "SoloPool", "ThreadsPool", "execute"]

logger = logging.getLogger("tidings.worker.pool")

#: Seconds a prefork child is given to exit before it is waited for no more.
CHILD_JOIN_TIMEOUT = 5.0
#: Seconds a stopping prefork pool waits for running tasks to finish.
POOL_STOP_TIMEOUT = 60.0
#: Seconds a stopping prefork pool waits on its children's pipes per look.
COLLECT_INTERVAL = 0.05


@dataclass
class Job:
    id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    context: dict[str, Any]
    pid: int | None = None
    soft_limit: float | None = None  # seconds; None: no limit
    hard_limit: float | None = None


def execute(app: Any, job: Job) -> Outcome:
    """Run one task; never raises.  The outcome says what happened."""
    task = app.tasks.get(job.name)
    if task is None:
        return Failed(f"NotRegistered({job.name!r})", None)
    request = task.request
    for key, value in job.context.items():
        setattr(request, key, value)
    start = time.perf_counter()
    try:
        result = task(*job.args, **job.kwargs)
    except Retry as exc:
        cause = exc.exc if exc.exc is not None else exc
        return Retried(saferepr(cause), traceback.format_exc(), exc.when)
    except Reject as exc:
        return Rejected(repr(exc), exc.requeue, traceback.format_exc())
    except Exception as exc:
        return Failed(saferepr(exc), traceback.format_exc(), time.perf_counter() - start)
    finally:
        request.__dict__.clear()
    return Succeeded(saferepr(result), time.perf_counter() - start)


class BasePool:
    """A pool of ``size`` slots; subclasses run jobs.

    Hooks for subclasses: :meth:`start`, :meth:`apply`, :meth:`terminate`,
    :meth:`grow`, :meth:`shrink`, :meth:`restart`, :meth:`stop`,
    :meth:`kill`, :meth:`info` (the ``pool`` part of ``stats``), and for a
    pool whose outcomes the worker's thread reads, :meth:`fds` and
    :meth:`collect`.
    """

    name = "base"
    can_terminate = False
    can_resize = False

    def __init__(self, app: Any, size: int, on_done: Callable[[Job, Outcome], None]) -> None:
        self.app = app
        self.size = max(1, size)
        self.on_done = on_done
        self.active: dict[str, Job] = {}

    @property
    def free(self) -> int:
        return self.size - len(self.active)

    @property
    def processes(self) -> list[int]:
        return [os.getpid()]

    def start(self) -> None: ...

    def apply(self, job: Job) -> None:
        raise NotImplementedError

    def terminate(self, job_id: str, signum: int) -> bool:
        return False

    def grow(self, n: int) -> None:
        raise NotImplementedError(f"the {self.name} pool cannot grow")

    def shrink(self, n: int) -> None:
        raise NotImplementedError(f"the {self.name} pool cannot shrink")

    def restart(self) -> None:
        """Start fresh processes (after modules were reloaded); threads have none."""

    def fds(self) -> list[int]:
        """Descriptors the worker's thread waits for while jobs run: when one is
        readable, it calls :meth:`collect` with it.  None here: outcomes come
        through ``on_done`` from the pool's threads."""
        return []

    def collect(self, ready: list[int]) -> None:
        """Read the outcomes of the readable :meth:`fds` in ``ready`` (``on_done``
        for each); from the worker's thread."""

    def stop(self) -> None: ...

    def kill(self) -> None:
        self.stop()

    def timeouts(self) -> list[float]:
        conf = self.app.conf
        return [conf.get("task_soft_time_limit") or 0, conf.get("task_time_limit") or 0]

    def info(self) -> dict[str, Any]:
        return {"implementation": f"{type(self).__module__}:{type(self).__name__}",
                "max-concurrency": self.size}


class SoloPool(BasePool):
    """Runs each task in the worker's own thread, one at a time."""

    name = "solo"

    def start(self) -> None:
        self.interrupts = ThreadInterrupts()

    def apply(self, job: Job) -> None:
        self.active[job.id] = job
        job.pid = os.getpid()
        outcome = self.interrupts.run(lambda: execute(self.app, job), job.soft_limit)
        self.active.pop(job.id, None)
        self.on_done(job, outcome)

    def stop(self) -> None:
        self.interrupts.stop()

    def info(self) -> dict[str, Any]:
        return {**super().info(), "max-concurrency": 1, "processes": self.processes,
                "max-tasks-per-child": None, "put-guarded-by-semaphore": True,
                "timeouts": []}


class ThreadsPool(BasePool):
    """Threads of the worker's process; ``size`` of them, changed by grow and shrink."""

    name = "threads"
    can_resize = True

    def start(self) -> None:
        self.interrupts = ThreadInterrupts()
        # Unbounded on purpose: the worker hands out at most ``free`` jobs.
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._add_threads(self.size)

    def _add_threads(self, n: int) -> None:
        for _ in range(n):
            thread = threading.Thread(target=self._serve, daemon=True,
                                      name=f"tidings-task-{len(self._threads) + 1}")
            self._threads.append(thread)
            thread.start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                with self._lock:
                    self._threads.remove(threading.current_thread())
                return
            outcome = self.interrupts.run(lambda job=job: execute(self.app, job),
                                          job.soft_limit)
            self.active.pop(job.id, None)
            self.on_done(job, outcome)

    def apply(self, job: Job) -> None:
        self.active[job.id] = job
        job.pid = os.getpid()
        self._jobs.put(job)

    def grow(self, n: int) -> None:
        with self._lock:
            self.size += n
            self._add_threads(n)

    def shrink(self, n: int) -> None:
        n = min(n, self.size - 1)
        if n <= 0:
            raise ValueError("the pool cannot shrink below one thread")
        self.size -= n
        for _ in range(n):  # a busy thread takes its sentinel after its task
            self._jobs.put(None)

    def stop(self) -> None:
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join()
        self.interrupts.stop()

    def kill(self) -> None:
        for _ in range(len(self._threads)):
            self._jobs.put(None)  # running tasks cannot be stopped; do not wait for them

    def info(self) -> dict[str, Any]:
        return {**super().info(), "threads": len(self._threads)}


def _child_main(app: Any, conn: Connection, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent(signal.SIGKILL, parent)  # a worker killed -9 leaves no child running
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            conn.send((job.id, run_with_alarm(lambda job=job: execute(app, job),
                                              job.soft_limit)))
        except (BrokenPipeError, OSError):
            return
        except Exception as exc:  # the outcome could not be pickled
            conn.send((job.id, Failed(saferepr(exc), traceback.format_exc())))


class _Child:
    def __init__(self, pool: PreforkPool) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=_child_main,
                                   args=(pool.app, child_conn, os.getpid()),
                                   daemon=True, name="tidings-child")
        self.process.start()
        child_conn.close()
        self.job: Job | None = None
        self.killed_with: int | None = None
        self.timed_out: float | None = None  # the hard limit that killed it
        self.deadline: Any = None  # the timer entry of the running job's hard limit
        self.retire = False  # leave after the running job (pool shrunk)
        self.renew = False  # replace after the running job (pool restarted)
        self.writes = 0  # jobs sent to it (stats: writes)


class PreforkPool(BasePool):
    """Child processes (forked), one task at a time each."""

    name = "prefork"
    can_terminate = True
    can_resize = True

    def start(self) -> None:
        self._lock = threading.Lock()
        self._children = [_Child(self) for _ in range(self.size)]
        self._stopping = False
        self._hard_limits = Timer(name="tidings-hard-limits")

    @property
    def processes(self) -> list[int]:
        with self._lock:
            return [c.process.pid for c in self._children if not c.retire]

    def apply(self, job: Job) -> None:
        with self._lock:
            child = next(c for c in self._children if c.job is None and not c.retire)
            child.job = job
            child.writes += 1
            job.pid = child.process.pid
            self.active[job.id] = job
            if job.hard_limit:
                child.deadline = self._hard_limits.call_after(
                    job.hard_limit, lambda: self._hard_timeout(child, job))
        try:
            child.conn.send(job)
        except (BrokenPipeError, OSError) as exc:
            self._finish(child, Failed(saferepr(exc), None))

    def _hard_timeout(self, child: _Child, job: Job) -> None:
        with self._lock:
            if child.job is not job:
                return  # finished in time
            child.timed_out = job.hard_limit
        logger.error("Hard time limit (%ss) exceeded for %s[%s]: killing process %s",
                     job.hard_limit, job.name, job.id, child.process.pid)
        try:
            os.kill(child.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def terminate(self, job_id: str, signum: int) -> bool:
        with self._lock:
            child = next((c for c in self._children if c.job and c.job.id == job_id), None)
            if child is None:
                return False
            child.killed_with = signum
        try:
            os.kill(child.process.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def grow(self, n: int) -> None:
        with self._lock:
            self._children.extend(_Child(self) for _ in range(n))
            self.size += n

    def shrink(self, n: int) -> None:
        with self._lock:
            n = min(n, self.size - 1)
            if n <= 0:
                raise ValueError("the pool cannot shrink below one process")
            self.size -= n
            staying = [c for c in self._children if not c.retire]
            # idle children leave now, busy ones after their task
            for child in sorted(staying, key=lambda c: c.job is not None)[:n]:
                child.retire = True
                if child.job is None:
                    self._send_stop(child)

    def restart(self) -> None:
        with self._lock:
            for child in list(self._children):
                if child.retire:
                    continue
                if child.job is None:
                    child.retire = True
                    self._send_stop(child)
                    self._children.append(_Child(self))
                else:
                    child.renew = True

    @staticmethod
    def _send_stop(child: _Child) -> None:
        try:
            child.conn.send(None)
        except (BrokenPipeError, OSError):
            pass

    def _finish(self, child: _Child, outcome: Outcome) -> None:
        with self._lock:
            job, child.job = child.job, None
            if child.deadline is not None:
                child.deadline.cancel()
                child.deadline = None
            if job is not None:
                self.active.pop(job.id, None)
            if child.renew and not child.retire:
                child.retire = True
                self._children.append(_Child(self))
            if child.retire:
                self._send_stop(child)
        if job is not None:
            self.on_done(job, outcome)

    def fds(self) -> list[int]:
        with self._lock:
            return [c.conn.fileno() for c in self._children]

    def collect(self, ready: list[int]) -> None:
        if not ready:
            return
        with self._lock:
            children = {c.conn.fileno(): c for c in self._children}
        for fd in ready:
            child = children.get(fd)
            if child is None:  # replaced since the wait
                continue
            try:
                _, outcome = child.conn.recv()
            except (EOFError, OSError):
                outcome = None
            except Exception as exc:  # unreadable: the job fails, the worker goes on
                outcome = Failed(f"unreadable outcome from the pool process: {exc!r}", None)
            if outcome is None:
                # outside the except block: the new child is forked from here
                # and must not inherit an exception being handled
                self._replace(child)
                continue
            self._finish(child, outcome)

    def _replace(self, child: _Child) -> None:
        """A child's pipe closed: it exited (retired, killed or crashed).

        The new child takes the old one's place before its job is reported,
        so the worker, starting the next job at once, never picks the dead one.
        """
        child.process.join(CHILD_JOIN_TIMEOUT)
        code = child.process.exitcode
        signum = child.killed_with or (-code if code and code < 0 else None)
        with self._lock:
            index = self._children.index(child)
            if self._stopping or child.retire:
                self._children.pop(index)
            else:
                self._children[index] = _Child(self)
            child.renew = False  # replaced already
        if child.job is not None:
            if child.timed_out is not None:
                outcome: Outcome = Failed(repr(TimeLimitExceeded(child.timed_out)), None)
            elif child.killed_with is not None:
                outcome = Terminated(signum)
            else:
                outcome = Failed(f"WorkerLostError('child exited with {code}')", None)
            child.retire = True  # nothing more is sent to it
            self._finish(child, outcome)
        try:
            child.conn.close()
        except OSError:
            pass

    def stop(self) -> None:
        self._stopping = True
        with self._lock:
            children = list(self._children)
        for child in children:
            self._send_stop(child)
        deadline = time.monotonic() + POOL_STOP_TIMEOUT
        while self.active and time.monotonic() < deadline:
            with self._lock:
                conns = [c.conn for c in self._children]
            try:
                self.collect([c.fileno() for c in wait(conns, timeout=COLLECT_INTERVAL)])
            except OSError:  # a pipe closed meanwhile: look again
                continue
        for child in children:
            child.process.join(CHILD_JOIN_TIMEOUT)
        self._hard_limits.stop()

    def kill(self) -> None:
        self._stopping = True
        with self._lock:
            children = list(self._children)
        for child in children:
            if child.process.is_alive():
                child.process.kill()
        self._hard_limits.stop()

    def info(self) -> dict[str, Any]:
        with self._lock:
            writes = [c.writes for c in self._children if not c.retire]
        total = sum(writes)
        shares = [w / total if total else 0.0 for w in writes]
        return {
            **super().info(),
            "processes": self.processes,
            "max-tasks-per-child": "N/A",
            "put-guarded-by-semaphore": False,
            "timeouts": self.timeouts(),
            "writes": {
                "total": total,
                "avg": f"{(sum(shares) / len(shares) if shares else 0):.2f}",
                "all": ", ".join(f"{s:.2f}" for s in shares) if total else "",
                "raw": ", ".join(str(w) for w in writes) if total else "",
                "strategy": "fair",
                "inqueues": {"total": len(writes), "active": len(self.active)},
            },
        }


POOLS = {"solo": SoloPool, "threads": ThreadsPool, "prefork": PreforkPool}
