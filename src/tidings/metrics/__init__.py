"""Prometheus metrics with celery-exporter's names: one module, served by ``tidings exporter``.

* :mod:`.collector` — :class:`ClusterMetrics`: events to metrics;
* :mod:`.labels` — bounded label values;
* :mod:`.queues` — queue lengths, consumers, workers and processes per queue;
* :mod:`.server` — the ``/metrics`` and ``/health`` HTTP front door;
* :mod:`.exporter` — the command's wiring.
"""

from .collector import DEFAULT_BUCKETS, ClusterMetrics, exception_class, host_of
from .exporter import Exporter
from .labels import LabelGuard
from .queues import QueueMonitor
from .server import MetricsServer, metrics_app

__all__ = [
    "DEFAULT_BUCKETS",
    "ClusterMetrics",
    "Exporter",
    "LabelGuard",
    "MetricsServer",
    "QueueMonitor",
    "exception_class",
    "host_of",
    "metrics_app",
]
