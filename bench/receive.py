"""Receiver CPU per event: Celery 5.7's ``EventReceiver`` against ours, same stream, one run.

Each receiver runs in a process of its own with a handler that only counts
(``{'*': count}``), so what is measured is the receive path: reading the
socket, kombu's message handling, decoding, validation, the clock rule and
the dispatch.  This process publishes the stream (serialized beforehand) to
an exchange of the run's own, keeping at most a window of events ahead of
the receiver so that neither a RabbitMQ queue nor a Redis PUB/SUB buffer
grows without bound.  The receiver's CPU time (``time.process_time``) from
its first event to the end, divided by the events, is its cost per event
(idle, a receiver polls once a second, which costs next to nothing); the
publisher's CPU is not counted.  The stream comes as fast as this process
publishes it (about 4-5k one-event messages a second on Redis here, more
on RabbitMQ, where our receiver is often behind it), and ours paces its
reads by the rate it sees (``tidings/transport/pacing.py``): its cost per
one-event message is that of this rate, and is higher for a stream of
fewer than 2,500 messages a second, which it reads a millisecond apart.

Two shapes of input, on each broker:

* ``single``: one message per event (a worker without ``buffer_group``,
  a client's ``task-sent``);
* ``multi``: task events in ``task.multi`` batches of 100 (a worker's
  task events), worker events one per message.

The events are ``bench/state_ingest.py``'s stream (four or so per task,
heartbeats of 10 workers), with Celery's fields.

    python bench/receive.py [--events 50000] [--brokers amqp,redis] [--repeat 3]
    BENCH_PROFILE=/tmp/recv python bench/receive.py ...   # cProfile each receiver
    BENCH_SPLIT=1 python bench/receive.py ...   # user and system CPU per event apart
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

BROKERS = {"amqp": "amqp://guest:guest@127.0.0.1:5672//", "redis": "redis://127.0.0.1:6379/14"}
BATCH = 100
#: Events the publisher may be ahead of the receiver: bounds the broker's buffer
#: (a Redis PUB/SUB client is cut off past 8 MiB held for a minute).
WINDOW = {"single": 2_000, "multi": 20_000}
#: A receiver reports its count every this many events.
REPORT_EVERY = 500
QUIET = 3.0  # seconds without an event after the last publish: the receiver is done


def messages(n_events: int, mode: str) -> list[tuple[str, str, int]]:
    """``(routing_key, body, events)`` for the stream, serialized."""
    from state_ingest import stream

    out: list[tuple[str, str, int]] = []
    batch: list[dict] = []
    for n, event in enumerate(stream(n_events // 4 + 1)):
        if n >= n_events:
            break
        event.pop("local_received", None)
        type_ = event["type"]
        if mode == "multi" and type_.startswith("task-"):
            batch.append(event)
            if len(batch) == BATCH:
                out.append(("task.multi", json.dumps(batch), len(batch)))
                batch = []
        else:
            out.append((type_.replace("-", "."), json.dumps(event), 1))
    if batch:
        out.append(("task.multi", json.dumps(batch), len(batch)))
    return out


# -- the receiver process ----------------------------------------------------------------

def receiver(impl: str, broker: str, exchange: str) -> None:
    """Count events; print progress lines, then ``{"events", "cpu"}`` as JSON at the end."""
    count = 0
    first_cpu = 0.0
    first_times = [0.0, 0.0]
    next_check = [0.0]
    out = sys.stdout

    def handle(event: dict) -> None:
        nonlocal count, first_cpu
        count += 1
        if count == 1:
            first_cpu = time.process_time()
            first_times[:] = os.times()[:2]
        elif count % REPORT_EVERY == 0:
            out.write(f"{count}\n")
            out.flush()

    if impl == "celery":
        from celery import Celery

        app = Celery("bench", broker=broker)
        app.conf.event_exchange = exchange
        app.conf.event_queue_ttl = None
        conn = app.connection_for_read()
        base = app.events.Receiver
    else:
        from tidings import App

        app = App("bench", broker=broker, event_exchange=exchange, event_queue_ttl=None)
        conn = app.connection_for_read()
        base = app.events.Receiver
    recv = base(conn, handlers={"*": handle})
    cls = type(recv)

    class Receiver(cls):  # type: ignore[misc, valid-type]
        def on_consume_ready(self, connection, channel, consumers, **kwargs):
            super().on_consume_ready(connection, channel, consumers, wakeup=False)
            out.write("ready\n")
            out.flush()

        def on_iteration(self):
            super().on_iteration()
            now = time.monotonic()
            if now >= next_check[0]:  # at most twice a second: not a system call per drain
                next_check[0] = now + 0.5
                if sys.stdin in select.select([sys.stdin], [], [], 0)[0]:
                    self.should_stop = True

    recv.__class__ = Receiver
    profile = os.environ.get("BENCH_PROFILE")  # a file for cProfile's statistics
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    for _ in recv.itercapture(limit=None, timeout=None, wakeup=False):
        if recv.should_stop:
            break
    if profile:
        profiler.disable()
        profiler.dump_stats(f"{profile}.{impl}")
    # to the end: waiting after the last event costs next to no CPU (one poll a second)
    elapsed = time.process_time() - first_cpu
    times = os.times()
    out.write(json.dumps({"events": count, "cpu": elapsed, "user": times[0] - first_times[0],
                          "sys": times[1] - first_times[1]}) + "\n")
    out.flush()


# -- this process: publish and measure ---------------------------------------------------

def publish_and_measure(impl: str, broker: str, msgs: list[tuple[str, str, int]],
                        window: int) -> tuple[int, float]:
    from kombu import Connection

    from tidings.transport import get_exchange

    exchange_name = f"bench.receive.{uuid.uuid4().hex[:8]}"
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", impl, broker, exchange_name],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert child.stdout is not None and child.stdin is not None
    received = 0

    def read_progress(timeout: float) -> None:
        nonlocal received
        if select.select([child.stdout], [], [], timeout)[0]:
            line = child.stdout.readline()
            if line.strip().isdigit():
                received = int(line)

    try:
        if child.stdout.readline().strip() != "ready":
            raise SystemExit(f"{impl} receiver did not start")
        with Connection(broker) as conn:
            exchange = get_exchange(conn, exchange_name)
            publish = stream_publisher(conn, exchange)
            if conn.transport.driver_type == "redis":
                time.sleep(0.5)  # the receiver's PUB/SUB subscription is made on its first poll
            sent = 0
            for routing_key, body, events in msgs:
                while sent - received > window:
                    read_progress(1.0)
                publish(routing_key, body)
                sent += events
        total = sum(m[2] for m in msgs)
        deadline = time.monotonic() + QUIET
        while received < total - REPORT_EVERY and time.monotonic() < deadline:
            before = received
            read_progress(0.5)
            if received != before:
                deadline = time.monotonic() + QUIET
        time.sleep(0.5)
        child.stdin.write("stop\n")
        child.stdin.flush()
        result = None
        for line in child.stdout:
            if line.startswith("{"):
                result = json.loads(line)
        if result is None or result["events"] < 2:
            raise SystemExit(f"{impl} receiver reported nothing")
        if os.environ.get("BENCH_SPLIT"):  # user and system CPU per event, apart
            print(f"  user {result['user'] / result['events'] * 1e6:.1f} µs, "
                  f"system {result['sys'] / result['events'] * 1e6:.1f} µs per event")
        return result["events"], result["cpu"] / result["events"]
    finally:
        child.kill()
        child.wait()
        delete_exchange(broker, exchange_name)


def stream_publisher(conn: Any, exchange: Any) -> Callable[[str, str], None]:
    """``publish(routing_key, body)``: one message of the stream, as a Celery sender
    sends it (JSON, ``utf-8``, a ``hostname`` header, not persistent).

    The frames are the ones kombu's ``Producer.publish`` writes (tidings'
    prepared path, byte for byte the same; kombu's own where that path does
    not apply), at a fraction of its CPU: on 2 cores the publisher shares the
    machine with the broker and the process measured, and kombu's 60-100 µs
    per message would be a third of the machine in ``bench/dump.py``.
    """
    from kombu import Producer

    from tidings.transport.publish import publish_prepared

    producer = Producer(conn.default_channel, exchange=exchange)
    producer.maybe_declare(exchange)  # the prepared path needs it declared on this connection

    def publish(routing_key: str, body: str) -> None:
        if not publish_prepared(producer, exchange, routing_key, body, {}, "hostname",
                                "bench", "application/json", "utf-8", 1):
            producer.publish(body, routing_key=routing_key, content_type="application/json",
                             content_encoding="utf-8", headers={"hostname": "bench"},
                             delivery_mode=1, declare=[])

    return publish


def delete_exchange(broker: str, name: str) -> None:
    """The run's exchange goes with it, and on RabbitMQ the dead-letter exchange a
    receiver declares beside it, on Redis kombu's deadline for its bindings (a
    broker error here loses nothing)."""
    from kombu import Connection

    from tidings.transport import get_exchange

    with Connection(broker) as conn:
        try:
            channel = conn.default_channel
            get_exchange(conn, name)(channel).delete()
            if conn.transport.driver_type == "redis":
                # kombu keeps, beside the binding table of an exchange with an
                # expiring queue, its deadline: it goes too
                channel.client.zrem(channel.keyprefix_binding_deadlines, name)
        except Exception:
            pass
    delete_dead_letters(broker, name)


def delete_dead_letters(broker: str, name: str) -> None:
    """On RabbitMQ, the dead-letter exchange a receiver of exchange ``name`` declared
    beside it (a broker error here loses nothing)."""
    from kombu import Connection, Exchange

    from tidings.protocol.loss import DEAD_LETTER_SUFFIX

    with Connection(broker) as conn:
        try:
            if conn.transport.driver_type == "amqp":
                Exchange(name + DEAD_LETTER_SUFFIX)(conn.default_channel).delete()
        except Exception:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000,
                        help="events per run (multi runs use four times as many)")
    parser.add_argument("--brokers", default="amqp,redis")
    parser.add_argument("--modes", default="single,multi")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return receiver(*args.child)
    rows = []
    for name in args.brokers.split(","):
        broker = BROKERS[name]
        for mode in args.modes.split(","):
            n = args.events * (4 if mode == "multi" else 1)
            msgs = messages(n, mode)
            cost: dict[str, list[float]] = {"celery": [], "tidings": []}
            for _ in range(args.repeat):
                for impl in ("celery", "tidings"):  # interleaved: both see the same machine
                    got, per_event = publish_and_measure(impl, broker, msgs, WINDOW[mode])
                    cost[impl].append(per_event)
                    print(f"  {name} {mode} {impl}: {got} events, {per_event * 1e6:.1f} µs/event",
                          file=sys.stderr)
            c, t = statistics.median(cost["celery"]), statistics.median(cost["tidings"])
            rows.append((name, mode, c, t))
    print(f"\nreceiver CPU per event (median of {args.repeat}; handler only counts)")
    print(f"{'broker':<7}{'input':<8}{'celery µs':>11}{'tidings µs':>12}{'ratio':>8}")
    for name, mode, c, t in rows:
        print(f"{name:<7}{mode:<8}{c * 1e6:>11.1f}{t * 1e6:>12.1f}{t / c:>7.2f}x")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
