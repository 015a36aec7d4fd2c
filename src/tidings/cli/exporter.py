"""``tidings exporter``: Prometheus metrics from the event stream, a drop-in for celery-exporter.

Every option can also come from ``TIDINGS_EXPORTER_<OPTION>``, or from
celery-exporter's ``CE_<OPTION>`` names (``CE_BROKER_URL``, ``CE_PORT``,
``CE_HOST`` ...), so a deployment switches by changing its image.
"""

from __future__ import annotations

import re
from typing import Any

import click

from ..metrics.collector import DEFAULT_BUCKETS, PURGE_OFFLINE_AFTER, WORKER_TIMEOUT
from ..metrics.labels import DEFAULT_MAX_LABEL_VALUES
from ..metrics.queues import QUEUE_REFRESH_INTERVAL
from ..metrics.server import DEFAULT_ADDRESS, DEFAULT_PORT
from .common import CommandError, Context, set_process_title, stop_on_signals
from .subscribe import subscription_from, subscription_options

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_RESERVED_LABELS = {"name", "hostname", "queue_name", "exception", "type", "cause", "label",
                    "le", "quantile"}
_DEFAULT_BUCKETS_TEXT = ",".join(str(b) for b in DEFAULT_BUCKETS if b != float("inf"))


def _env(name: str, celery_exporter: str | None = None) -> list[str]:
    names = [f"TIDINGS_EXPORTER_{name}"]
    if celery_exporter:
        names.append(f"CE_{celery_exporter}")
    return names


def _buckets(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        buckets = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected numbers separated by commas") from None
    if not buckets or any(b <= 0 for b in buckets) or list(buckets) != sorted(set(buckets)):
        raise click.BadParameter(f"{value!r}: expected positive numbers in increasing order")
    return buckets


def _queues(ctx: click.Context, param: click.Parameter, value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, tuple | list) else (value or "",)
    return tuple(q.strip() for v in items for q in str(v).split(",") if q.strip())


def _static_labels(ctx: click.Context, param: click.Parameter, value: Any) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in value or ():
        key, sep, val = item.partition("=")
        if not sep or not _LABEL_NAME.match(key) or key.startswith("__"):
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE with a Prometheus label "
                                     "name")
        if key in _RESERVED_LABELS:
            raise click.BadParameter(f"{item!r}: {key!r} is a label the metrics already have")
        labels[key] = val
    return labels


def _prefix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not re.match(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$", value):
        raise click.BadParameter(f"{value!r} is not a valid metric name prefix")
    return value


@click.command("exporter")
@click.option("--broker-url", envvar=_env("BROKER_URL", "BROKER_URL"), metavar="URL",
              help="Broker URL (celery-exporter's option; the same as the global -b).")
@click.option("--address", "--host", "address", default=DEFAULT_ADDRESS, show_default=True,
              envvar=_env("ADDRESS", "HOST"), help="Address to listen on (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              envvar=_env("PORT", "PORT"), help="Port to listen on.")
@click.option("--buckets", default=_DEFAULT_BUCKETS_TEXT, show_default=True,
              envvar=_env("BUCKETS", "BUCKETS"), callback=_buckets,
              help="Buckets of the task runtime histogram (seconds).")
@click.option("--queue-wait-buckets", default=_DEFAULT_BUCKETS_TEXT,
              envvar=_env("QUEUE_WAIT_BUCKETS", "QUEUE_WAIT_BUCKETS"), callback=_buckets,
              help="Buckets of the queue wait histogram (seconds).")
@click.option("--worker-timeout", type=click.FloatRange(min=0), default=WORKER_TIMEOUT,
              show_default=True, envvar=_env("WORKER_TIMEOUT", "WORKER_TIMEOUT"),
              help="Seconds without a heartbeat before a worker counts as down (0: never).")
@click.option("--purge-offline-worker-metrics", type=click.FloatRange(min=0),
              default=PURGE_OFFLINE_AFTER, show_default=True,
              envvar=_env("PURGE_OFFLINE_WORKER_METRICS", "PURGE_OFFLINE_WORKER_METRICS"),
              help="Seconds without a heartbeat before a worker's series are removed "
                   "(0: never).")
@click.option("--generic-hostname-task-sent-metric", is_flag=True,
              envvar=_env("GENERIC_HOSTNAME_TASK_SENT_METRIC",
                          "GENERIC_HOSTNAME_TASK_SENT_METRIC"),
              help="Label celery_task_sent_total with hostname 'generic' (clients are many).")
@click.option("-Q", "--queues", multiple=True, envvar=_env("QUEUES", "QUEUES"),
              callback=_queues, help="Queues to always report, comma separated.")
@click.option("--metric-prefix", default="celery_", show_default=True,
              envvar=_env("METRIC_PREFIX", "METRIC_PREFIX"), callback=_prefix,
              help="Prefix of the celery-exporter metrics.")
@click.option("--static-label", "static_labels", multiple=True, metavar="NAME=VALUE",
              envvar=_env("STATIC_LABEL", "STATIC_LABEL"), callback=_static_labels,
              help="A label with a fixed value on every metric (repeatable).")
@click.option("--max-tasks", type=click.IntRange(min=1), default=10_000, show_default=True,
              envvar=_env("MAX_TASKS"), help="Tasks kept in memory (State bound).")
@click.option("--max-label-values", type=click.IntRange(min=1),
              default=DEFAULT_MAX_LABEL_VALUES, show_default=True,
              envvar=_env("MAX_LABEL_VALUES"),
              help="Distinct values kept per label; the rest are reported as 'other'.")
@click.option("--queue-interval", type=click.FloatRange(min=0.1),
              default=QUEUE_REFRESH_INTERVAL, show_default=True,
              envvar=_env("QUEUE_INTERVAL"),
              help="Seconds between refreshes of the queue figures.")
@click.option("--accept-content", envvar=_env("ACCEPT_CONTENT", "ACCEPT_CONTENT"),
              metavar="TYPES", help="Content types to accept, comma separated (e.g. json).")
@subscription_options
@click.pass_obj
def exporter(obj: Context, broker_url: str | None, address: str, port: int,
             buckets: tuple[float, ...], queue_wait_buckets: tuple[float, ...],
             worker_timeout: float, purge_offline_worker_metrics: float,
             generic_hostname_task_sent_metric: bool, queues: tuple[str, ...],
             metric_prefix: str, static_labels: dict[str, str], max_tasks: int,
             max_label_values: int, queue_interval: float, accept_content: str | None,
             durable_queue: str | None, stream: str | None, offset: str,
             stream_retention: str | None, stream_max_bytes: str | None) -> None:
    """Serve Prometheus metrics (/metrics, /health) about the cluster's tasks and workers."""
    from ..events.source import BrokerSource
    from ..metrics import ClusterMetrics, Exporter

    app = obj.app
    if broker_url:
        app.conf.broker_url = broker_url
    if accept_content:
        app.conf.accept_content = accept_content
    subscription = subscription_from(app, durable_queue, stream, offset, stream_retention,
                                     stream_max_bytes)
    state = app.events.State(max_tasks_in_memory=max_tasks)
    metrics = ClusterMetrics(
        state, prefix=metric_prefix, buckets=buckets, queue_wait_buckets=queue_wait_buckets,
        static_labels=static_labels, max_label_values=max_label_values,
        generic_hostname_task_sent=generic_hostname_task_sent_metric,
        worker_timeout=worker_timeout, purge_offline_after=purge_offline_worker_metrics)
    try:
        server = Exporter(app, metrics, queues=queues, address=address, port=port,
                          queue_interval=queue_interval,
                          source=BrokerSource(app, connect_retries=None,
                                              subscription=subscription))
    except OSError as exc:
        raise CommandError(f"cannot listen on {address}:{port}: {exc.strerror or exc}") from exc
    set_process_title("tidings exporter")
    stop = stop_on_signals()
    click.echo(f"-> exporter: metrics at {server.server.url}/metrics, events from "
               f"{server.source.label}", err=True)
    server.run(stop, on_status=lambda status: click.echo(f"-> {status}", err=True))
