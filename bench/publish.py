"""Publishing: Celery 5.7's ``EventDispatcher`` against ours, in one run.

Two measures, each implementation in a fresh process of its own, the two
interleaved:

* ``rate``: ``dispatcher.send('task-started', ...)`` as fast as it goes,
  one message per event (no ``buffer_group``), on each broker: events/s.
* ``delay``: a dispatcher with ``buffer_group=['task']`` (Celery's default
  ``buffer_limit``, 24) sending ``task-started``
  events at a steady ``--delay-rate`` per second; a receiver (ours, the
  same for both) notes, for each event, the time from the event's
  ``timestamp`` to its arrival: median and p99 of that delay.  Ours runs
  with adaptive batching at the worker's shortest delay
  (``max_delay=TASK_EVENT_MAX_DELAY``), its timer thread publishing.
  ``bench/worker_throughput.py --measures delay`` measures the same delay
  behind real workers.

    python bench/publish.py [--events 20000] [--brokers amqp,redis] [--repeat 3]
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
sys.path.insert(0, str(ROOT / "bench"))

from receive import delete_exchange  # noqa: E402

BROKERS = {"amqp": "amqp://guest:guest@127.0.0.1:5672//", "redis": "redis://127.0.0.1:6379/14"}
FIELDS = {"uuid": "3e5b0a52-5f0a-4c47-9a4b-2a3b5e1c1d0f", "name": "proj.tasks.add",
          "args": "(2, 2)", "kwargs": "{}", "retries": 0}


def dispatcher(impl: str, broker: str, exchange: str, buffered: bool) -> tuple[object, object]:
    """``(connection, dispatcher)`` of ``impl``, publishing to ``exchange``."""
    options: dict = {"buffer_group": ["task"]} if buffered else {}
    if impl == "celery":
        from celery import Celery

        app = Celery("bench", broker=broker)
        app.conf.event_exchange = exchange
    else:
        from tidings import App

        app = App("bench", broker=broker, event_exchange=exchange)
        if buffered:  # adaptive batching, as the worker has it
            from tidings.worker.worker import TASK_EVENT_MAX_DELAY

            options["max_delay"] = TASK_EVENT_MAX_DELAY
    conn = app.connection_for_write()
    return conn, app.events.Dispatcher(conn, hostname="bench@publish", **options)


def child_rate(impl: str, broker: str, exchange: str, events: str) -> None:
    conn, disp = dispatcher(impl, broker, exchange, buffered=False)
    n = int(events)
    for _ in range(200):  # connect, declare, warm up
        disp.send("task-started", **FIELDS)
    start = time.perf_counter()
    for _ in range(n):
        disp.send("task-started", **FIELDS)
    elapsed = time.perf_counter() - start
    print(json.dumps({"rate": n / elapsed}))
    conn.release()


def child_send_paced(impl: str, broker: str, exchange: str, rate: str, seconds: str) -> None:
    conn, disp = dispatcher(impl, broker, exchange, buffered=True)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()  # the receiver is bound
    interval = 1.0 / float(rate)
    start = time.perf_counter()
    n = int(float(rate) * float(seconds))
    for i in range(n):
        wait = start + i * interval - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        disp.send("task-started", **FIELDS)
    time.sleep(0.2)
    disp.flush()
    disp.close()
    conn.release()


def child_receive(broker: str, exchange: str) -> None:
    """Print ``ready``, then, once stdin closes, the delays seen (JSON)."""
    import select

    from tidings import App

    app = App("bench", broker=broker, event_exchange=exchange)
    delays: list[float] = []
    now = time.time

    def on_event(event: dict) -> None:
        if event.get("type", "").startswith("task-"):
            delays.append(now() - event["timestamp"])

    conn = app.connection_for_read()
    recv = app.events.Receiver(conn, handlers={"*": on_event})
    base = type(recv)
    stop_check = [0.0]

    class Receiver(base):  # type: ignore[misc, valid-type]
        def on_consume_ready(self, connection, channel, consumers, **kwargs):
            super().on_consume_ready(connection, channel, consumers, wakeup=False)
            sys.stdout.write("ready\n")
            sys.stdout.flush()

        def on_iteration(self):
            t = time.monotonic()
            if t >= stop_check[0]:
                stop_check[0] = t + 0.2
                if select.select([sys.stdin], [], [], 0)[0]:
                    self.should_stop = True

    recv.__class__ = Receiver
    for _ in recv.itercapture(limit=None, timeout=None, wakeup=False):
        if recv.should_stop:
            break
    print(json.dumps(delays))


def _python(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--child", *args], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, **kwargs)


def measure_rate(impl: str, broker: str, events: int) -> float:
    exchange = f"bench.publish.{uuid.uuid4().hex[:8]}"
    child = _python("rate", impl, broker, exchange, str(events))
    try:
        out, _ = child.communicate(timeout=600)
        return json.loads(out)["rate"]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        delete_exchange(broker, exchange)


def measure_delay(impl: str, broker: str, rate: float, seconds: float) -> list[float]:
    exchange = f"bench.publish.{uuid.uuid4().hex[:8]}"
    receiver = _python("receive", broker, exchange)
    sender = _python("paced", impl, broker, exchange, str(rate), str(seconds))
    try:
        assert receiver.stdout is not None and sender.stdout is not None
        for proc in (receiver, sender):
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit(f"{impl}: a child did not start")
        if broker.startswith("redis"):
            time.sleep(0.5)  # PUB/SUB subscriptions are made on the receiver's first poll
        sender.communicate("go\n", timeout=seconds + 60)
        time.sleep(0.5)
        out, _ = receiver.communicate("stop\n", timeout=60)
        return json.loads(out)
    finally:
        for proc in (receiver, sender):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        delete_exchange(broker, exchange)  # and the receiver's dead-letter exchange


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per rate run")
    parser.add_argument("--brokers", default="amqp,redis")
    parser.add_argument("--measures", default="rate,delay")
    parser.add_argument("--delay-rate", type=float, default=1000.0)
    parser.add_argument("--delay-seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        return {"rate": child_rate, "paced": child_send_paced,
                "receive": child_receive}[kind](*rest)
    measures = args.measures.split(",")
    lines = []
    for name in args.brokers.split(","):
        broker = BROKERS[name]
        if "rate" in measures:
            rates: dict[str, list[float]] = {"celery": [], "tidings": []}
            for _ in range(args.repeat):
                for impl in rates:
                    rates[impl].append(measure_rate(impl, broker, args.events))
                    print(f"  {name} rate {impl}: {rates[impl][-1]:,.0f} ev/s", file=sys.stderr)
            c, t = statistics.median(rates["celery"]), statistics.median(rates["tidings"])
            lines.append(f"{name:<6}{'publish, one message per event (ev/s)':<46}"
                         f"{c:>10,.0f}{t:>10,.0f}{t / c:>8.2f}x")
        if "delay" in measures:
            p50: dict[str, list[float]] = {"celery": [], "tidings": []}
            p99: dict[str, list[float]] = {"celery": [], "tidings": []}
            for _ in range(args.repeat):
                for impl in p50:
                    delays = measure_delay(impl, broker, args.delay_rate, args.delay_seconds)
                    p50[impl].append(percentile(delays, 0.50))
                    p99[impl].append(percentile(delays, 0.99))
                    print(f"  {name} delay {impl}: {len(delays)} events, p50 "
                          f"{p50[impl][-1] * 1e3:.2f} ms, p99 {p99[impl][-1] * 1e3:.2f} ms",
                          file=sys.stderr)
            for label, table in (("p50", p50), ("p99", p99)):
                c, t = statistics.median(table["celery"]), statistics.median(table["tidings"])
                measure = f"batched delay at {args.delay_rate:,.0f} ev/s, {label} (ms)"
                lines.append(f"{name:<6}{measure:<46}"
                             f"{c * 1e3:>10.2f}{t * 1e3:>10.2f}{t / c:>8.2f}x")
    print(f"\npublishing (median of {args.repeat})")
    print(f"{'broker':<7}{'measure':<45}{'celery':>10}{'tidings':>10}{'ratio':>9}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
