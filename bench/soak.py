"""Soak: memory of every process over a long run, and events lost.

A Tidings worker (prefork) and a Celery 5.7 worker run no-op tasks with task
events on, fed by a client at ``--rate`` events per second in all (each task
makes five events: sent, received, started, succeeded, and its share of
heartbeats aside).  Consuming them on RabbitMQ: ``tidings events --dump``
into /dev/null, the SQL camera on SQLite, the terminal monitor's ingest into
a bounded State, ``tidings exporter`` and ``tidings web`` (State bounded at
10,000 tasks).  Every 10 s the RSS of each process is sampled; at the end
it prints, per process, the RSS after warm-up and at the end and the slope
(percent per 10 minutes, least squares over the samples after warm-up, and
again over the second half of them), the tasks sent against the tasks the
exporter counted as succeeded, and the events the exporter itself counted
as lost, by cause (its ``/health``): a task not counted with no loss
counted beside it would be a loss nobody reported.

    python bench/soak.py [--minutes 10] [--rate 5000] [--broker amqp://...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EVENTS_PER_TASK = 5
SAMPLE_EVERY = 10.0
INGEST = """
import sys, threading
from tidings import App
from tidings.events import State
from tidings.top import Ingest
state = State(max_tasks_in_memory=10_000)
ingest = Ingest(App('soak'), state).start()
threading.Event().wait()
"""
# One client process: sends ``per_second`` tasks a second, alternating two queues,
# until stdin closes; then prints how many it sent.
FEED = """
import sys, threading, time
from tidings import App
broker, exchange, q1, q2, per_second = sys.argv[1:6]
per_second = float(per_second)
client = App('soak', broker=broker, event_exchange=exchange, task_send_sent_event=True)
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
sent, start = 0, time.monotonic()
while not stop.is_set():
    due = int((time.monotonic() - start) * per_second)
    while sent < due and not stop.is_set():
        client.send_task('interop.noop', queue=q1 if sent % 2 else q2)
        sent += 1
    time.sleep(0.01)
print(sent)
"""


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def slope_percent_per_10min(samples: list[tuple[float, int]]) -> float:
    n = len(samples)
    if n < 3:
        return float("nan")
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    slope = sum((t - mt) * (r - mr) for t, r in samples) / var  # KiB per second
    return slope * 600 / mr * 100


def succeeded(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return float("nan")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("celery_task_succeeded_total{"))


def losses(port: int) -> dict[str, int] | None:
    """The exporter's own account of the events it did not get, by cause."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return json.loads(r.read())["lost"]
    except (OSError, ValueError, KeyError):
        return None


def drain(port: int, sent: int, patience: float = 120.0) -> float:
    """The exporter's succeeded count once the workers have caught up: when it
    reaches ``sent``, or stops moving for ``patience`` seconds (a backlog left
    in the queues is then reported as not counted)."""
    last, still_since = succeeded(port), time.monotonic()
    while last < sent and time.monotonic() - still_since < patience:
        time.sleep(5)
        now = succeeded(port)
        if now != last:
            last, still_since = now, time.monotonic()
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=5000, help="events per second")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--warmup", type=float, default=0.2,
                        help="share of the run left out of the slope")
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    args = parser.parse_args()

    tag = f"soak-{uuid.uuid4().hex[:6]}"
    q_tid, q_cel = f"{tag}-tid", f"{tag}-cel"
    env = dict(os.environ, PYTHONPATH=str(ROOT), TIDINGS_BROKER_URL=args.broker,
               INTEROP_BROKER=args.broker, TIDINGS_EVENT_EXCHANGE=f"{tag}-ev",
               INTEROP_EVENT_EXCHANGE=f"{tag}-ev", TIDINGS_CONTROL_EXCHANGE=f"{tag}-ctl",
               INTEROP_CONTROL_EXCHANGE=f"{tag}-ctl")
    tmp = Path(tempfile.mkdtemp(prefix="tidings-soak-"))
    port = 19000 + os.getpid() % 1000
    py = sys.executable
    commands = {
        "tidings worker": [py, "-m", "tidings", "-A", "tests.interop.tidings_app", "worker",
                           "-E", "-P", "prefork", "-c", "2", "-Q", q_tid, "-l", "WARNING",
                           "-n", f"tid@{tag}"],
        "celery worker": [py, "-m", "celery", "-A", "tests.interop.celery_app", "worker",
                          "-E", "-P", "prefork", "-c", "2", "-Q", q_cel, "-l", "WARNING",
                          "-n", f"cel@{tag}", "--without-gossip", "--without-mingle"],
        "events --dump": [py, "-m", "tidings", "events", "--dump"],
        "SQL camera": [py, "-m", "tidings", "events", "-c", "tidings.cameras.SQLCamera",
                       "--db", f"sqlite:///{tmp / 'soak.db'}", "-F", "1"],
        "monitor ingest": [py, "-c", INGEST],
        "exporter": [py, "-m", "tidings", "exporter", "--port", str(port)],
        "web monitor": [py, "-m", "tidings", "web", "--port", str(port + 1), "--max-tasks",
                        "10000"],
    }
    procs = {name: subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
             for name, cmd in commands.items()}
    time.sleep(8)  # everyone connected
    per_client = args.rate / EVENTS_PER_TASK / args.clients
    feeders = [subprocess.Popen([py, "-c", FEED, args.broker, f"{tag}-ev", q_tid, q_cel,
                                 str(per_client)], env=env, cwd=ROOT, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
               for _ in range(args.clients)]
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in procs}
    began = time.monotonic()
    end = began + args.minutes * 60
    try:
        while time.monotonic() < end:
            now = time.monotonic() - began
            for name, proc in procs.items():
                rss = rss_kib(proc.pid)
                if rss is not None:
                    samples[name].append((now, rss))
            time.sleep(SAMPLE_EVERY)
    finally:
        fed_for = time.monotonic() - began
        sent = sum(int(f.communicate("", timeout=60)[0] or 0) for f in feeders)
        counted = drain(port, sent)
        lost = losses(port)
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        from client import delete_declared  # beside this file, as state_settle imports us

        delete_declared(args.broker, [q_tid, q_cel],
                        [f"{tag}-ev", f"{tag}-ctl.pidbox", f"reply.{tag}-ctl.pidbox"])

    warm = args.minutes * 60 * args.warmup
    print(f"soak: {args.minutes:g} min, {sent:,} tasks sent "
          f"({sent * EVENTS_PER_TASK / fed_for:,.0f} task events/s reached of "
          f"{args.rate:,.0f} asked), {args.broker.split('://', 1)[0]}; "
          f"warm-up {warm:.0f} s")
    # A leak grows as fast in the second half as over the whole; memory that is
    # still settling (allocator, set and dict tables reaching their size under
    # churn) grows slower and slower.
    half = (warm + fed_for) / 2
    print(f"{'process':<16}{'RSS warm MiB':>14}{'RSS end MiB':>13}{'slope %/10min':>15}"
          f"{'2nd half':>10}")
    for name, rows in samples.items():
        after = [(t, r) for t, r in rows if t >= warm]
        if not after:
            print(f"{name:<16}{'(no samples)':>14}")
            continue
        late = [(t, r) for t, r in after if t >= half]
        print(f"{name:<16}{after[0][1] / 1024:>14.1f}{after[-1][1] / 1024:>13.1f}"
              f"{slope_percent_per_10min(after):>15.2f}{slope_percent_per_10min(late):>10.2f}")
    print(f"tasks sent {sent:,}; succeeded as counted by the exporter {counted:,.0f}; "
          f"not counted {sent - counted:,.0f}")
    if lost is None:
        print("events the exporter counted as lost: (no answer from /health)")
    else:
        causes = ", ".join(f"{cause} {n:,}" for cause, n in lost.items() if n) or "none"
        print(f"events the exporter counted as lost: {sum(lost.values()):,} ({causes})")


if __name__ == "__main__":
    main()
