"""``tidings demo``: a two-worker cluster and a client, with the events shown live."""

from __future__ import annotations

import sys

import click
from kombu.exceptions import OperationalError

from ..transport import redact_url
from .common import Context, broker_unreachable


@click.command("demo")
@click.option("--duration", type=click.FloatRange(min=5), metavar="SECONDS",
              help="Stop after this long (default: until Ctrl-C).")
@click.option("--worker-log", type=click.Path(dir_okay=False),
              help="Write the workers' logs to this file.")
@click.option("--dump", is_flag=True,
              help="Print the events as text instead of the live monitor (the default "
                   "when the output is not a terminal).")
@click.pass_obj
def demo(obj: Context, duration: float | None, worker_log: str | None, dump: bool) -> None:
    """Run two workers and a client on the embedded broker (or -b URL); show the events."""
    from .. import demo as demo_module

    if obj.broker:
        demo_module.app.conf.broker_url = obj.broker
    app = demo_module.app
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=2, interval_start=0.5)
    except OperationalError as exc:
        raise broker_unreachable(app, exc) from exc
    click.echo(f"-> demo: broker {redact_url(app.conf.broker_url)}; two workers, task events "
               f"on; Ctrl-C to stop", err=True)
    log = open(worker_log, "a") if worker_log else None  # noqa: SIM115
    try:
        monitor = not dump and sys.stdout.isatty() and sys.stdin.isatty()
        code = demo_module.run_demo(duration, sys.stdout, log, monitor=monitor)
    finally:
        if log is not None:
            log.close()
    sys.exit(code)
