"""Workers with events: no-op tasks through a Tidings worker and a Celery worker, same run.

Two measures:

* ``throughput``: for each implementation, pool (solo, prefork) and task
  events (off, on), publish ``--tasks`` messages (20k) to a fresh queue on
  RabbitMQ, start the worker, and time from its first consumed message
  until the queue is empty (``--repeat`` runs of each, interleaved: the
  median), and the worker's CPU time per task over that span, its pool
  processes included (from ``/proc``): what events cost the worker itself,
  apart from how the 2 cores are shared with RabbitMQ and the other
  processes (``off/on``: the throughput events on would leave a worker
  whose CPU is its bottleneck);
* ``delay``: a prefork worker with ``-E`` is sent ``--delay-rate`` tasks a
  second (333: about 1,000 task events/s) for ``--delay-seconds``; a
  receiver (``bench/publish.py``'s, the same for both) notes each task
  event's delay from its ``timestamp`` to its arrival: p50 and p99.

    python bench/worker_throughput.py [--tasks 20000] [--measures throughput,delay] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from dump import cpu_seconds  # noqa: E402
from receive import delete_dead_letters, delete_exchange  # noqa: E402

EVENT_EXCHANGE = "bench-ev"
#: The workers' remote-control exchange (theirs, not a live cluster's).
CONTROL_EXCHANGE = "bench-ctl"


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


def wait_empty(url: str, queue: str, pause: float) -> None:
    while depth(url, queue) > 0:
        time.sleep(pause)


def drop(url: str, queue: str) -> None:
    """The run's task queue goes, and the durable exchange of its name (Celery's)."""
    from kombu import Connection, Exchange, Queue

    with Connection(url) as conn:
        Queue(queue, channel=conn.default_channel).delete()
        Exchange(queue, channel=conn.channel()).delete()


def task_name(impl: str) -> str:
    return "proj.noop" if impl == "tidings" else "interop.noop"


def start_worker(impl: str, pool: str, events: bool, url: str, queue: str
                 ) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TIDINGS_BROKER_URL=url, INTEROP_BROKER=url,
               INTEROP_QUEUE=queue, TIDINGS_TASK_DEFAULT_QUEUE=queue,
               TIDINGS_EVENT_EXCHANGE=EVENT_EXCHANGE, INTEROP_EVENT_EXCHANGE=EVENT_EXCHANGE,
               TIDINGS_CONTROL_EXCHANGE=CONTROL_EXCHANGE,
               INTEROP_CONTROL_EXCHANGE=CONTROL_EXCHANGE)
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
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def tree_cpu_seconds(pid: int) -> float:
    """User plus system CPU time so far of process ``pid`` and its descendants
    (a prefork worker's pool processes), from ``/proc``."""
    total, pids = 0.0, [pid]
    while pids:
        pid = pids.pop()
        try:
            total += cpu_seconds(pid)
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    pids.extend(int(child) for child in f.read().split())
        except (FileNotFoundError, ProcessLookupError):  # ended meanwhile
            continue
    return total


def measure(impl: str, pool: str, events: bool, url: str, n: int) -> tuple[float, float]:
    """Tasks per second, and the worker's CPU µs per task (all its processes)."""
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    publish(url, queue, task_name(impl), n)
    proc = start_worker(impl, pool, events, url, queue)
    try:
        while (left := depth(url, queue)) >= n:
            time.sleep(0.005)
        start, cpu = time.perf_counter(), tree_cpu_seconds(proc.pid)
        wait_empty(url, queue, 0.01)
        elapsed = time.perf_counter() - start
        cpu = tree_cpu_seconds(proc.pid) - cpu
    finally:
        proc.terminate()
        proc.wait(60)
        drop(url, queue)
    return n / elapsed, cpu / left * 1e6


def measure_delay(impl: str, url: str, rate: float, seconds: float) -> list[float]:
    """Task event delays (seconds) behind a prefork worker sent ``rate`` tasks/s."""
    from publish import _python
    from tidings import App
    from tidings.protocol.tasks import build_message

    queue = f"bench-{uuid.uuid4().hex[:8]}"
    app = App("bench", broker=url)
    receiver = _python("receive", url, EVENT_EXCHANGE)
    children = [receiver]
    try:
        assert receiver.stdout is not None
        if receiver.stdout.readline().strip() != "ready":
            raise SystemExit("the receiver did not start")
        publish(url, queue, task_name(impl), 1)  # the worker is up once this is gone
        children.append(start_worker(impl, "prefork", True, url, queue))
        wait_empty(url, queue, 0.05)
        time.sleep(1.0)
        start, n = time.perf_counter(), int(rate * seconds)
        for i in range(n):
            pause = start + i / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            app.publisher.publish(build_message(task_name(impl), queue=queue),
                                  sent_event=False)
        wait_empty(url, queue, 0.05)
        time.sleep(1.0)
        out, _ = receiver.communicate("stop\n", timeout=60)
        return json.loads(out)
    finally:
        app.publisher.close()
        for child in children:
            if child.poll() is None:
                child.terminate()
                child.wait(60)
        drop(url, queue)
        # the receiver's dead-letter exchange goes; the shared event exchange
        # stays until the end (the workers of every run use it: drop_shared)
        delete_dead_letters(url, EVENT_EXCHANGE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--measures", default="throughput,delay")
    parser.add_argument("--delay-rate", type=float, default=333.0, help="tasks/s")
    parser.add_argument("--delay-seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs, median")
    args = parser.parse_args()
    measures = args.measures.split(",")
    try:
        if "throughput" in measures:
            throughput(args)
        if "delay" in measures:
            delay(args)
    finally:
        drop_shared(args.broker)


def delay(args: argparse.Namespace) -> None:
    from publish import percentile

    print(f"\ntask event delay, prefork with -E, {args.delay_rate:,.0f} tasks/s "
          f"for {args.delay_seconds:g} s")
    print(f"{'':22}{'events':>8}{'p50 ms':>9}{'p99 ms':>9}")
    for impl in ("celery", "tidings"):
        delays = measure_delay(impl, args.broker, args.delay_rate, args.delay_seconds)
        print(f"{impl:<22}{len(delays):>8}{percentile(delays, 0.5) * 1e3:>9.2f}"
              f"{percentile(delays, 0.99) * 1e3:>9.2f}")


def drop_shared(url: str) -> None:
    """The exchanges the workers of every run shared go at the end: the event
    exchange and the remote-control mailbox's two (a broker error loses nothing)."""
    from tidings import App
    from tidings.transport.topology import control_mailbox

    mailbox = control_mailbox(App("bench", broker=url, control_exchange=CONTROL_EXCHANGE).conf,
                              None)
    for name in (EVENT_EXCHANGE, mailbox.exchange.name, mailbox.reply_exchange.name):
        delete_exchange(url, name)


def throughput(args: argparse.Namespace) -> None:
    print(f"{args.tasks} no-op tasks per run, RabbitMQ; prefork with 2 processes; "
          f"median of {args.repeat}")
    runs: dict[tuple[str, str, bool], list[tuple[float, float]]] = {}
    for pool in ("solo", "prefork"):
        for _ in range(args.repeat):  # interleaved: each run sees the same machine
            for impl in ("celery", "tidings"):
                for events in (False, True):
                    rate, cpu = measure(impl, pool, events, args.broker, args.tasks)
                    runs.setdefault((impl, pool, events), []).append((rate, cpu))
                    print(f"  {impl} {pool} events {'on' if events else 'off'}: {rate:,.0f}/s, "
                          f"{cpu:.0f} µs CPU per task", file=sys.stderr)
    print(f"{'':22}{'events off':>12}{'events on':>12}{'on/off':>9}"
          f"{'CPU µs/task off':>17}{'on':>6}{'off/on':>8}")
    rates = {}
    for pool in ("solo", "prefork"):
        for impl in ("celery", "tidings"):
            off, on = (statistics.median(rate for rate, _ in runs[impl, pool, events])
                       for events in (False, True))
            cpu_off, cpu_on = (statistics.median(cpu for _, cpu in runs[impl, pool, events])
                               for events in (False, True))
            rates[impl, pool] = (off, on)
            print(f"{impl + ' ' + pool:<22}{off:>10,.0f}/s{on:>10,.0f}/s{on / off:>9.2f}"
                  f"{cpu_off:>17.0f}{cpu_on:>6.0f}{cpu_off / cpu_on:>8.2f}")
    for pool in ("solo", "prefork"):
        (c_off, c_on), (t_off, t_on) = rates["celery", pool], rates["tidings", pool]
        print(f"{pool}: tidings/celery events off {t_off / c_off:.2f}x, "
              f"events on {t_on / c_on:.2f}x")


if __name__ == "__main__":
    main()
