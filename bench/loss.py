"""Loss under a burst: Celery's receiver against ours, default and durable modes, in one run.

Four publisher processes (Tidings dispatchers: ``task.multi`` batches of 24,
as workers send them) burst ``--events`` events in all at the event exchange
as fast as they can.  Receivers consume at the same time, each in a process
of its own, started before the burst:

* ``celery``: Celery 5.7's ``EventReceiver`` with its defaults (a transient
  queue, 5 s message TTL on RabbitMQ; PUB/SUB on Redis), restarted by the
  bench when its connection drops (Celery's ``capture()`` does not);
* ``tidings``: ours with the same defaults (``BrokerSource``);
* ``tidings --queue`` and ``tidings --stream`` (RabbitMQ only).

Once the publishers are done and every receiver has been quiet for 3 s,
each prints what it received.  The table: events received, events actually
lost (sent - received), events the receiver *reported* lost, and its
receive rate (events received over the time from its first to its last).

    python bench/loss.py [--events 300000] [--publishers 4] [--brokers amqp,redis]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BROKERS = {"amqp": "amqp://guest:guest@127.0.0.1:5672//", "redis": "redis://127.0.0.1:6379/13"}
QUIET = 3.0

# A receiver: counts events, writes its count to a file twice a second, prints JSON at
# the end (stdin closed).  argv: kind broker exchange progress-file [name]
RECEIVER = r"""
import json, sys, threading, time
kind, broker, exchange, progress = sys.argv[1:5]
name = sys.argv[5] if len(sys.argv) > 5 else None
count, first, last = [0], [None], [None]
def handle(event):
    now = time.monotonic()
    if first[0] is None:
        first[0] = now
    last[0] = now
    count[0] += 1
stop = threading.Event()
reported = lambda: 0
if kind == "celery":
    from celery import Celery
    app = Celery("bench", broker=broker)
    app.conf.event_exchange = exchange
    ready = threading.Event()
    def run():
        while not stop.is_set():
            try:
                with app.connection_for_read() as conn:
                    recv = app.events.Receiver(conn, handlers={"*": handle})
                    ready.set()
                    for _ in recv.itercapture(limit=None, timeout=1, wakeup=False):
                        if stop.is_set():
                            return
            except Exception:  # a timeout when idle, or the connection dropped: go on
                if stop.is_set():
                    return
                time.sleep(0.1)
    threading.Thread(target=run, daemon=True).start()
    ready.wait(30)
    time.sleep(1)
else:
    from tidings import App
    from tidings.events.source import BrokerSource
    from tidings.events.subscription import Subscription
    app = App("bench", broker=broker, event_exchange=exchange)
    sub = Subscription(queue=name) if kind == "queue" else (
        Subscription(stream=name) if kind == "stream" else None)
    source = BrokerSource(app, wakeup=False, connect_retries=None, subscription=sub)
    threading.Thread(target=source.run, args=(handle, stop), daemon=True).start()
    while not (source.status is not None and source.status.ok):
        time.sleep(0.05)
    time.sleep(0.5)
    reported = lambda: source.losses.total
sys.stderr.write("ready\n"); sys.stderr.flush()
def write():
    while True:
        with open(progress, "w") as f:
            f.write(str(count[0]))
        time.sleep(0.5)
threading.Thread(target=write, daemon=True).start()
sys.stdin.read()
stop.set()
elapsed = (last[0] - first[0]) if first[0] is not None and last[0] != first[0] else None
print(json.dumps({"received": count[0], "reported": reported(),
                  "rate": count[0] / elapsed if elapsed else None}))
"""

# A publisher: argv: broker exchange events; prints the events it sent.
PUBLISHER = r"""
import sys, time, os
from tidings import App
from tidings.events import EventDispatcher
broker, exchange, events = sys.argv[1], sys.argv[2], int(sys.argv[3])
app = App("bench", broker=broker, event_exchange=exchange)
with app.connection_for_write() as conn:
    d = EventDispatcher(conn, hostname=f"burst{os.getpid()}@bench", app=app,
                        buffer_group=["task"], buffer_limit=24)
    for i in range(events):
        d.send("task-started", uuid=str(i))
    d.flush()
print(events)
"""


def run_broker(broker: str, url: str, events: int, publishers: int) -> list[tuple]:
    exchange = f"bench-loss-{uuid.uuid4().hex[:8]}"
    kinds = ["celery", "tidings"] + (["queue", "stream"] if broker == "amqp" else [])
    names = {k: f"{exchange}-{k}" for k in ("queue", "stream")}
    tmp = Path(tempfile.mkdtemp())
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    receivers = {}
    for kind in kinds:
        args = [sys.executable, "-c", RECEIVER, kind, url, exchange, str(tmp / kind)]
        if kind in names:
            args.append(names[kind])
        receivers[kind] = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True, env=env)
    for kind, proc in receivers.items():
        line = proc.stderr.readline()
        if "ready" not in line:
            raise SystemExit(f"{kind} receiver did not start: {line}{proc.stderr.read()}")
    share = events // publishers
    started = time.monotonic()
    pubs = [subprocess.Popen([sys.executable, "-c", PUBLISHER, url, exchange, str(share)],
                             stdout=subprocess.PIPE, text=True, env=env)
            for _ in range(publishers)]
    sent = sum(int(p.communicate()[0]) for p in pubs)
    burst = time.monotonic() - started

    def counts() -> dict[str, int]:
        out = {}
        for kind in kinds:
            try:
                out[kind] = int((tmp / kind).read_text() or 0)
            except (OSError, ValueError):
                out[kind] = 0
        return out

    last, still = counts(), time.monotonic()
    while time.monotonic() - still < QUIET:
        time.sleep(0.5)
        now = counts()
        if now != last:
            last, still = now, time.monotonic()
    rows = []
    for kind, proc in receivers.items():
        out, _ = proc.communicate("", timeout=60)
        result = json.loads(out.strip().splitlines()[-1])
        rows.append((broker, kind, sent, result["received"], sent - result["received"],
                     result["reported"], result["rate"]))
    cleanup(url, exchange, names)
    print(f"{broker}: {sent:,} events published by {publishers} processes in {burst:.1f} s "
          f"({sent / burst:,.0f} events/s)", flush=True)
    return rows


def cleanup(url: str, exchange: str, names: dict[str, str]) -> None:
    from kombu import Connection, Exchange, Queue

    with Connection(url) as conn:
        if url.startswith("redis"):
            conn.default_channel.client.delete(f"_kombu.binding.{exchange}")
            return
        for name in (*names.values(), names["queue"] + ".dead"):
            try:
                Queue(name, channel=conn.channel()).delete()
            except Exception:
                pass
        for name in (exchange, exchange + ".dead"):
            try:
                Exchange(name, channel=conn.channel()).delete()
            except Exception:
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--brokers", default="amqp,redis")
    args = parser.parse_args()
    rows = []
    for broker in args.brokers.split(","):
        rows += run_broker(broker, BROKERS[broker], args.events, args.publishers)
    label = {"celery": "Celery 5.7 receiver", "tidings": "tidings (default)",
             "queue": "tidings --queue", "stream": "tidings --stream"}
    print("\n| broker | receiver | sent | received | lost | reported lost | receive events/s |")
    print("|---|---|---|---|---|---|---|")
    for broker, kind, sent, received, lost, reported, rate in rows:
        print(f"| {broker} | {label[kind]} | {sent:,} | {received:,} | {lost:,} | "
              f"{'—' if kind == 'celery' else f'{reported:,}'} | "
              f"{f'{rate:,.0f}' if rate else '—'} |")
    by = {(b, k): r for b, k, *_, r in rows}
    for broker in args.brokers.split(","):
        ours, theirs = by.get((broker, "tidings")), by.get((broker, "celery"))
        if ours and theirs:
            print(f"{broker}: receive rate tidings / Celery = {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
