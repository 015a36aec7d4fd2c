"""Remote control: inspect round trips and rate-limit accuracy, Tidings and Celery workers.

Starts a Celery 5.7 worker and a Tidings worker (prefork, 2 processes each,
the same tasks: ``tests/interop/tasks.py``) on one RabbitMQ, then in the
same run:

- sends each inspect command ``--rounds`` times to each worker (one worker
  at a time, ``limit=1`` so a call ends with the reply) and prints the
  median and p95 round trip;
- sets ``rate_limit interop.add 10/s`` on both, sends ``--tasks`` tasks to
  each, and prints the achieved rate and the smallest gap between two
  starts (from the workers' ``task-started`` events).

    python bench/control.py [--rounds 50] [--tasks 30] [--broker amqp://...]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COMMANDS = ("ping", "stats", "active", "registered", "active_queues", "conf")
RATE = "10/s"


def start_workers(url: str, tag: str) -> tuple[dict[str, subprocess.Popen], dict[str, str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TIDINGS_BROKER_URL=url, INTEROP_BROKER=url,
               TIDINGS_EVENT_EXCHANGE=f"{tag}-ev", INTEROP_EVENT_EXCHANGE=f"{tag}-ev",
               TIDINGS_CONTROL_EXCHANGE=f"{tag}-ctl", INTEROP_CONTROL_EXCHANGE=f"{tag}-ctl")
    queues = {"celery": f"{tag}-cel", "tidings": f"{tag}-tid"}
    procs = {
        "celery": subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.interop.celery_app", "worker", "-E",
             "-P", "prefork", "-c", "2", "-Q", queues["celery"], "-n", f"cel@{tag}",
             "-l", "WARNING", "--without-gossip", "--without-mingle"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        "tidings": subprocess.Popen(
            [sys.executable, "-m", "tidings", "-A", "tests.interop.tidings_app", "worker", "-E",
             "-P", "prefork", "-c", "2", "-Q", queues["tidings"], "-n", f"tid@{tag}",
             "-l", "WARNING"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    }
    return procs, queues


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=30)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    args = parser.parse_args()

    from tidings import App
    from tidings.events import EventReceiver

    tag = f"bench-ctl-{uuid.uuid4().hex[:6]}"
    nodes = {"celery": f"cel@{tag}", "tidings": f"tid@{tag}"}
    app = App("bench", broker=args.broker, event_exchange=f"{tag}-ev",
              control_exchange=f"{tag}-ctl")
    started: dict[str, list[float]] = {"celery": [], "tidings": []}
    impl_of = {v: k for k, v in nodes.items()}

    def on_started(event: dict) -> None:
        impl = impl_of.get(event.get("hostname"))
        if impl is not None:
            started[impl].append(event["timestamp"])

    receiver = EventReceiver(app.connection_for_read(), app=app,
                             handlers={"task-started": on_started})
    thread = threading.Thread(target=lambda: receiver.capture(wakeup=False), daemon=True)
    thread.start()
    procs, queues = start_workers(args.broker, tag)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            replies = app.control.broadcast("ping", reply=True, timeout=0.5) or []
            if {n for r in replies for n in r} >= set(nodes.values()):
                break
        else:
            sys.exit("the workers did not start")

        print(f"inspect round trip, RabbitMQ, {args.rounds} calls each (ms)")
        print(f"{'command':<15}{'celery p50':>11}{'p95':>8}{'tidings p50':>13}{'p95':>8}"
              f"{'p50 ratio':>11}")
        for command in COMMANDS:
            times: dict[str, list[float]] = {"celery": [], "tidings": []}
            for _ in range(args.rounds):
                for impl, node in nodes.items():  # interleaved: same conditions
                    t0 = time.perf_counter()
                    replies = app.control.broadcast(command, destination=[node], reply=True,
                                                    limit=1, timeout=5)
                    assert replies, (command, node)
                    times[impl].append((time.perf_counter() - t0) * 1000)
            c50, t50 = statistics.median(times["celery"]), statistics.median(times["tidings"])
            print(f"{command:<15}{c50:>11.2f}{percentile(times['celery'], .95):>8.2f}"
                  f"{t50:>13.2f}{percentile(times['tidings'], .95):>8.2f}{t50 / c50:>10.2f}x")

        app.control.rate_limit("interop.add", RATE)
        for impl in ("celery", "tidings"):
            for i in range(args.tasks):
                app.send_task("interop.add", (i, i), queue=queues[impl])
        deadline = time.monotonic() + args.tasks / 10 * 3 + 30
        while time.monotonic() < deadline and min(len(v) for v in started.values()) < args.tasks:
            time.sleep(0.1)
        print(f"\nrate_limit {RATE}, {args.tasks} tasks sent at once to each worker")
        print(f"{'':<10}{'achieved rate':>15}{'smallest gap':>14}")
        for impl in ("celery", "tidings"):
            stamps = sorted(started[impl])
            span = stamps[-1] - stamps[0]
            gaps = [b - a for a, b in itertools.pairwise(stamps)]
            print(f"{impl:<10}{(len(stamps) - 1) / span:>13.2f}/s{min(gaps) * 1000:>11.1f} ms")
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(60)
        receiver.should_stop = True
        from kombu import Connection, Queue

        with Connection(args.broker) as conn:
            for name in queues.values():
                Queue(name, channel=conn.default_channel).delete()


if __name__ == "__main__":
    main()
