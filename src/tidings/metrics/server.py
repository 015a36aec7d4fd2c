"""The exporter's HTTP front door: ``/metrics`` (Prometheus) and ``/health``.

A WSGI app served by the standard library's threading WSGI server, so a slow
scraper never holds up another; the exposition itself is prometheus_client's
(text or OpenMetrics, gzip when asked).  Binds loopback unless told otherwise.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from .collector import ClusterMetrics

__all__ = ["DEFAULT_ADDRESS", "DEFAULT_PORT", "MetricsServer", "metrics_app"]

DEFAULT_ADDRESS = "127.0.0.1"
#: celery-exporter's port.
DEFAULT_PORT = 9808

Health = Callable[[], tuple[bool, dict[str, Any]]]


def metrics_app(metrics: ClusterMetrics, health: Health,
                before_scrape: Callable[[], Any] | None = None) -> Callable[..., Iterable[bytes]]:
    """The WSGI app: ``/metrics``, ``/health``, and 404 for anything else."""
    exposition = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path in ("/metrics", "/metrics/"):
            metrics.before_scrape()
            if before_scrape is not None:
                before_scrape()
            return exposition(environ, start_response)
        if path == "/health":
            ok, body = health()
            data = json.dumps(body).encode()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data)))])
            return [data]
        data = b"Not found: try /metrics or /health\n"
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                         ("Content-Length", str(len(data)))])
        return [data]

    return app


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _IPv6Server(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per scrape is noise
        pass


class MetricsServer:
    """Serves a WSGI app in a daemon thread; :meth:`close` stops it."""

    def __init__(self, app: Callable[..., Iterable[bytes]], address: str = DEFAULT_ADDRESS,
                 port: int = DEFAULT_PORT) -> None:
        server_class = _IPv6Server if ":" in address else _ThreadingServer
        self.httpd = make_server(address, port, app, server_class=server_class,
                                 handler_class=_QuietHandler)
        self.address = address
        self.port = self.httpd.server_port
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="tidings-metrics",
                                       daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    def start(self) -> MetricsServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
