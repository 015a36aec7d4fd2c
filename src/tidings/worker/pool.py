"""Execution pools: ``solo`` (in the worker's thread), ``threads``, ``prefork`` (processes).

A pool runs jobs and reports each outcome through ``on_done(job, outcome)``,
called from any thread; the worker queues outcomes and handles them in its
own thread.  Only the prefork pool can stop one running task: it kills the
child process running it with a signal and starts a new child.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from ..protocol.tasks import saferepr
from ..task import Reject, Retry
from .outcome import Failed, Outcome, Rejected, Retried, Succeeded, Terminated

__all__ = ["POOLS", "BasePool", "Job", "PreforkPool", "SoloPool", "ThreadsPool", "execute"]

logger = logging.getLogger("tidings.worker.pool")

#: Seconds a prefork child is given to exit before it is waited for no more.
CHILD_JOIN_TIMEOUT = 5.0
#: Seconds a stopping prefork pool waits for running tasks to finish.
POOL_STOP_TIMEOUT = 60.0
#: Seconds between checks of the children's pipes when nothing arrives.
COLLECT_INTERVAL = 0.5


@dataclass
class Job:
    id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    context: dict[str, Any]
    pid: int | None = None


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
    name = "base"
    can_terminate = False

    def __init__(self, app: Any, size: int, on_done: Callable[[Job, Outcome], None]) -> None:
        self.app = app
        self.size = max(1, size)
        self.on_done = on_done
        self.active: dict[str, Job] = {}

    @property
    def free(self) -> int:
        return self.size - len(self.active)

    def start(self) -> None: ...

    def apply(self, job: Job) -> None:
        raise NotImplementedError

    def terminate(self, job_id: str, signum: int) -> bool:
        return False

    def stop(self) -> None: ...

    def kill(self) -> None:
        self.stop()


class SoloPool(BasePool):
    """Runs each task in the worker's own thread, one at a time."""

    name = "solo"

    def apply(self, job: Job) -> None:
        self.active[job.id] = job
        job.pid = os.getpid()
        outcome = execute(self.app, job)
        self.active.pop(job.id, None)
        self.on_done(job, outcome)


class ThreadsPool(BasePool):
    name = "threads"

    def start(self) -> None:
        self.executor = ThreadPoolExecutor(self.size, thread_name_prefix="tidings-task")

    def apply(self, job: Job) -> None:
        self.active[job.id] = job
        job.pid = os.getpid()
        future = self.executor.submit(execute, self.app, job)

        def done(fut: Any) -> None:
            self.active.pop(job.id, None)
            try:
                outcome = fut.result()
            except BaseException as exc:  # pragma: no cover - execute() never raises
                outcome = Failed(saferepr(exc), None)
            self.on_done(job, outcome)

        future.add_done_callback(done)

    def stop(self) -> None:
        self.executor.shutdown(wait=True)

    def kill(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _child_main(app: Any, conn: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            conn.send((job.id, execute(app, job)))
        except (BrokenPipeError, OSError):
            return
        except Exception as exc:  # the outcome could not be pickled
            conn.send((job.id, Failed(saferepr(exc), traceback.format_exc())))


class _Child:
    def __init__(self, pool: PreforkPool) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=_child_main, args=(pool.app, child_conn),
                                   daemon=True, name="tidings-child")
        self.process.start()
        child_conn.close()
        self.job: Job | None = None
        self.killed_with: int | None = None


class PreforkPool(BasePool):
    """Child processes (forked), one task at a time each."""

    name = "prefork"
    can_terminate = True

    def start(self) -> None:
        self._lock = threading.Lock()
        self._children = [_Child(self) for _ in range(self.size)]
        self._stopping = False
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._collector = threading.Thread(target=self._collect, daemon=True,
                                           name="tidings-pool-collector")
        self._collector.start()

    def apply(self, job: Job) -> None:
        with self._lock:
            child = next(c for c in self._children if c.job is None)
            child.job = job
            job.pid = child.process.pid
            self.active[job.id] = job
        try:
            child.conn.send(job)
        except (BrokenPipeError, OSError) as exc:
            self._finish(child, Failed(saferepr(exc), None))

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

    def _finish(self, child: _Child, outcome: Outcome) -> None:
        with self._lock:
            job, child.job = child.job, None
            if job is not None:
                self.active.pop(job.id, None)
        if job is not None:
            self.on_done(job, outcome)

    def _collect(self) -> None:
        while not (self._stopping and not self.active):
            conns = {c.conn: c for c in list(self._children)}
            try:
                ready = wait([*conns, self._wake_r], timeout=COLLECT_INTERVAL)
            except OSError:
                continue
            for conn in ready:
                if conn is self._wake_r:
                    try:
                        conn.recv()
                    except (EOFError, OSError):
                        pass
                    continue
                child = conns[conn]
                try:
                    _, outcome = conn.recv()
                except (EOFError, OSError):
                    outcome = None
                if outcome is None:
                    # outside the except block: the new child is forked from this
                    # thread and must not inherit an exception being handled
                    self._replace(child)
                    continue
                self._finish(child, outcome)

    def _replace(self, child: _Child) -> None:
        child.process.join(CHILD_JOIN_TIMEOUT)
        code = child.process.exitcode
        signum = child.killed_with or (-code if code and code < 0 else None)
        if child.job is not None:
            if child.killed_with is not None:
                outcome: Outcome = Terminated(signum)
            else:
                outcome = Failed(f"WorkerLostError('child exited with {code}')", None)
            self._finish(child, outcome)
        with self._lock:
            index = self._children.index(child)
            if not self._stopping:
                self._children[index] = _Child(self)
            else:
                self._children.pop(index)

    def stop(self) -> None:
        self._stopping = True
        for child in list(self._children):
            try:
                child.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + POOL_STOP_TIMEOUT
        while self.active and time.monotonic() < deadline:
            time.sleep(0.05)
        for child in list(self._children):
            child.process.join(CHILD_JOIN_TIMEOUT)
        self._wake()

    def kill(self) -> None:
        self._stopping = True
        for child in list(self._children):
            if child.process.is_alive():
                child.process.kill()
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(None)
        except (BrokenPipeError, OSError):
            pass


POOLS = {"solo": SoloPool, "threads": ThreadsPool, "prefork": PreforkPool}
