"""Soft time limits: :class:`SoftTimeLimitExceeded` raised inside a running task.

Two mechanisms, one per kind of pool:

- in a prefork child, the task runs in the child's main thread, so a
  ``SIGALRM`` timer (:func:`run_with_alarm`) raises the exception; it
  interrupts blocking calls such as ``time.sleep``;
- in the threads and solo pools, a watchdog (:class:`ThreadInterrupts`)
  raises it asynchronously in the task's thread
  (``PyThreadState_SetAsyncExc``).  CPython delivers such an exception
  when the thread next runs Python code, so a task blocked in one long C
  call (a ``time.sleep(60)``) sees it only when that call returns.  Celery's
  threads pool has no time limits at all.

In both, an exception that fires just as the task returns is absorbed: the
task's own outcome stands and the exception never escapes into the pool.
Hard limits are the prefork pool's (it kills the child); see
:mod:`tidings.worker.pool`.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from typing import Any

from ..exceptions import SoftTimeLimitExceeded
from ..utils.timer import Timer
from .outcome import Failed, Outcome

__all__ = ["SOFT_LIMIT_FAILED", "ThreadInterrupts", "run_with_alarm"]

#: The outcome of a task stopped by its soft limit outside its own code.
SOFT_LIMIT_FAILED = Failed(repr(SoftTimeLimitExceeded()), None)

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)


class _Ticket:
    """One task's soft limit in one thread: fires at most once, never after disarm."""

    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id
        self.lock = threading.Lock()
        self.armed = True
        self.fired = False

    def fire(self) -> None:
        with self.lock:
            if self.armed and not self.fired:
                self.fired = True
                _set_async_exc(self.thread_id, SoftTimeLimitExceeded)

    def disarm(self) -> None:
        with self.lock:
            self.armed = False
            if self.fired:  # posted but maybe not yet raised: take it back
                _set_async_exc(self.thread_id, ctypes.py_object())


class ThreadInterrupts:
    """Soft limits for tasks run by threads of this process (threads and solo pools)."""

    def __init__(self) -> None:
        self.timer = Timer(name="tidings-soft-limits")

    def run(self, fun: Any, soft_limit: float | None) -> Outcome:
        """``fun()`` (an outcome), with ``SoftTimeLimitExceeded`` after ``soft_limit`` s."""
        if not soft_limit:
            return fun()
        ticket = _Ticket(threading.get_ident())
        entry = self.timer.call_after(soft_limit, ticket.fire)
        outcome: Outcome | None = None
        try:
            outcome = fun()
            ticket.disarm()
        except SoftTimeLimitExceeded:  # raised after the task's own handlers
            ticket.disarm()
        entry.cancel()
        return outcome if outcome is not None else SOFT_LIMIT_FAILED

    def stop(self) -> None:
        self.timer.stop()


class _Alarm:
    armed = False


def _on_alarm(signum: int, frame: Any) -> None:
    if _Alarm.armed:
        _Alarm.armed = False
        raise SoftTimeLimitExceeded()


def run_with_alarm(fun: Any, soft_limit: float | None) -> Outcome:
    """In a prefork child's main thread: ``fun()`` with a ``SIGALRM`` soft limit."""
    if not soft_limit:
        return fun()
    signal.signal(signal.SIGALRM, _on_alarm)
    outcome: Outcome | None = None
    try:
        _Alarm.armed = True
        signal.setitimer(signal.ITIMER_REAL, soft_limit)
        outcome = fun()
        _Alarm.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
    except SoftTimeLimitExceeded:  # fired after the task's own handlers
        _Alarm.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
    return outcome if outcome is not None else SOFT_LIMIT_FAILED
