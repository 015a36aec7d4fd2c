"""``tidings web``'s wiring: events in one thread, HTTP in another, State between them.

Events are read from the broker in a thread of their own and applied to a
bounded :class:`~tidings.events.state.State` through the metrics module's
:class:`~tidings.metrics.ClusterMetrics` (so ``/metrics`` and the pages
count the same things), and each changed task is noted for live pushes.
uvicorn serves HTTP in a second thread; a request reads State under its
lock for the instant it takes to copy what it shows, so ingest never waits
for a client and a client never sees half an event.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..events.source import BrokerSource, EventSource
from ..metrics import ClusterMetrics, QueueMonitor
from ..metrics.exporter import source_health
from ..metrics.queues import QUEUE_REFRESH_INTERVAL
from ..transport import Status
from .inspector import WorkerInspector
from .live import PUSH_INTERVAL, ChangeLog
from .security import Access
from .tasks import RecentTasks
from .views import RateHistory, dashboard

__all__ = ["DEFAULT_ADDRESS", "DEFAULT_PORT", "WebMonitor", "WebOptions"]

logger = logging.getLogger("tidings.web")

DEFAULT_ADDRESS = "127.0.0.1"
#: Flower's port.
DEFAULT_PORT = 5555
#: Seconds a control command waits for the worker's reply.
CONTROL_TIMEOUT = 2.0
#: Seconds uvicorn is given to finish open requests at shutdown.
SHUTDOWN_GRACE = 3.0


@dataclass
class WebOptions:
    address: str = DEFAULT_ADDRESS
    port: int = DEFAULT_PORT
    url_prefix: str = ""
    max_tasks: int = 100_000
    max_workers: int = 5000
    certfile: str | None = None
    keyfile: str | None = None


class WebMonitor:
    """``WebMonitor(app, access, options)``; :meth:`run` serves until ``stop`` is set."""

    def __init__(self, app: Any, access: Access, options: WebOptions,
                 source: EventSource | None = None) -> None:
        self.app = app
        self.access = access
        self.options = options
        self.started = time.time()
        self.state = app.events.State(max_tasks_in_memory=options.max_tasks,
                                      max_workers_in_memory=options.max_workers)
        self.metrics = ClusterMetrics(self.state)
        self.source = source or BrokerSource(app, connect_retries=None)
        self.metrics.watch_source(self.source)
        self.queue_monitor = QueueMonitor(app, self.metrics, interval=QUEUE_REFRESH_INTERVAL)
        self.inspector = WorkerInspector(app, max_workers=options.max_workers)
        self.changes = ChangeLog()
        #: Bounded at twice the State's bound (pruned against it).
        self.recent = RecentTasks(lambda uuid: uuid in self.state.tasks,
                                  limit=2 * options.max_tasks)
        self.rates = RateHistory()
        self.control_timeout = CONTROL_TIMEOUT
        self.server: Any = None
        #: Set when the monitor stops: open live streams end, so shutdown is prompt.
        self.closing = threading.Event()
        self._summary: tuple[float, str] | None = None
        self._summary_lock = threading.Lock()

    # -- what the routes read ------------------------------------------------------------

    def handle(self, event: dict[str, Any]) -> None:
        """One event: into State and the figures, and noted for live pages."""
        self.metrics.handle(event)
        uuid = event.get("uuid")
        if isinstance(uuid, str):
            self.changes.note(uuid)
            self.recent.touch(uuid)

    def restored(self) -> None:
        """State was filled before going live (``--db``): page its tasks newest last."""
        for uuid, _ in self.state.tasks_by_time(reverse=False):
            self.recent.touch(uuid)

    def summary_json(self) -> str:
        """The dashboard's figures as JSON, computed at most once per push interval
        whatever the number of open pages (each computation walks State)."""
        with self._summary_lock:
            now = time.monotonic()
            if self._summary is None or now - self._summary[0] >= PUSH_INTERVAL:
                d = dashboard(self)
                text = json.dumps({"by_state": d.by_state, "events": d.events,
                                   "tasks": d.tasks, "connection": d.connection,
                                   "workers": d.workers, "rates": d.rates, "lost": d.lost},
                                  default=str)
                self._summary = (now, text)
            return self._summary[1]

    def health(self) -> tuple[bool, dict[str, Any]]:
        return source_health(self.source)

    def knows_task(self, name: str) -> bool:
        return name in self.app.tasks or name in self.state.tasks_by_type

    def queue_lengths(self) -> list[tuple[str, int | None]]:
        self.queue_monitor.poke()
        return sorted((name, figures[0]) for name, figures in self.metrics.snapshot()["queues"])

    # -- running -------------------------------------------------------------------------

    def asgi(self) -> Any:
        from .app import build_app

        return build_app(self)

    def run(self, stop: threading.Event, on_status: Callable[[Status], Any] | None = None,
            on_ready: Callable[[str], Any] | None = None) -> None:
        """Serve until ``stop`` is set; raises OSError when the port cannot be had."""
        import uvicorn

        opts = self.options
        config = uvicorn.Config(self.asgi(), host=opts.address, port=opts.port,
                                log_level="warning", access_log=False, lifespan="off",
                                ssl_certfile=opts.certfile, ssl_keyfile=opts.keyfile,
                                timeout_graceful_shutdown=int(SHUTDOWN_GRACE))
        server = self.server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        http = threading.Thread(target=server.run, name="tidings-web-http", daemon=True)
        ingest = threading.Thread(target=self.source.run_guarded, name="tidings-web-ingest",
                                  args=(self.handle, stop),
                                  kwargs={"on_status": on_status}, daemon=True)
        http.start()
        while not server.started and http.is_alive():
            time.sleep(0.05)
        if not server.started:
            raise OSError(f"cannot listen on {opts.address}:{opts.port}")
        ingest.start()
        self.queue_monitor.start()
        if on_ready is not None:
            on_ready(self.url)
        try:
            while not stop.wait(0.5):
                if not http.is_alive():
                    break
                if self.rates.due():
                    self.rates.sample(self.source.event_count)
        finally:
            stop.set()
            self.closing.set()
            server.should_exit = True
            http.join(SHUTDOWN_GRACE + 2)
            ingest.join(5)
            self.queue_monitor.stop()
            self.inspector.close()

    @property
    def url(self) -> str:
        opts = self.options
        scheme = "https" if opts.certfile else "http"
        host = f"[{opts.address}]" if ":" in opts.address else opts.address
        port = opts.port
        if self.server is not None and self.server.servers:
            sockets = self.server.servers[0].sockets
            if sockets:
                port = sockets[0].getsockname()[1]
        return f"{scheme}://{host}:{port}{opts.url_prefix}"
