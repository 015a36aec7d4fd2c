"""``tidings exporter``: events in, Prometheus metrics out, until stopped.

Wires an event source (the app's broker, reconnecting forever), a bounded
:class:`~tidings.events.state.State`, the :class:`ClusterMetrics` fed from
it, the queue refresher and the HTTP server.  The server is up before the
broker is reached and stays up while the broker is away: ``/metrics`` keeps
serving what is known, ``/health`` says 503 until events flow again.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..events.source import BrokerSource, EventSource
from ..transport import Link, Status
from .collector import ClusterMetrics
from .queues import QueueMonitor
from .server import MetricsServer, metrics_app

__all__ = ["Exporter", "source_health"]

logger = logging.getLogger("tidings.metrics")


def source_health(source: EventSource) -> tuple[bool, dict[str, Any]]:
    """``(ok, details)``: whether events flow from ``source``, and what it says."""
    status = source.status
    ok = status is not None and status.link is Link.CONNECTED
    return ok, {
        "status": "ok" if ok else "unavailable",
        "broker": source.label,
        "connection": status.link.value if status is not None else "connecting",
        "detail": status.text if status is not None else "",
        "events": source.event_count,
        "lost": source.losses.as_dict(),
        "reconnects": source.reconnects,
    }


class Exporter:
    """``Exporter(app, metrics, queues=(), address=..., port=..., queue_interval=...)``."""

    def __init__(self, app: Any, metrics: ClusterMetrics, *, queues: tuple[str, ...] = (),
                 address: str, port: int, queue_interval: float,
                 source: EventSource | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.source = source or BrokerSource(app, connect_retries=None)
        metrics.watch_source(self.source)
        self.queue_monitor = QueueMonitor(app, metrics, queues, interval=queue_interval)
        self.server = MetricsServer(
            metrics_app(metrics, self.health, before_scrape=self.queue_monitor.poke),
            address, port)

    def health(self) -> tuple[bool, dict[str, Any]]:
        return source_health(self.source)

    def run(self, stop: threading.Event, on_status: Any = None) -> None:
        """Serve until ``stop`` is set."""
        self.server.start()
        self.queue_monitor.start()
        logger.info("Serving metrics at %s/metrics", self.server.url)
        try:
            self.source.run(self.metrics.handle, stop, on_status=on_status or _log_status)
        finally:
            self.queue_monitor.stop()
            self.server.close()


def _log_status(status: Status) -> None:
    logger.log(logging.INFO if status.ok else logging.WARNING, "%s", status)
