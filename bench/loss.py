"""Loss under a burst: Celery's receiver against ours, default and durable modes, in one run.

Four publisher processes burst ``--events`` events in all at the event
exchange as fast as they can: ``task.multi`` batches of 100 events with
Celery's fields, serialized beforehand, each message with a Tidings
sender's sequence headers (so that our receiver can count gaps; Celery's
ignores them).  As workers do, each sends a heartbeat first (a receiver
knows a sender before its burst) and then one a second for 6 s, whose
numbers show a gap at the end of the burst; they count as events sent.
Receivers consume at the same time, each in a process of its own, started
before the burst:

* ``celery``: Celery 5.7's ``EventReceiver`` with its defaults (a transient
  queue, 5 s message TTL on RabbitMQ; PUB/SUB on Redis), restarted by the
  bench when its connection drops (Celery's ``capture()`` does not);
* ``tidings``: ours with the same defaults (``BrokerSource``);
* ``tidings --queue`` and ``tidings --stream`` (RabbitMQ only).

Once the publishers are done and every receiver has been quiet for 3 s,
each prints what it received.  The table: events received, events actually
lost (sent - received), events the receiver *reported* lost, and its
receive rate (burst events received over the time from its first to its
last).

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
count, burst, first, last = [0], [0], [None], [None]
def handle(event):
    count[0] += 1
    if event.get("type") == "worker-heartbeat":
        return  # the rate is the burst's
    burst[0] += 1
    now = time.monotonic()
    if first[0] is None:
        first[0] = now
    last[0] = now
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
                  "rate": burst[0] / elapsed if elapsed else None}))
"""

# A publisher: argv: broker exchange events; prints the events it sent.  Bodies are
# serialized before the burst (``task.multi`` batches of BATCH events, Celery's
# fields) and carry a Tidings sender's sequence headers, so the publisher is not
# the bottleneck and our receiver can count gaps.
PUBLISHER = r"""
import json, os, sys, time, uuid
HEARTBEATS = int(sys.argv[5])
from kombu import Connection
from tidings.protocol.loss import SENDER_HEADER, SEQUENCE_HEADER
from tidings.transport import get_exchange
broker, exchange, events, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
host = f"burst{os.getpid()}@bench"
sender = f"{host}/{os.getpid()}/{uuid.uuid4().hex[:12]}"
now, bodies = time.time(), []
for start in range(0, events, batch):
    bodies.append((start, json.dumps([
        {"hostname": host, "utcoffset": 0, "pid": os.getpid(), "clock": i + 1,
         "uuid": f"{host}-{i}", "timestamp": now, "type": "task-started"}
        for i in range(start, min(start + batch, events))])))
def heartbeat(producer, seq):
    producer.publish(json.dumps({"hostname": host, "utcoffset": 0, "pid": os.getpid(),
                                 "clock": seq + 1, "timestamp": time.time(),
                                 "type": "worker-heartbeat", "freq": 2.0, "active": 0,
                                 "processed": 0}),
                     exchange=exchange, routing_key="worker.heartbeat",
                     content_type="application/json", content_encoding="utf-8",
                     headers={"hostname": host, SENDER_HEADER: sender, SEQUENCE_HEADER: seq},
                     declare=[])
with Connection(broker) as conn:
    ex = get_exchange(conn, exchange)
    producer = conn.Producer()
    ex(producer.channel).declare()
    heartbeat(producer, 0)  # a worker is known before it bursts (worker-online)
    time.sleep(1.0)
    started = time.monotonic()
    for seq, body in bodies:
        producer.publish(body, exchange=exchange, routing_key="task.multi",
                         content_type="application/json", content_encoding="utf-8",
                         headers={"hostname": host, SENDER_HEADER: sender,
                                  SEQUENCE_HEADER: seq + 1}, declare=[])
    burst = time.monotonic() - started
    # then, as a worker does every 2 s, heartbeats: the first one after a gap shows it
    for beat in range(HEARTBEATS):
        time.sleep(1.0)
        heartbeat(producer, events + 1 + beat)
print(events + 1 + HEARTBEATS, burst)
"""
#: Heartbeats each publisher sends after its burst, one a second (a receiver cut off
#: by the burst is back within them).
HEARTBEATS = 6
BATCH = 100


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
    pubs = [subprocess.Popen([sys.executable, "-c", PUBLISHER, url, exchange, str(share),
                              str(BATCH), str(HEARTBEATS)],
                             stdout=subprocess.PIPE, text=True, env=env)
            for _ in range(publishers)]
    outputs = [p.communicate()[0].split() for p in pubs]
    sent = sum(int(n) for n, _ in outputs)
    burst = max(float(t) for _, t in outputs)  # they ran at once

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

    from tidings.protocol.loss import DEAD_LETTER_SUFFIX

    with Connection(url) as conn:
        if url.startswith("redis"):
            conn.default_channel.client.delete(f"_kombu.binding.{exchange}")
            return
        for name in (*names.values(), names["queue"] + DEAD_LETTER_SUFFIX):
            try:
                Queue(name, channel=conn.channel()).delete()
            except Exception:
                pass
        for name in (exchange, exchange + DEAD_LETTER_SUFFIX):
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
