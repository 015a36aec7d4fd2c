"""Worker throughput: no-op tasks through a Tidings worker and a Celery worker, same run.

For each implementation, pool (solo, prefork) and task events (off, on): publish
``--tasks`` messages (20k) to a fresh queue on RabbitMQ, start the worker,
and time from its first consumed message until the queue is empty.

    python bench/worker_throughput.py [--tasks 20000] [--broker amqp://...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def publish(url: str, queue: str, name: str, n: int) -> None:
    from tidings import App
    from tidings.protocol.tasks import build_message

    app = App("bench", broker=url)
    for _ in range(n):
        app.publisher.publish(build_message(name, queue=queue), sent_event=False)
    app.publisher.close()


def depth(url: str, queue: str) -> int:
    from kombu import Connection

    with Connection(url) as conn:
        return conn.default_channel.queue_declare(queue, passive=True).message_count


def drop(url: str, queue: str) -> None:
    from kombu import Connection, Queue

    with Connection(url) as conn:
        Queue(queue, channel=conn.default_channel).delete()


def measure(impl: str, pool: str, events: bool, url: str, n: int) -> float:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    name = "proj.noop" if impl == "tidings" else "interop.noop"
    publish(url, queue, name, n)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TIDINGS_BROKER_URL=url, INTEROP_BROKER=url,
               INTEROP_QUEUE=queue, TIDINGS_TASK_DEFAULT_QUEUE=queue,
               TIDINGS_EVENT_EXCHANGE="bench-ev", INTEROP_EVENT_EXCHANGE="bench-ev",
               TIDINGS_CONTROL_EXCHANGE="bench-ctl", INTEROP_CONTROL_EXCHANGE="bench-ctl")
    concurrency = "1" if pool == "solo" else "2"
    if impl == "tidings":
        cmd = [sys.executable, "-m", "tidings", "-A", "tests.worker.proj", "worker", "-P", pool,
               "-c", concurrency, "-Q", queue, "-l", "WARNING", "-n", "bench@%h"]
    else:
        cmd = [sys.executable, "-m", "celery", "-A", "tests.interop.celery_app", "worker",
               "-P", pool, "-c", concurrency, "-Q", queue, "-l", "WARNING", "-n", "bench@%h",
               "--without-gossip", "--without-mingle"]
    if events:
        cmd.append("-E")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while depth(url, queue) >= n:
            time.sleep(0.005)
        start = time.perf_counter()
        while depth(url, queue) > 0:
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(60)
        drop(url, queue)
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    args = parser.parse_args()
    print(f"{args.tasks} no-op tasks per run, RabbitMQ; prefork with 2 processes")
    print(f"{'':22}{'events off':>12}{'events on':>12}{'on/off':>9}")
    rates = {}
    for pool in ("solo", "prefork"):
        for impl in ("celery", "tidings"):
            off = measure(impl, pool, False, args.broker, args.tasks)
            on = measure(impl, pool, True, args.broker, args.tasks)
            rates[impl, pool] = (off, on)
            print(f"{impl + ' ' + pool:<22}{off:>10,.0f}/s{on:>10,.0f}/s{on / off:>9.2f}")
    for pool in ("solo", "prefork"):
        (c_off, c_on), (t_off, t_on) = rates["celery", pool], rates["tidings", pool]
        print(f"{pool}: tidings/celery events off {t_off / c_off:.2f}x, "
              f"events on {t_on / c_on:.2f}x")


if __name__ == "__main__":
    main()
