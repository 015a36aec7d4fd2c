"""A thread that calls functions at intervals or once after a delay.

Cameras use it for their shutter and cleanup, the prefork pool for hard
time limits.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("tidings.timer")


class Entry:
    """A scheduled call (repeating unless ``interval`` is None); :meth:`cancel` stops it."""

    def __init__(self, timer: Timer, interval: float | None, fun: Callable[[], Any]) -> None:
        self.timer = timer
        self.interval = interval
        self.fun = fun
        self.cancelled = False

    def __call__(self) -> Any:
        return self.fun()

    def cancel(self) -> None:
        self.cancelled = True
        self.timer._wake()


class Timer:
    """One daemon thread running repeating entries; an error in one is logged, not fatal.

    Entries run one at a time, so a slow call delays the others instead of
    piling up; a call that overruns its interval is not repeated to catch up.
    """

    def __init__(self, name: str = "tidings-timer") -> None:
        self.name = name
        self._queue: list[tuple[float, int, Entry]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def call_repeatedly(self, interval: float, fun: Callable[[], Any]) -> Entry:
        if interval <= 0:
            raise ValueError("interval must be positive")
        entry = Entry(self, interval, fun)
        with self._cond:
            heapq.heappush(self._queue, (time.monotonic() + interval, next(self._seq), entry))
            self._start()
            self._cond.notify()
        return entry

    def call_after(self, delay: float, fun: Callable[[], Any]) -> Entry:
        """Call ``fun`` once, ``delay`` seconds from now (unless cancelled before)."""
        entry = Entry(self, None, fun)
        with self._cond:
            heapq.heappush(self._queue, (time.monotonic() + max(delay, 0.0), next(self._seq),
                                         entry))
            self._start()
            self._cond.notify()
        return entry

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    self._queue = [q for q in self._queue if not q[2].cancelled]
                    heapq.heapify(self._queue)
                    if self._queue and self._queue[0][0] <= time.monotonic():
                        _, _, entry = heapq.heappop(self._queue)
                        break
                    timeout = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._cond.wait(timeout)
                else:
                    return
            try:
                entry()
            except Exception:
                logger.exception("Error in timer call %r", entry.fun)
            with self._cond:
                if not entry.cancelled and entry.interval is not None:
                    heapq.heappush(self._queue, (time.monotonic() + entry.interval,
                                                 next(self._seq), entry))
