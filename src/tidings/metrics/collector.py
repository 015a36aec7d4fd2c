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
  skipped input by cause, events lost by cause, receive lag, tasks and workers held, reconnects,
  seconds since the last event;
* no ``*_created`` samples (in the text format each would be one more
  series per label set in Prometheus, for a timestamp nobody graphs).

The figures live in plain dicts updated by the ingest thread (an event costs
a few dictionary updates, not prometheus_client's per-series locks) and are
handed to prometheus_client as metric families at scrape time: the
exposition is prometheus_client's.
"""

from __future__ import annotations

import math
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.utils import floatToGoString

from ..events.state import State
from ..protocol.events import TASK_EVENT_TYPES, WORKER_GROUP
from ..protocol.loss import LOSS_CAUSES
from ..protocol.tasks import DEFAULT_QUEUE
from .labels import DEFAULT_MAX_LABEL_VALUES, LabelGuard

__all__ = ["DEFAULT_BUCKETS", "ClusterMetrics", "exception_class", "host_of"]

#: Runtime and queue-wait buckets (prometheus_client's defaults, as celery-exporter).
DEFAULT_BUCKETS = tuple(b for b in Histogram.DEFAULT_BUCKETS if b != math.inf)
#: Receive-lag buckets (seconds): a healthy monitor is in the first few.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: celery-exporter's defaults: a worker silent this long is down; its series
#: go after the second figure (0 disables either).
WORKER_TIMEOUT = 300.0
PURGE_OFFLINE_AFTER = 600.0
#: The hostname label of ``task-sent`` with ``--generic-hostname-task-sent-metric``.
GENERIC_HOSTNAME = "generic"
#: Node names whose hostname label is remembered (``gen<pid>@host`` clients are many),
#: and raw (name, queue, node) triples whose row is remembered; past these the
#: cache starts afresh (the labels themselves are bounded by the label guard).
HOST_CACHE_MAX = 4096
ROW_CACHE_MAX = 65536
UNKNOWN_EXCEPTION = "UnknownException"

_EXCEPTION_CLASS = re.compile(r"^(\w+)\(")
_SENT = "task-sent"
_WORKER_PREFIX = f"{WORKER_GROUP}-"
_FAILED = "task-failed"
#: Position of each task counter in a row; the row's last slot says whether
#: the other counters are shown for its labels (any event but task-sent).
_INDEX = {type_: i for i, type_ in enumerate(TASK_EVENT_TYPES)}
_SHOWN = len(TASK_EVENT_TYPES)

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

TaskKey = tuple[str, str, str]  # name, hostname, queue_name


def host_of(nodename: Any) -> str:
    """The host part of a node name: ``w1@example.com`` -> ``example.com`` (Celery's split)."""
    text = nodename if isinstance(nodename, str) else str(nodename)
    return text.split("@", 1)[1] if "@" in text else text


def exception_class(text: Any) -> str:
    """``KeyError('x')`` -> ``KeyError``; anything else -> ``UnknownException``."""
    match = _EXCEPTION_CLASS.match(text) if isinstance(text, str) else None
    return match.group(1) if match else UNKNOWN_EXCEPTION


def _is_number(value: Any) -> bool:
    return (type(value) is float or type(value) is int) and math.isfinite(value)


class _Histogram:
    """Bucket counts and a sum; cumulated when exposed."""

    __slots__ = ("counts", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * (size + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, bounds: tuple[float, ...], value: float) -> None:
        self.counts[bisect_left(bounds, value)] += 1
        self.total += value

    def buckets(self, labels: tuple[str, ...]) -> list[tuple[str, float]]:
        out, running = [], 0
        for le, count in zip(labels, self.counts):
            running += count
            out.append((le, running))
        return out


class ClusterMetrics:
    """celery-exporter's metrics (and ours) from events; see the module documentation.

    ``handle(event)`` is the event handler (call it from one thread).
    ``before_scrape()`` (called by the HTTP front door) times out silent
    workers and purges their series.  The event source's skipped-input
    counts and reconnects are read at scrape time once :meth:`watch_source`
    names it.
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
        self.prefix = prefix
        self.static = dict(static_labels or {})
        self.generic_hostname_task_sent = generic_hostname_task_sent
        self.worker_timeout = worker_timeout
        self.purge_offline_after = purge_offline_after
        self.clock = clock
        self.runtime_bounds = tuple(b for b in buckets if b != math.inf)
        self.wait_bounds = tuple(b for b in queue_wait_buckets if b != math.inf)
        #: Label values past the bound, by label name.
        self.overflowed: dict[str, int] = {}
        self.guard = LabelGuard(max_label_values, self._overflowed)
        #: Structural changes (a new label set) and scrape-time copies take
        #: this lock; updating an existing figure does not.
        self._lock = threading.Lock()
        self._rows: dict[TaskKey, list[Any]] = {}
        self._failed: dict[tuple[str, str, str, str], float] = {}
        self._runtime: dict[TaskKey, _Histogram] = {}
        self._wait: dict[TaskKey, _Histogram] = {}
        self._lag = _Histogram(len(LAG_BUCKETS))
        self._received: dict[str, float] = {}
        #: hostname label -> [up, tasks active]
        self._workers: dict[str, list[float]] = {}
        #: hostname label -> [last seen (local time), timed out]
        self._last_seen: dict[str, list[Any]] = {}
        #: queue label -> [length, consumers, workers, processes] (None: unknown)
        self._queues: dict[str, list[Any]] = {}
        #: queue names seen in task-sent events (bounded by the label guard)
        self.queues_seen: set[str] = set()
        #: node name -> hostname label, so the split is done once per node
        self._hosts: dict[Any, str] = {}
        #: (name, queue, node name, is task-sent) -> (labels, row): one lookup per event
        self._row_cache: dict[tuple[Any, ...], tuple[TaskKey, list[Any]]] = {}
        self.last_event_at: float | None = None
        self._source: Any = None
        self.registry.register(_Exposition(self))

    # -- feeding -------------------------------------------------------------------------

    def watch_source(self, source: Any) -> None:
        """Read the source's skipped-input counts and reconnects at each scrape."""
        self._source = source

    def handle(self, event: dict[str, Any]) -> None:
        """Apply one event to the State and to the figures."""
        type_ = event["type"]
        received = self._received
        if type_ in received:
            received[type_] += 1
        else:
            label = self.guard("type", type_)
            with self._lock:
                received[label] = received.get(label, 0) + 1
        # the receiver stamped the event with our clock: no need to read it again
        local = event.get("local_received")
        now = local if _is_number(local) else self.clock()
        self.last_event_at = now
        timestamp = event.get("timestamp")
        if _is_number(timestamp):
            self._lag.observe(LAG_BUCKETS, now - timestamp if now > timestamp else 0.0)
        result = self.state.event(event)
        if not result:
            return
        index = _INDEX.get(type_)
        if index is not None:
            self._task_event(type_, index, result[0][0], event)
        elif type_.startswith(_WORKER_PREFIX):
            self._worker_event(result[1], result[0][0], now)

    def _task_event(self, type_: str, index: int, task: Any, event: dict[str, Any]) -> None:
        nodename = event.get("hostname")
        queue = task.queue
        if queue is not None and type(queue) is not str:
            queue = str(queue)  # an unvalidated field: anything JSON can hold
        raw = (task.name, queue, nodename, type_ == _SENT)
        found = self._row_cache.get(raw)
        if found is None:
            found = self._row_for(type_, task, nodename)
            if len(self._row_cache) >= ROW_CACHE_MAX:
                self._row_cache.clear()
            self._row_cache[raw] = found
        key, row = found
        row[index] += 1
        if type_ == _SENT:
            return
        row[_SHOWN] = True  # the other counters show for these labels, at 0 or more
        if type_ == _FAILED:
            fkey = (key[0], key[1],
                    self.guard("exception", exception_class(event.get("exception"))), key[2])
            with self._lock:
                self._failed[fkey] = self._failed.get(fkey, 0) + 1
        elif type_ == "task-succeeded":
            runtime = task.runtime
            if _is_number(runtime):
                self._histogram(self._runtime, key, len(self.runtime_bounds)).observe(
                    self.runtime_bounds, runtime)
        elif type_ == "task-started" and task.eta is None:
            sent, started = task.sent, task.started
            if _is_number(sent) and _is_number(started) and started >= sent:
                self._histogram(self._wait, key, len(self.wait_bounds)).observe(
                    self.wait_bounds, started - sent)

    def _row_for(self, type_: str, task: Any, nodename: Any) -> tuple[TaskKey, list[Any]]:
        """The labels (bounded) and the row of counters of a task event."""
        guard = self.guard
        if type_ == _SENT and self.generic_hostname_task_sent:
            host = GENERIC_HOSTNAME
        else:
            host = self._host_label(nodename)
        key = (guard("name", task.name), host,
               guard("queue_name", task.queue if task.queue is not None else DEFAULT_QUEUE))
        if type_ == _SENT and key[2] not in self.queues_seen:
            with self._lock:
                self.queues_seen.add(key[2])
        with self._lock:
            row = self._rows.setdefault(key, [0.0] * _SHOWN + [False])
        return key, row

    def _histogram(self, table: dict[TaskKey, _Histogram], key: TaskKey,
                   size: int) -> _Histogram:
        hist = table.get(key)
        if hist is None:
            with self._lock:
                hist = table.setdefault(key, _Histogram(size))
        return hist

    def _host_label(self, nodename: Any) -> str:
        hosts = self._hosts
        label = hosts.get(nodename)
        if label is None:
            label = self.guard("hostname", host_of(nodename))
            if len(hosts) >= HOST_CACHE_MAX:
                hosts.clear()
            hosts[nodename] = label
        return label

    def _worker_event(self, subject: str, worker: Any, now: float) -> None:
        host = self._host_label(worker.hostname)
        if subject == "offline":
            self._forget(host)
            return
        with self._lock:
            self._last_seen[host] = [now, False]
            figures = self._workers.setdefault(host, [0, 0])
        if subject == "online":
            figures[0] = 1
        else:
            figures[0] = 1 if worker.alive else 0
            figures[1] = worker.active if _is_number(worker.active) else 0

    def _overflowed(self, label: str) -> None:
        with self._lock:
            self.overflowed[label] = self.overflowed.get(label, 0) + 1

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
        with self._lock:
            self._workers[host] = [0, 0]
            entry = self._last_seen.get(host)
            if entry is not None:
                entry[1] = True
                if self.purge_offline_after <= 0:
                    del self._last_seen[host]

    def _purge(self, host: str) -> None:
        with self._lock:
            self._hosts.clear()
            self._row_cache.clear()
            self._last_seen.pop(host, None)
            self._workers.pop(host, None)
            for table in (self._rows, self._runtime, self._wait):
                for key in [k for k in table if k[1] == host]:
                    del table[key]
            for fkey in [k for k in self._failed if k[1] == host]:
                del self._failed[fkey]
        self.guard.forget("hostname", host)

    def set_queue(self, queue: str, length: int | None, consumers: int | None,
                  workers: int, processes: int) -> None:
        """Publish one queue's figures (``None``: not known on this transport)."""
        with self._lock:
            self._queues[self.guard("queue_name", queue)] = [length, consumers, workers,
                                                             processes]

    def known_queues(self) -> set[str]:
        """Queue names seen in task-sent events (a copy)."""
        with self._lock:
            return set(self.queues_seen)

    def snapshot(self) -> dict[str, Any]:
        """Copies of every figure, taken at one instant (for the exposition)."""
        with self._lock:
            return {
                "rows": [(k, list(v)) for k, v in self._rows.items()],
                "failed": list(self._failed.items()),
                "runtime": [(k, list(h.counts), h.total) for k, h in self._runtime.items()],
                "wait": [(k, list(h.counts), h.total) for k, h in self._wait.items()],
                "lag": (list(self._lag.counts), self._lag.total),
                "received": list(self._received.items()),
                "workers": [(k, list(v)) for k, v in self._workers.items()],
                "queues": [(k, list(v)) for k, v in self._queues.items()],
                "overflowed": list(self.overflowed.items()),
            }


class _Exposition:
    """Hands the figures to prometheus_client as metric families, at scrape time."""

    def __init__(self, metrics: ClusterMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list:
        return []  # the families are fixed; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        m = self.metrics
        snap = m.snapshot()
        keys, values = list(m.static), list(m.static.values())
        prefix = m.prefix
        task_labels = ["name", "hostname", "queue_name", *keys]

        def family(kind: type, name: str, doc: str, labels: list[str]) -> Any:
            return kind(name, doc, labels=labels)

        rows = snap["rows"]
        for type_, index in _INDEX.items():
            name = f"{prefix}{type_.replace('-', '_')}"
            if type_ == _FAILED:
                fam = family(CounterMetricFamily, name, _COUNTER_HELP[type_],
                             ["name", "hostname", "exception", "queue_name", *keys])
                for (n, h, q), row in rows:
                    if row[_SHOWN]:
                        fam.add_metric([n, h, "", q, *values], 0)
                for (n, h, exc, q), count in snap["failed"]:
                    fam.add_metric([n, h, exc, q, *values], count)
            else:
                fam = family(CounterMetricFamily, name, _COUNTER_HELP[type_], task_labels)
                for (n, h, q), row in rows:
                    if type_ == _SENT or row[_SHOWN]:
                        fam.add_metric([n, h, q, *values], row[index])
            yield fam
        for table, name, doc, bounds in (
                ("runtime", f"{prefix}task_runtime", "Task runtime in seconds.",
                 m.runtime_bounds),
                ("wait", f"{prefix}task_queue_wait_time",
                 "Seconds from task-sent to task-started (tasks without an ETA).",
                 m.wait_bounds)):
            les = (*(floatToGoString(b) for b in bounds), "+Inf")
            fam = HistogramMetricFamily(name, doc, labels=task_labels)
            for (n, h, q), counts, total in snap[table]:
                hist = _Histogram(len(bounds))
                hist.counts = counts
                fam.add_metric([n, h, q, *values], hist.buckets(les), total)
            yield fam
        up = family(GaugeMetricFamily, f"{prefix}worker_up",
                    "1 while the worker sends heartbeats, else 0.", ["hostname", *keys])
        active = family(GaugeMetricFamily, f"{prefix}worker_tasks_active",
                        "Tasks the worker is running (from heartbeats).", ["hostname", *keys])
        for host, (is_up, running) in snap["workers"]:
            up.add_metric([host, *values], is_up)
            active.add_metric([host, *values], running)
        yield up
        yield active
        queue_families = [
            family(GaugeMetricFamily, f"{prefix}queue_length", "Messages waiting in the queue.",
                   ["queue_name", *keys]),
            family(GaugeMetricFamily, f"{prefix}active_consumer_count",
                   "Consumers of the queue (RabbitMQ).", ["queue_name", *keys]),
            family(GaugeMetricFamily, f"{prefix}active_worker_count",
                   "Workers consuming from the queue.", ["queue_name", *keys]),
            family(GaugeMetricFamily, f"{prefix}active_process_count",
                   "Pool processes of the workers consuming the queue.",
                   ["queue_name", *keys]),
        ]
        for queue, figures in snap["queues"]:
            for fam, value in zip(queue_families, figures):
                if value is not None:
                    fam.add_metric([queue, *values], value)
        yield from queue_families
        yield from self._health(snap, keys, values)

    def _health(self, snap: dict[str, Any], keys: list[str], values: list[str]
                ) -> Iterator[Any]:
        m = self.metrics
        received = CounterMetricFamily("tidings_events_received", "Events received, by type.",
                                       labels=["type", *keys])
        for type_, count in snap["received"]:
            received.add_metric([type_, *values], count)
        yield received
        counts, total = snap["lag"]
        lag = HistogramMetricFamily(
            "tidings_event_receive_lag_seconds",
            "Seconds from an event's timestamp to its receipt by this monitor.", labels=keys)
        hist = _Histogram(len(LAG_BUCKETS))
        hist.counts = counts
        lag.add_metric(values, hist.buckets((*(floatToGoString(b) for b in LAG_BUCKETS),
                                             "+Inf")), total)
        yield lag
        overflow = CounterMetricFamily(
            "tidings_metric_label_overflow",
            "Label values reported as 'other' (past --max-label-values).",
            labels=["label", *keys])
        for label, count in snap["overflowed"]:
            overflow.add_metric([label, *values], count)
        yield overflow
        source = m._source
        skipped = CounterMetricFamily("tidings_events_skipped", "Event input skipped, by cause.",
                                      labels=["cause", *keys])
        reconnects = CounterMetricFamily("tidings_reconnects",
                                         "Times the monitor reconnected to the broker.",
                                         labels=keys)
        lost = CounterMetricFamily(
            "tidings_events_lost", "Events that never reached this monitor, by cause "
            "(see docs/loss.md).", labels=["cause", *keys])
        if source is not None:
            for cause, count in sorted(dict(source.errors).items()):
                skipped.add_metric([str(cause), *values], count)
        losses = source.losses.lost if source is not None else {}
        for cause in LOSS_CAUSES:  # every cause, 0 included, so that rate() works at once
            lost.add_metric([cause, *values], losses.get(cause, 0))
        reconnects.add_metric(values, source.reconnects if source is not None else 0)
        yield skipped
        yield lost
        yield reconnects
        for name, doc, value in (
                ("tidings_state_tasks", "Tasks held in the monitor's State.",
                 len(m.state.tasks)),
                ("tidings_state_workers", "Workers held in the monitor's State.",
                 len(m.state.workers)),
                ("tidings_seconds_since_last_event",
                 "Seconds since the last event arrived (NaN: none yet).",
                 math.nan if m.last_event_at is None
                 else max(0.0, m.clock() - m.last_event_at))):
            gauge = GaugeMetricFamily(name, doc, labels=keys)
            gauge.add_metric(values, value)
            yield gauge
