"""Queue figures for the metrics: lengths, consumers, and the workers and processes serving them.

* Length and consumers come from a passive queue declaration, which needs no
  management plugin: on RabbitMQ it answers the message and consumer counts;
  on Redis kombu sums the queue's list and its priority sub-queues (``LLEN``
  of each), which celery-exporter misses.  Consumers are published for
  RabbitMQ only (a Redis list has no consumers to count).
* Workers and processes per queue come from the workers' own answers to
  ``active_queues`` and ``stats`` (remote control), when they answer them.

A refresh runs in a thread of its own every ``interval`` seconds (and when
a scrape asks for one), so a scrape never waits for the broker.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from kombu.exceptions import ChannelError

from ..control import broadcast
from .collector import ClusterMetrics

__all__ = ["QUEUE_REFRESH_INTERVAL", "QueueMonitor"]

logger = logging.getLogger("tidings.metrics.queues")

#: Seconds between refreshes of the queue figures.
QUEUE_REFRESH_INTERVAL = 15.0
#: Seconds to wait for the workers' answers to active_queues and stats.
INSPECT_TIMEOUT = 2.0
#: Transports whose passive declaration reports a consumer count worth showing.
CONSUMER_COUNT_DRIVERS = frozenset({"amqp"})


class QueueMonitor:
    """Refreshes the queue gauges of a :class:`ClusterMetrics` from the broker."""

    def __init__(self, app: Any, metrics: ClusterMetrics, queues: Iterable[str] = (), *,
                 interval: float = QUEUE_REFRESH_INTERVAL,
                 inspect_timeout: float = INSPECT_TIMEOUT) -> None:
        self.app = app
        self.metrics = metrics
        self.queues: set[str] = set(queues)
        self.interval = interval
        self.inspect_timeout = inspect_timeout
        self.refreshes = 0
        self.failures = 0
        #: pool size per node from its last ``stats`` answer: a node that answers
        #: ``active_queues`` but not ``stats`` in time keeps its last figure
        self._pool_sizes: dict[str, int] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the thread ----------------------------------------------------------------------

    def start(self) -> QueueMonitor:
        self._thread = threading.Thread(target=self._run, name="tidings-queue-monitor",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.interval + self.inspect_timeout * 2 + 5)

    def poke(self) -> None:
        """Ask for a refresh now (a scrape came); returns at once."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as exc:  # the broker is away: try again next time
                self.failures += 1
                logger.warning("Queue figures not refreshed: %r", exc)
            self._wake.wait(self.interval)
            self._wake.clear()

    # -- one refresh ---------------------------------------------------------------------

    def refresh(self) -> None:
        with self.app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            workers, processes = self._served(conn)
            queues = self.queues | self.metrics.known_queues() | set(workers)
            counts_consumers = conn.transport.driver_type in CONSUMER_COUNT_DRIVERS
            channel = conn.channel()
            try:
                for queue in sorted(queues):
                    length, consumers, channel = _declare_passive(conn, channel, queue)
                    self.metrics.set_queue(queue, length,
                                           consumers if counts_consumers else None,
                                           workers.get(queue, 0), processes.get(queue, 0))
            finally:
                try:
                    channel.close()
                except Exception:
                    pass
        self.refreshes += 1

    def _served(self, conn: Any) -> tuple[dict[str, int], dict[str, int]]:
        """Workers and pool processes per queue, from the workers' answers."""
        conf, clock = self.app.conf, self.app.clock
        stats = _merge(broadcast(conf, clock, conn, "stats", reply=True,
                                 timeout=self.inspect_timeout))
        active = _merge(broadcast(conf, clock, conn, "active_queues", reply=True,
                                  timeout=self.inspect_timeout))
        for node, reply in stats.items():
            pool = reply.get("pool") if isinstance(reply, dict) else None
            procs = pool.get("processes") if isinstance(pool, dict) else None
            if isinstance(procs, list):
                self._pool_sizes[node] = len(procs)
        workers: dict[str, int] = defaultdict(int)
        processes: dict[str, int] = defaultdict(int)
        for node, queues in active.items():
            if not isinstance(queues, list):
                continue
            size = self._pool_sizes.get(node, 0)
            for info in queues:
                name = info.get("name") if isinstance(info, dict) else None
                if isinstance(name, str):
                    self.queues.add(name)
                    workers[name] += 1
                    processes[name] += size
        return workers, processes


def _merge(replies: list[dict[str, Any]] | None) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for reply in replies or ():
        if isinstance(reply, dict):
            merged.update(reply)
    return merged


def _declare_passive(conn: Any, channel: Any, queue: str) -> tuple[int, int, Any]:
    """``(messages, consumers, channel)``; a missing queue counts 0 (and costs a channel)."""
    try:
        ok = channel.queue_declare(queue=queue, passive=True)
        return ok.message_count, ok.consumer_count, channel
    except (ChannelError, *conn.channel_errors):
        # RabbitMQ closes the channel on NOT_FOUND; Redis just has no such list
        try:
            channel.close()
        except Exception:
            pass
        return 0, 0, conn.channel()
