"""``tidings worker``: run tasks and emit their events."""

from __future__ import annotations

import logging

import click
from kombu.exceptions import OperationalError

from ..protocol.events import HEARTBEAT_INTERVAL
from ..utils.parent import honour_parent_env
from .common import Context, broker_unreachable, set_process_title, setup_logging


def _queues(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    return [q.strip() for v in value for q in v.split(",") if q.strip()]


def _autoscale(value: str | None) -> tuple[int, int] | None:
    """``MAX,MIN`` or ``MAX`` (Celery's spelling: the maximum comes first)."""
    if not value:
        return None
    parts = [p.strip() for p in value.split(",")]
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"expected MAX,MIN (two integers), not {value!r}",
                                 param_hint="'--autoscale'") from None
    if len(numbers) not in (1, 2):
        raise click.BadParameter("expected MAX,MIN", param_hint="'--autoscale'")
    return numbers[0], numbers[1] if len(numbers) == 2 else 0


@click.command("worker")
@click.option("-E", "--task-events", "--events", "task_events", is_flag=True, default=None,
              help="Send task events (else worker_send_task_events decides).")
@click.option("-n", "--hostname", help="Node name, e.g. w1@%h (default tidings@<host>).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1),
              help="Tasks run at once (default: number of CPUs; 1 for solo).")
@click.option("-P", "--pool", type=click.Choice(["prefork", "threads", "solo"]),
              default="prefork", show_default=True)
@click.option("-Q", "--queues", multiple=True, callback=_queues,
              help="Queues to consume, comma separated (default: task_default_queue, celery).")
@click.option("-l", "--loglevel", type=click.Choice(
    ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
    help="Logging level of the worker (overrides the global -l).")
@click.option("--without-heartbeat", is_flag=True,
              help="Send no worker-online/heartbeat/offline events.")
@click.option("--heartbeat-interval", type=click.FloatRange(min=0.1), default=HEARTBEAT_INTERVAL,
              show_default=True, help="Seconds between worker-heartbeat events.")
@click.option("--autoscale", callback=lambda c, p, v: _autoscale(v), metavar="MAX,MIN",
              help="Grow the pool up to MAX and shrink it down to MIN with the load "
                   "(threads and prefork pools).")
@click.option("--prefetch-multiplier", type=click.IntRange(min=1), default=4,
              show_default=True, help="Messages reserved per pool slot.")
@click.option("--events-confirm", is_flag=True, default=None,
              help="RabbitMQ: send events persistent, each confirmed by the broker, so "
                   "that a --queue or --stream reader loses none across a broker restart.")
@click.pass_obj
def worker(obj: Context, task_events: bool | None, hostname: str | None,
           concurrency: int | None, pool: str, queues: list[str], loglevel: str | None,
           without_heartbeat: bool, heartbeat_interval: float,
           autoscale: tuple[int, int] | None, prefetch_multiplier: int,
           events_confirm: bool | None) -> None:
    """Consume task messages and run them; -E also sends task events."""
    from ..worker import Worker

    if loglevel:
        setup_logging(loglevel.upper())
    logging.getLogger("tidings.worker").setLevel(logging.INFO if not loglevel
                                                 else loglevel.upper())
    app = obj.app
    if events_confirm:
        app.conf.worker_events_confirm = True
    if not app.tasks:
        click.echo("Warning: the app registers no task (-A MODULE with @app.task functions)",
                   err=True)
    try:
        w = Worker(app, hostname=hostname, concurrency=concurrency, pool=pool, queues=queues,
                   task_events=task_events, heartbeat=not without_heartbeat,
                   heartbeat_interval=heartbeat_interval,
                   prefetch_multiplier=prefetch_multiplier, autoscale=autoscale)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    set_process_title(f"tidings worker {w.hostname}")
    w.install_signal_handlers()
    honour_parent_env()  # started by the demo: stop when it dies, however it dies
    try:
        w.run()
    except OperationalError as exc:
        raise broker_unreachable(app, exc) from exc
