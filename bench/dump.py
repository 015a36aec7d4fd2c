"""``events --dump`` to a pipe: ``celery events --dump`` against ``tidings events --dump``.

Both commands run with the same Celery app module (an exchange of the run's
own, no message TTL), their standard output a pipe that this process reads
and counts lines from.  Once a probe event shows up in a dumper's output
(its queue is bound), this process publishes ``bench/receive.py``'s stream
in ``task.multi`` batches of 100, at most a window of events ahead of the
lines read, and times the dumper from the first line of the burst to the
last: events per second through the whole command (receive, format, write),
and the dumper's CPU time per event over the burst (from ``/proc``: what
the command costs, apart from how the 2 cores are shared with the broker
and the publisher).

On 2 cores the dumper shares the machine with RabbitMQ and this process,
so what this process spends is taken from the dumper measured: it
publishes with ``receive.stream_publisher`` (kombu's frames, at a fraction
of kombu's CPU) and reads the pipe into one buffer.  Measured during a
Tidings burst, per event: the publisher and the pipe reader 2.3-2.5 µs
(6.4 µs with kombu's ``Producer.publish`` and a 1 MiB allocation per
read), RabbitMQ 6.2-6.4 µs, the dumper 7-8 µs.

    python bench/dump.py [--events 400000] [--broker amqp] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from receive import BROKERS, delete_exchange, messages, stream_publisher  # noqa: E402

WINDOW = 20_000  # events published ahead of the lines read: bounds the broker's queue
QUIET = 5.0

APP = """\
import os
from celery import Celery
app = Celery("bench", broker=os.environ["BENCH_BROKER"])
app.conf.event_exchange = os.environ["BENCH_EXCHANGE"]
app.conf.event_queue_ttl = None
"""


class LineCounter(threading.Thread):
    """Reads a pipe to its end, counting lines and when the last ones came."""

    def __init__(self, pipe) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.lines = 0
        self.mark = 0  # lines before the burst
        self.first: float | None = None  # first read after the mark
        self.last = 0.0

    def run(self) -> None:
        fd = self.pipe.fileno()
        # read into one buffer of a pipe's capacity: ``os.read(fd, n)`` allocates n
        # bytes each call, and a dumper that flushes every line makes a read a line
        buf = bytearray(1 << 16)
        while size := os.readv(fd, [buf]):
            now = time.monotonic()
            self.lines += buf.count(b"\n", 0, size)
            if self.mark and self.first is None and self.lines > self.mark:
                self.first = now
            self.last = now


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_one(impl: str, broker: str, msgs: list[tuple[str, str, int]], appdir: str
            ) -> tuple[float, float]:
    """Events per second through the dumper, and its CPU µs per event."""
    from kombu import Connection

    from tidings.transport import get_exchange

    exchange_name = f"bench.dump.{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, BENCH_BROKER=broker, BENCH_EXCHANGE=exchange_name,
               PYTHONPATH=appdir)
    command = ([sys.executable, "-m", "celery"] if impl == "celery"
               else [sys.executable, "-m", "tidings"])
    child = subprocess.Popen([*command, "-A", "benchapp", "events", "--dump"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=appdir)
    counter = LineCounter(child.stdout)
    counter.start()
    try:
        with Connection(broker) as conn:
            exchange = get_exchange(conn, exchange_name)
            publish = stream_publisher(conn, exchange)

            deadline = time.monotonic() + 60
            while counter.lines == 0:  # a probe a quarter second until the queue is bound
                if time.monotonic() > deadline or child.poll() is not None:
                    raise SystemExit(f"{impl} events --dump printed nothing")
                publish("worker.heartbeat", json.dumps(
                    {"hostname": "probe@bench", "utcoffset": 0, "pid": 1, "clock": 1,
                     "freq": 2.0, "active": 0, "processed": 0, "timestamp": time.time(),
                     "type": "worker-heartbeat"}))
                time.sleep(0.25)
            time.sleep(1.5)  # the probes in flight arrive (and ours is flushed)
            counter.mark = base = counter.lines
            cpu = cpu_seconds(child.pid)
            sent = 0
            for routing_key, body, events in msgs:
                while sent - (counter.lines - base) > WINDOW:
                    time.sleep(0.001)
                publish(routing_key, body)
                sent += events
        quiet = time.monotonic() + QUIET
        seen = counter.lines
        while counter.lines - base < sent and time.monotonic() < quiet:
            time.sleep(0.05)
            if counter.lines != seen:
                seen, quiet = counter.lines, time.monotonic() + QUIET
        got = counter.lines - base
        cpu = cpu_seconds(child.pid) - cpu
        if got < sent:
            print(f"  {impl}: {sent - got} of {sent} events not printed", file=sys.stderr)
        if counter.first is None or counter.last <= counter.first:
            raise SystemExit(f"{impl} printed none of the burst")
        return got / (counter.last - counter.first), cpu / got * 1e6
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        delete_exchange(broker, exchange_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--broker", default="amqp", choices=sorted(BROKERS))
    # 5 runs of 400k: a Tidings burst lasts 3-4 s, and runs of one invocation
    # still range from 90k to 128k events/s on the shared 2 cores
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    msgs = messages(args.events, "multi")
    rates: dict[str, list[float]] = {"celery": [], "tidings": []}
    cpus: dict[str, list[float]] = {"celery": [], "tidings": []}
    with tempfile.TemporaryDirectory() as appdir:
        Path(appdir, "benchapp.py").write_text(APP)
        for _ in range(args.repeat):
            for impl in ("celery", "tidings"):  # interleaved: both see the same machine
                rate, cpu = run_one(impl, BROKERS[args.broker], msgs, appdir)
                rates[impl].append(rate)
                cpus[impl].append(cpu)
                print(f"  {impl}: {rate:,.0f} events/s, {cpu:.1f} µs CPU/event",
                      file=sys.stderr)
    c, t = statistics.median(rates["celery"]), statistics.median(rates["tidings"])
    print(f"\nevents --dump to a pipe, {args.broker}, task.multi batches of 100, "
          f"{args.events:,} events (median of {args.repeat})")
    print(f"{'measure':<22}{'celery':>10}{'tidings':>10}{'ratio':>8}")
    print(f"{'events/s':<22}{c:>10,.0f}{t:>10,.0f}{t / c:>7.2f}x")
    c, t = statistics.median(cpus["celery"]), statistics.median(cpus["tidings"])
    print(f"{'CPU µs per event':<22}{c:>10.1f}{t:>10.1f}{t / c:>7.2f}x")


if __name__ == "__main__":
    main()
