"""Web monitor: Flower 2.2 against ``tidings web`` on the same event stream, in one run.

Each monitor in turn consumes the same batched event stream (``task.multi``
messages of 100 events, as workers send them, published pre-serialized so
that the publisher is never the bottleneck) from RabbitMQ while it has 10
live clients connected — for ``tidings web`` 10 Server-Sent Event streams, for
Flower 10 pollers of ``/workers?json=1`` every second (what its workers page
does; it has no push channel) — and one ``GET /api/tasks?limit=15&search=...``
a second.  Both run with a 10-minute queue TTL, so the broker keeps what a
monitor has not read yet and the figure is the monitor's sustained ingest
rate (events received over the time from the first to the last), not its
losses (``bench/loss.py``'s subject).  Prints, for each: events received,
the rate, the ratio, and the latency of that API call over every task in
memory once the stream is in (p50 / p99 of ``--queries`` calls).

    python bench/web.py [--tasks 100000] [--queries 100]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EVENTS_PER_TASK = 3  # received, started, succeeded
CLIENTS = 10
SEARCH = "name:bench.work"

BATCH = 100
QUEUE_TTL = 600.0


def stream(tasks: int) -> list[str]:
    """The task.multi bodies: Celery's event dicts, JSON as the dispatcher writes them."""
    bodies, batch, clock, now = [], [], 0, time.time()
    for i in range(tasks):
        u = str(uuid.uuid4())
        for kind, extra in (
                ("task-received", {"name": "bench.work", "args": f"({i},)",
                                   "kwargs": f"{{'n': {i}}}", "retries": 0, "root_id": u,
                                   "parent_id": None, "eta": None, "expires": None}),
                ("task-started", {}),
                ("task-succeeded", {"result": str(i), "runtime": 0.001})):
            clock += 1
            batch.append({"hostname": f"bench{i % 4}@web", "utcoffset": 0, "pid": 100 + i % 4,
                          "clock": clock, "uuid": u, "timestamp": now + i * 1e-4,
                          "type": kind, **extra})
            if len(batch) == BATCH:
                bodies.append(json.dumps(batch))
                batch = []
    if batch:
        bodies.append(json.dumps(batch))
    return bodies


def publish(broker: str, exchange: str, bodies: list[str]) -> None:
    from kombu import Connection

    with Connection(broker) as conn:
        producer = conn.Producer()
        for body in bodies:
            producer.publish(body, exchange=exchange, routing_key="task.multi",
                             content_type="application/json", content_encoding="utf-8",
                             declare=[])


CELERY_APP = """
import os
from celery import Celery
app = Celery('bench', broker=os.environ['BENCH_BROKER'])
app.conf.event_exchange = os.environ['BENCH_EXCHANGE']
app.conf.event_queue_ttl = float(os.environ['BENCH_TTL'])
app.conf.event_queue_expires = float(os.environ['BENCH_TTL']) * 2
"""


def get(url: str, timeout: float = 30) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except OSError:
        return 0, b""


def counted(url: str, metric: str) -> float:
    status, body = get(url + "/metrics")
    if status != 200:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
               if line.startswith(metric + "{") or line.startswith(metric + " "))


class Clients:
    """The live clients and the per-second search of one monitor."""

    def __init__(self, base: str, kind: str) -> None:
        self.base, self.kind = base, kind
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.errors = 0
        self.threads = [threading.Thread(target=self._client, daemon=True)
                        for _ in range(CLIENTS)]
        self.threads.append(threading.Thread(target=self._search, daemon=True))
        for t in self.threads:
            t.start()

    def _client(self) -> None:
        host, port = self.base.split("//")[1].split(":")
        while not self.stop.is_set():
            if self.kind == "tidings":
                try:  # a live page: one SSE stream, read as it comes
                    conn = http.client.HTTPConnection(host, int(port), timeout=60)
                    conn.request("GET", "/api/live")
                    response = conn.getresponse()
                    while not self.stop.is_set():
                        if not response.readline():
                            break
                except OSError:
                    self.errors += 1
                    time.sleep(0.5)
            else:
                if get(self.base + "/workers?json=1", timeout=10)[0] != 200:
                    self.errors += 1
                self.stop.wait(1.0)

    def _search(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            if get(f"{self.base}/api/tasks?limit=15&search={SEARCH}", timeout=30)[0] != 200:
                self.errors += 1
            self.latencies.append(time.perf_counter() - started)
            self.stop.wait(max(0.0, 1.0 - (time.perf_counter() - started)))

    def close(self) -> None:
        self.stop.set()


def latency(base: str, n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        status, _ = get(f"{base}/api/tasks?limit=15&search={SEARCH}", timeout=60)
        times.append(time.perf_counter() - started)
        if status != 200:
            raise SystemExit(f"{base}: /api/tasks answered {status}")
    times.sort()
    return statistics.median(times) * 1000, times[min(len(times) - 1,
                                                      int(len(times) * 0.99))] * 1000


def run_phase(name: str, command: list[str], base: str, metric: str, env: dict,
              cwd: Path, broker: str, exchange: str, bodies: list[str], events: int,
              queries: int) -> dict:
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while get(base + "/healthcheck", 2)[0] != 200:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"{name} did not come up")
            time.sleep(0.5)
        time.sleep(3)  # consuming
        clients = Clients(base, name)
        began = time.monotonic()
        publisher = threading.Thread(target=publish, args=(broker, exchange, bodies))
        publisher.start()
        rows: list[tuple[float, float]] = []
        still = 0
        while True:
            time.sleep(1.0)
            count = counted(base, metric)
            still = still + 1 if rows and count == rows[-1][1] else 0
            rows.append((time.monotonic() - began, count))
            if count >= events or (not publisher.is_alive() and still >= 10):
                break
        publisher.join()
        clients.close()
        total = rows[-1][1]
        first = next((t for t, n in rows if n > 0), rows[0][0])
        last = next((t for t, n in rows if n >= total), rows[-1][0])
        p50, p99 = latency(base, queries)
        live_p99 = sorted(clients.latencies)[int(len(clients.latencies) * 0.99)] * 1000 \
            if clients.latencies else float("nan")
        return {"received": total, "rate": total / max(last - first + 1.0, 1.0),
                "p50": p50, "p99": p99, "live_p99": live_p99, "errors": clients.errors}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    args = parser.parse_args()

    tag = f"benchweb-{uuid.uuid4().hex[:6]}"
    exchange = f"{tag}-ev"
    tmp = Path(tempfile.mkdtemp(prefix="tidings-bench-web-"))
    (tmp / "bench_celery_app.py").write_text(CELERY_APP)
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{tmp}", TIDINGS_BROKER_URL=args.broker,
               TIDINGS_EVENT_EXCHANGE=exchange, TIDINGS_CONTROL_EXCHANGE=f"{tag}-ctl",
               TIDINGS_EVENT_QUEUE_TTL=str(QUEUE_TTL),
               TIDINGS_EVENT_QUEUE_EXPIRES=str(QUEUE_TTL * 2),
               BENCH_BROKER=args.broker, BENCH_EXCHANGE=exchange, BENCH_TTL=str(QUEUE_TTL),
               FLOWER_UNAUTHENTICATED_API="true")
    bodies = stream(args.tasks)
    events = args.tasks * EVENTS_PER_TASK
    py = sys.executable
    port = 19500 + os.getpid() % 400
    phases = {
        "flower": ([py, "-m", "celery", "-A", "bench_celery_app", "flower",
                    "--address=127.0.0.1", f"--port={port}", f"--max_tasks={args.tasks}"],
                   "flower_events_total"),
        "tidings": ([py, "-m", "tidings", "web", "--port", str(port + 1), "--max-tasks",
                     str(args.tasks)], "tidings_events_received_total"),
    }
    results = {}
    try:
        for i, (name, (command, metric)) in enumerate(phases.items()):
            results[name] = run_phase(name, command, f"http://127.0.0.1:{port + i}", metric,
                                      env, tmp, args.broker, exchange, bodies, events,
                                      args.queries)
    finally:
        from kombu import Connection, Exchange

        with Connection(args.broker) as conn:
            for name in (exchange, f"{tag}-ctl.pidbox", f"reply.{tag}-ctl.pidbox"):
                try:
                    Exchange(name, channel=conn.default_channel).delete()
                except Exception:
                    pass
    print(f"web monitors: {args.tasks:,} tasks = {events:,} events in task.multi batches "
          f"of {BATCH}, {CLIENTS} live clients and one search a second each, RabbitMQ, "
          "one monitor at a time")
    print(f"{'monitor':<10}{'received':>10}{'ingest ev/s':>13}{'search p99 live':>17}"
          f"{'search p50 ms':>15}{'search p99 ms':>15}{'errors':>8}")
    for name, r in results.items():
        print(f"{name:<10}{r['received']:>10,.0f}{r['rate']:>13,.0f}{r['live_p99']:>14.1f} ms"
              f"{r['p50']:>15.1f}{r['p99']:>15.1f}{r['errors']:>8}")
    print(f"ingest ratio tidings/flower: "
          f"{results['tidings']['rate'] / max(results['flower']['rate'], 1):.2f}x; search "
          f"({SEARCH}, limit 15) over {results['tidings']['received'] / 3:,.0f} tasks")


if __name__ == "__main__":
    main()
