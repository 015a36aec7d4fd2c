"""A client sending tasks: ``send_task`` with ``task_send_sent_event`` off and on, both apps.

Each run is a fresh process that sends ``--tasks`` tasks by name (no worker
consumes them; the run's queue and exchange are deleted after it) to
RabbitMQ or Redis, and prints tasks per second.  Off and on, Celery and
Tidings are interleaved, ``--repeat`` times; the table gives the medians,
what ``task-sent`` costs each (on ÷ off), and Tidings ÷ Celery.  The row
``tidings batched`` is a Tidings client with ``task_sent_event_max_delay``
of 5 ms as well (its events batched on a connection of their own), against
the same ``off`` figure.  Beside tasks/s, the client's CPU time per task
(``off/on``: what the event costs the client itself, apart from how the 2
cores are shared with the broker).

    python bench/client.py [--tasks 5000] [--brokers amqp,redis] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BROKERS = {"amqp": "amqp://guest:guest@127.0.0.1:5672//", "redis": "redis://127.0.0.1:6379/14"}
WARMUP = 200  # tasks sent before the clock starts: connections, declarations


#: ``task_sent_event_max_delay`` of the batched Tidings client.
BATCHED_DELAY = 0.005


def child(impl: str, broker: str, tag: str, sent: str, tasks: int) -> None:
    settings = {"event_exchange": f"{tag}-ev", "task_default_queue": f"{tag}-q",
                "task_send_sent_event": sent != "off"}
    if sent == "batched":
        settings["task_sent_event_max_delay"] = BATCHED_DELAY
    if impl == "celery":
        from celery import Celery

        app = Celery("bench", broker=broker, set_as_current=False)
        app.conf.update(settings)
    else:
        from tidings import App

        app = App("bench", broker=broker, **settings)
    for n in range(WARMUP):
        app.send_task("bench.noop", (n,))
    start, cpu = time.perf_counter(), time.process_time()
    for n in range(tasks):
        app.send_task("bench.noop", (n,))
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu  # every thread's: the batched client's timer too
    print(json.dumps({"rate": tasks / elapsed, "cpu": cpu / tasks * 1e6}))


def run(impl: str, broker: str, sent: str, tasks: int) -> tuple[float, float]:
    """Tasks per second, and the client's CPU µs per task."""
    tag = f"bench-client-{uuid.uuid4().hex[:8]}"
    try:
        out = subprocess.run([sys.executable, __file__, "--child", impl, broker, tag,
                              sent, str(tasks)],
                             check=True, capture_output=True, text=True, cwd=ROOT).stdout
        result = json.loads(out.strip().splitlines()[-1])
        return result["rate"], result["cpu"]
    finally:
        cleanup(broker, tag)


def cleanup(broker: str, tag: str) -> None:
    """The run's queue (full of tasks nobody runs) and event exchange go with it."""
    delete_declared(broker, [f"{tag}-q"], [f"{tag}-ev"])


def delete_declared(broker: str, queues: list[str], exchanges: list[str]) -> None:
    """Delete task queues (with, on RabbitMQ, the exchange of each one's name: Celery's)
    and exchanges a run declared, on RabbitMQ and Redis alike."""
    from kombu import Connection, Exchange

    from tidings.transport import task_queue

    with Connection(broker) as conn:
        channel = conn.default_channel
        for name in queues:
            queue = task_queue(name)(channel)
            try:
                queue.declare()  # on Redis, kombu deletes only bindings it declared itself
                queue.delete()
                if conn.transport.driver_type != "redis":
                    queue.exchange.delete()
            except Exception:
                pass
        for name in exchanges:
            try:
                if conn.transport.driver_type == "redis":  # its binding table, by kombu's name
                    channel.client.delete(channel.keyprefix_queue % name)
                else:
                    Exchange(name)(channel).delete()
            except Exception:
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--brokers", default="amqp,redis")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        impl, broker, tag, sent, tasks = args.child
        return child(impl, broker, tag, sent, int(tasks))
    runs = [("celery", "off"), ("tidings", "off"), ("celery", "on"), ("tidings", "on"),
            ("tidings", "batched")]
    rows = []
    for name in args.brokers.split(","):
        rates: dict[tuple[str, str], list[float]] = {}
        cpus: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.repeat):
            for impl, sent in runs:  # interleaved: all see the same machine
                rate, cpu = run(impl, BROKERS[name], sent, args.tasks)
                rates.setdefault((impl, sent), []).append(rate)
                cpus.setdefault((impl, sent), []).append(cpu)
                print(f"  {name} {impl} sent-event {sent}: {rate:,.0f} tasks/s, "
                      f"{cpu:.1f} µs CPU per task", file=sys.stderr)
        med = {key: statistics.median(v) for key, v in rates.items()}
        med_cpu = {key: statistics.median(v) for key, v in cpus.items()}
        rows.append((name, med, med_cpu))
    print(f"\nsend_task, tasks/s and the client's CPU µs per task "
          f"(median of {args.repeat}, {args.tasks:,} tasks)")
    print(f"{'broker':<7}{'':<17}{'off':>9}{'on':>9}{'on/off':>8}"
          f"{'CPU off':>9}{'on':>7}{'off/on':>8}")
    for name, med, med_cpu in rows:
        for label, impl, sent in (("celery", "celery", "on"), ("tidings", "tidings", "on"),
                                  ("tidings batched", "tidings", "batched")):
            off, on = med[(impl, "off")], med[(impl, sent)]
            cpu_off, cpu_on = med_cpu[(impl, "off")], med_cpu[(impl, sent)]
            print(f"{name:<7}{label:<17}{off:>9,.0f}{on:>9,.0f}{on / off:>8.2f}"
                  f"{cpu_off:>9.1f}{cpu_on:>7.1f}{cpu_off / cpu_on:>8.2f}")
        print(f"{'':<7}{'tidings÷celery':<17}"
              f"{med[('tidings', 'off')] / med[('celery', 'off')]:>8.2f}x"
              f"{med[('tidings', 'on')] / med[('celery', 'on')]:>8.2f}x")


if __name__ == "__main__":
    main()
