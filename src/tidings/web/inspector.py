"""What the workers answer to inspect, kept for the web pages and ``/api/workers``.

The cache has Flower's shape: ``{worker: {"stats": ..., "active_queues": ...,
"registered": ..., "conf": ..., "timestamp": t}}``; when one worker is asked
for, its task lists (``scheduled``, ``active``, ``reserved``, ``revoked``)
are fetched too, as Flower does (they can be long).  Commands go out in
parallel, each in a thread of a small pool, so a refresh costs one timeout,
not eight.

Differences from Flower, and why:

- The cache holds at most ``max_workers`` workers (those answering last are
  dropped first): a cluster with thousands of short-lived worker names
  otherwise grows it forever.
- A broker that cannot be reached raises :class:`InspectUnavailable`, which
  the API answers as 503, as Flower does; an error in one command does not
  lose the others' answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["ALL_METHODS", "METHODS", "InspectUnavailable", "WorkerInspector"]

logger = logging.getLogger("tidings.web")

#: Inspected for every worker on a refresh.
METHODS = ("stats", "active_queues", "registered", "conf")
#: Also inspected when one worker is asked for.
ALL_METHODS = (*METHODS, "scheduled", "active", "reserved", "revoked")
#: Seconds a refresh waits for the workers' replies (Flower's ``--inspect_timeout``).
INSPECT_TIMEOUT = 1.0


class InspectUnavailable(RuntimeError):
    """No command could be sent (the broker is not reachable)."""


class WorkerInspector:
    """``WorkerInspector(app, max_workers=5000)``: ``refresh(name=None)``, ``workers``."""

    def __init__(self, app: Any, *, max_workers: int = 5000,
                 timeout: float = INSPECT_TIMEOUT) -> None:
        self.app = app
        self.timeout = timeout
        self.max_workers = max_workers
        #: Bounded by ``max_workers`` (least recently answering dropped first).
        self._workers: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=len(ALL_METHODS),
                                        thread_name_prefix="tidings-web-inspect")

    @property
    def workers(self) -> dict[str, dict[str, Any]]:
        """A copy of the cache."""
        with self._lock:
            return {name: dict(info) for name, info in self._workers.items()}

    def knows(self, name: str) -> bool:
        with self._lock:
            return name in self._workers

    def refresh(self, name: str | None = None) -> dict[str, dict[str, Any]]:
        """Ask the workers (or ``name``) again; returns the updated cache."""
        methods = ALL_METHODS if name else METHODS
        inspect = self.app.control.inspect(destination=[name] if name else None,
                                           timeout=self.timeout)

        def ask(method: str) -> tuple[str, Any]:
            call = getattr(inspect, method)
            return method, call(safe=True) if method == "active" else call()

        futures = [self._pool.submit(ask, m) for m in methods]
        failures = []
        for future in futures:
            try:
                method, replies = future.result()
            except Exception as exc:  # the broker, most likely: keep the other answers
                failures.append(exc)
                continue
            self._store(method, replies or {})
        if failures and len(failures) == len(futures):
            raise InspectUnavailable(str(failures[0]))
        return self.workers

    def _store(self, method: str, replies: dict[str, Any]) -> None:
        now = time.time()
        with self._lock:
            for worker, reply in replies.items():
                if not isinstance(worker, str):
                    continue
                info = self._workers.pop(worker, None) or {}
                info[method] = reply
                info["timestamp"] = now
                self._workers[worker] = info
            while len(self._workers) > self.max_workers:
                self._workers.popitem(last=False)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
