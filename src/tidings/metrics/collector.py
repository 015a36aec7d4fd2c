"""Prometheus metrics from the event stream, with celery-exporter's names, types and labels.

One :class:`ClusterMetrics` is fed every event (as a source's handler); it
applies the event to its :class:`~tidings.events.state.State` and updates the
metrics.  ``tidings exporter`` serves them; the web monitor serves the same
object at its ``/metrics``.

Same as celery-exporter (so dashboards 17508/17509 and the celery-mixin
alerts work unchanged): ``celery_task_{sent,received,started,succeeded,
failed,rejected,revoked,retried}_total{name,hostname,queue_name}`` (and
``exception`` on failed), every non-``sent`` task event also showing its
task's other counters at 0; ``celery_worker_up``,
``celery_worker_tasks_active``; the ``celery_task_runtime`` histogram; the
queue gauges (see :mod:`tidings.metrics.queues`).  ``hostname`` is the host
part of the node name (``w1@host`` -> ``host``).

Differences, each on purpose:

* every label value is bounded (:mod:`tidings.metrics.labels`): past
  ``--max-label-values`` distinct values a label reads ``other``, counted in
  ``tidings_metric_label_overflow_total``;
* a worker's last sighting is the monitor's receive time, not the worker's
  own timestamp shifted by time zones (a skewed clock cannot keep a dead
  worker up);
* ``celery_task_queue_wait_time``: seconds from ``task-sent`` to
  ``task-started`` (tasks with an ETA are left out);
* the monitor's own health under ``tidings_``: events received by type,
  skipped input by cause, receive lag, tasks and workers held, reconnects,
  seconds since the last event.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..events.state import State
from ..protocol.events import TASK_EVENT_TYPES, TASK_GROUP, WORKER_GROUP
from ..protocol.tasks import DEFAULT_QUEUE
from .labels import DEFAULT_MAX_LABEL_VALUES, LabelGuard

__all__ = ["DEFAULT_BUCKETS", "ClusterMetrics", "exception_class", "host_of"]

#: Runtime and queue-wait buckets (prometheus_client's defaults, as celery-exporter).
DEFAULT_BUCKETS = Histogram.DEFAULT_BUCKETS
#: Receive-lag buckets (seconds): a healthy monitor is in the first few.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: celery-exporter's defaults: a worker silent this long is down; its series
#: go after the second figure (0 disables either).
WORKER_TIMEOUT = 300.0
PURGE_OFFLINE_AFTER = 600.0
#: The hostname label of ``task-sent`` with ``--generic-hostname-task-sent-metric``.
GENERIC_HOSTNAME = "generic"
UNKNOWN_EXCEPTION = "UnknownException"

_EXCEPTION_CLASS = re.compile(r"^(\w+)\(")

#: Help texts of the task counters, by event type.
_COUNTER_HELP = {
    "task-sent": "Task messages published (task-sent events).",
    "task-received": "Tasks received by a worker.",
    "task-started": "Tasks a worker started executing.",
    "task-succeeded": "Tasks that returned.",
    "task-failed": "Tasks that raised.",
    "task-retried": "Tasks that failed and will run again.",
    "task-rejected": "Task messages a worker rejected (requeued or dead-lettered).",
    "task-revoked": "Tasks revoked, terminated or expired.",
}


def host_of(nodename: Any) -> str:
    """The host part of a node name: ``w1@example.com`` -> ``example.com`` (Celery's split)."""
    text = nodename if isinstance(nodename, str) else str(nodename)
    return text.split("@", 1)[1] if "@" in text else text


def exception_class(text: Any) -> str:
    """``KeyError('x')`` -> ``KeyError``; anything else -> ``UnknownException``."""
    match = _EXCEPTION_CLASS.match(text) if isinstance(text, str) else None
    return match.group(1) if match else UNKNOWN_EXCEPTION


class ClusterMetrics:
    """celery-exporter's metrics (and ours) from events; see the module documentation.

    ``handle(event)`` is the event handler.  ``before_scrape()`` (called by
    the HTTP front door) times out silent workers and purges their series.
    ``errors``/``reconnects`` of the event source are read at scrape time
    through :meth:`watch_source`.
    """

    def __init__(self, state: State | None = None, *,
                 registry: CollectorRegistry | None = None,
                 prefix: str = "celery_",
                 buckets: Iterable[float] = DEFAULT_BUCKETS,
                 queue_wait_buckets: Iterable[float] = DEFAULT_BUCKETS,
                 static_labels: Mapping[str, str] | None = None,
                 max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
                 generic_hostname_task_sent: bool = False,
                 worker_timeout: float = WORKER_TIMEOUT,
                 purge_offline_after: float = PURGE_OFFLINE_AFTER,
                 clock: Callable[[], float] = time.time) -> None:
        self.state = state if state is not None else State()
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.static = dict(static_labels or {})
        self.generic_hostname_task_sent = generic_hostname_task_sent
        self.worker_timeout = worker_timeout
        self.purge_offline_after = purge_offline_after
        self.clock = clock
        static_keys = list(self.static)
        static_values = tuple(self.static.values())
        self._static_values = static_values
        reg = self.registry

        def labelled(*names: str) -> list[str]:
            return [*names, *static_keys]

        self.overflow = Counter("tidings_metric_label_overflow",
                                "Label values reported as 'other' (past --max-label-values).",
                                labelled("label"), registry=reg)
        self.guard = LabelGuard(max_label_values, self._overflowed)
        task_labels = labelled("name", "hostname", "queue_name")
        self.task_counters: dict[str, Counter] = {}
        for type_ in TASK_EVENT_TYPES:
            labels = (labelled("name", "hostname", "exception", "queue_name")
                      if type_ == "task-failed" else task_labels)
            self.task_counters[type_] = Counter(
                f"{prefix}{type_.replace('-', '_')}", _COUNTER_HELP[type_], labels,
                registry=reg)
        self.worker_up = Gauge(f"{prefix}worker_up",
                               "1 while the worker sends heartbeats, else 0.",
                               labelled("hostname"), registry=reg)
        self.worker_tasks_active = Gauge(f"{prefix}worker_tasks_active",
                                         "Tasks the worker is running (from heartbeats).",
                                         labelled("hostname"), registry=reg)
        self.task_runtime = Histogram(f"{prefix}task_runtime", "Task runtime in seconds.",
                                      task_labels, buckets=tuple(buckets), registry=reg)
        self.task_queue_wait = Histogram(
            f"{prefix}task_queue_wait_time",
            "Seconds from task-sent to task-started (tasks without an ETA).",
            task_labels, buckets=tuple(queue_wait_buckets), registry=reg)
        queue_labels = labelled("queue_name")
        self.queue_length = Gauge(f"{prefix}queue_length", "Messages waiting in the queue.",
                                  queue_labels, registry=reg)
        self.active_consumer_count = Gauge(f"{prefix}active_consumer_count",
                                           "Consumers of the queue (RabbitMQ).",
                                           queue_labels, registry=reg)
        self.active_worker_count = Gauge(f"{prefix}active_worker_count",
                                         "Workers consuming from the queue.",
                                         queue_labels, registry=reg)
        self.active_process_count = Gauge(f"{prefix}active_process_count",
                                          "Pool processes of the workers consuming the queue.",
                                          queue_labels, registry=reg)
        self.events_received = Counter("tidings_events_received",
                                       "Events received, by type.", labelled("type"),
                                       registry=reg)
        self.receive_lag = Histogram(
            "tidings_event_receive_lag_seconds",
            "Seconds from an event's timestamp to its receipt by this monitor.",
            static_keys, buckets=LAG_BUCKETS, registry=reg)
        self._lag = self.receive_lag.labels(*static_values) if static_keys else self.receive_lag
        self._lock = threading.Lock()
        #: hostname label -> [last seen (local time), timed out]
        self._last_seen: dict[str, list[Any]] = {}
        #: (metric, label values) -> its series: one dict lookup per update instead
        #: of prometheus_client's labels(); as bounded as the label values
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        #: hostname label -> the series carrying it, for purging
        self._series: dict[str, set[tuple[Any, tuple[str, ...]]]] = {}
        #: queue names seen in task-sent events (bounded by the label guard)
        self.queues_seen: set[str] = set()
        self.last_event_at: float | None = None
        self._source: Any = None
        reg.register(_Health(self, static_keys, static_values))

    # -- feeding -------------------------------------------------------------------------

    def watch_source(self, source: Any) -> None:
        """Read the source's skipped-input counts and reconnects at each scrape."""
        self._source = source

    def handle(self, event: dict[str, Any]) -> None:
        """Apply one event to the State and to the metrics."""
        type_ = event["type"]
        static = self._static_values
        self.events_received.labels(self.guard("type", type_), *static).inc()
        now = self.clock()
        self.last_event_at = now
        timestamp, received = event.get("timestamp"), event.get("local_received")
        if _is_number(timestamp) and _is_number(received):
            self._lag.observe(max(0.0, received - timestamp))
        result = self.state.event(event)
        if not result:
            return
        (obj, _created), subject = result
        group = type_.partition("-")[0]
        if group == TASK_GROUP and type_ in self.task_counters:
            self._task_event(type_, obj, event)
        elif group == WORKER_GROUP:
            self._worker_event(subject, obj, now)

    def _task_event(self, type_: str, task: Any, event: dict[str, Any]) -> None:
        guard, static = self.guard, self._static_values
        if type_ == "task-sent" and self.generic_hostname_task_sent:
            host = GENERIC_HOSTNAME
        else:
            host = guard("hostname", host_of(event.get("hostname")))
        name = guard("name", task.name)
        queue = guard("queue_name", task.queue if task.queue is not None else DEFAULT_QUEUE)
        if type_ == "task-sent":
            self.queues_seen.add(queue)
        for counter_type, counter in self.task_counters.items():
            if counter_type != type_ and type_ == "task-sent":
                continue  # clients are many: do not show their hosts on worker counters
            if counter_type == "task-failed":
                exc = (guard("exception", exception_class(event.get("exception")))
                       if type_ == "task-failed" else "")
                values = (name, host, exc, queue, *static)
            else:
                values = (name, host, queue, *static)
            series = self._child(counter, values, host)  # exists now: visible at 0
            if counter_type == type_:
                series.inc()
        values = (name, host, queue, *static)
        if type_ == "task-succeeded" and _is_number(task.runtime):
            self._child(self.task_runtime, values, host).observe(task.runtime)
        elif type_ == "task-started" and task.eta is None:
            sent, started = task.sent, task.started
            if _is_number(sent) and _is_number(started) and started >= sent:
                self._child(self.task_queue_wait, values, host).observe(started - sent)

    def _worker_event(self, subject: str, worker: Any, now: float) -> None:
        host = self.guard("hostname", host_of(worker.hostname))
        values = (host, *self._static_values)
        up = self._child(self.worker_up, values, host)
        active = self._child(self.worker_tasks_active, values, host)
        if subject == "offline":
            self._forget(host)
            return
        with self._lock:
            self._last_seen[host] = [now, False]
        if subject == "online":
            up.set(1)
        else:
            up.set(1 if worker.alive else 0)
            active.set(worker.active if _is_number(worker.active) else 0)

    def _child(self, metric: Any, values: tuple[str, ...], host: str) -> Any:
        """The series of ``metric`` for ``values``, remembered under its hostname label."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*values)
            with self._lock:
                self._children[key] = child
                self._series.setdefault(host, set()).add(key)
        return child

    def _overflowed(self, label: str) -> None:
        self.overflow.labels(label, *self._static_values).inc()

    # -- scraping ------------------------------------------------------------------------

    def before_scrape(self) -> None:
        """Time out silent workers (up 0, active 0) and purge long-gone ones."""
        now = self.clock()
        with self._lock:
            seen = list(self._last_seen.items())
        for host, (last, timed_out) in seen:
            silent = now - last
            if self.worker_timeout > 0 and silent > self.worker_timeout and not timed_out:
                self._forget(host)
            if self.purge_offline_after > 0 and silent > self.purge_offline_after:
                self._purge(host)

    def _forget(self, host: str) -> None:
        values = (host, *self._static_values)
        self._child(self.worker_up, values, host).set(0)
        self._child(self.worker_tasks_active, values, host).set(0)
        with self._lock:
            entry = self._last_seen.get(host)
            if entry is not None:
                entry[1] = True
                if self.purge_offline_after <= 0:
                    del self._last_seen[host]

    def _purge(self, host: str) -> None:
        with self._lock:
            series = self._series.pop(host, set())
            self._last_seen.pop(host, None)
            for key in series:
                self._children.pop(key, None)
        for metric, values in series:
            try:
                metric.remove(*values)
            except KeyError:
                pass
        self.guard.forget("hostname", host)

    def set_queue(self, queue: str, length: int | None, consumers: int | None,
                  workers: int, processes: int) -> None:
        """Publish one queue's figures (``None``: not known on this transport)."""
        values = (self.guard("queue_name", queue), *self._static_values)
        if length is not None:
            self.queue_length.labels(*values).set(length)
        if consumers is not None:
            self.active_consumer_count.labels(*values).set(consumers)
        self.active_worker_count.labels(*values).set(workers)
        self.active_process_count.labels(*values).set(processes)


class _Health:
    """Figures read at scrape time: skipped input, reconnects, State size, silence."""

    def __init__(self, metrics: ClusterMetrics, static_keys: list[str],
                 static_values: tuple[str, ...]) -> None:
        self.metrics = metrics
        self.keys = static_keys
        self.values = list(static_values)

    def describe(self) -> list:
        return []  # described by collect(): the families are fixed

    def collect(self) -> Iterator[Any]:
        m, keys, values = self.metrics, self.keys, self.values
        source = m._source
        skipped = CounterMetricFamily("tidings_events_skipped",
                                      "Event input skipped, by cause.",
                                      labels=["cause", *keys])
        reconnects = CounterMetricFamily("tidings_reconnects",
                                         "Times the monitor reconnected to the broker.",
                                         labels=keys)
        if source is not None:
            for cause, count in sorted(dict(source.errors).items()):
                skipped.add_metric([str(cause), *values], count)
            reconnects.add_metric(values, source.reconnects)
        else:
            reconnects.add_metric(values, 0)
        yield skipped
        yield reconnects
        tasks = GaugeMetricFamily("tidings_state_tasks", "Tasks held in the monitor's State.",
                                  labels=keys)
        tasks.add_metric(values, len(m.state.tasks))
        yield tasks
        workers = GaugeMetricFamily("tidings_state_workers",
                                    "Workers held in the monitor's State.", labels=keys)
        workers.add_metric(values, len(m.state.workers))
        yield workers
        silence = GaugeMetricFamily("tidings_seconds_since_last_event",
                                    "Seconds since the last event arrived (NaN: none yet).",
                                    labels=keys)
        last = m.last_event_at
        silence.add_metric(values, math.nan if last is None else max(0.0, m.clock() - last))
        yield silence


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
