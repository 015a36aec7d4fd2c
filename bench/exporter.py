"""Metrics from events: ``tidings exporter``'s handling against celery-exporter's, in one run.

The same Celery-shaped event stream (``state_ingest.stream``: sent, received,
started, then succeeded, failed or retried, with heartbeats) goes into
celery-exporter's event handlers (danihodovic/celery-exporter, PyPI
``prometheus-exporter-celery``, with its Celery State) and into Tidings'
:class:`~tidings.metrics.ClusterMetrics` (with its State), both with the
same State bound.  celery-exporter pins its own prometheus-client, so it
runs in a virtual environment of its own (``bench/.venv-celery-exporter``,
made on first use from PyPI beside Celery 5.7).

Prints events/s for each and the ratio, then the time of one ``/metrics``
exposition (``generate_latest``) with 1,000 task names x 20 hosts.

    python bench/exporter.py                 # 20k tasks, 3 repeats
    python bench/exporter.py --tasks 5000 --repeat 1
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from state_ingest import fresh, stream  # noqa: E402

OTHER_VENV = HERE / ".venv-celery-exporter"
CELERY_EXPORTER = "prometheus-exporter-celery==0.11.2"
SCRAPE_NAMES, SCRAPE_HOSTS = 1000, 20


def scrape_stream() -> list[dict]:
    """One received+succeeded pair per (name, host): 20,000 label sets."""
    events, clock = [], 0
    for n in range(SCRAPE_NAMES):
        for h in range(SCRAPE_HOSTS):
            clock += 1
            uuid = f"{n:04d}-{h:02d}"
            base = {"hostname": f"w@host{h}", "utcoffset": 0.0, "pid": 1, "uuid": uuid,
                    "timestamp": 1_795_600_000.0 + clock, "local_received": 1_795_600_000.0}
            events.append({**base, "clock": clock, "type": "task-received",
                           "name": f"proj.task_{n}", "args": "()", "kwargs": "{}"})
            events.append({**base, "clock": clock + 1, "type": "task-succeeded",
                           "result": "1", "runtime": 0.01})
    return events


# -- the two sides ---------------------------------------------------------------------------


def celery_exporter_side(tasks: int, repeat: int, max_tasks: int) -> dict:
    """Runs inside the other virtual environment."""
    from celery.events.state import State
    from loguru import logger
    from prometheus_client import generate_latest
    from src.exporter import Exporter

    logger.remove()
    logger.add(sys.stderr, level="INFO")  # its command's default level

    def make() -> tuple[object, dict]:
        exporter = Exporter()
        exporter.state = State(max_tasks_in_memory=max_tasks)
        return exporter, exporter._setup_event_handlers()

    def feed(handlers: dict, batch: list[dict]) -> None:
        for event in batch:
            handler = handlers.get(event["type"])
            if handler is not None:
                handler(event)

    return measure(make, feed, lambda exp: generate_latest(exp.registry), tasks, repeat)


def tidings_side(tasks: int, repeat: int, max_tasks: int) -> dict:
    from prometheus_client import generate_latest

    from tidings.events.state import State
    from tidings.metrics import ClusterMetrics

    def make() -> tuple[object, object]:
        metrics = ClusterMetrics(State(max_tasks_in_memory=max_tasks))
        return metrics, metrics.handle

    def feed(handle, batch: list[dict]) -> None:
        for event in batch:
            handle(event)

    def scrape(metrics) -> bytes:
        metrics.before_scrape()
        return generate_latest(metrics.registry)

    return measure(make, feed, scrape, tasks, repeat)


def measure(make, feed, scrape, tasks: int, repeat: int) -> dict:
    events = list(stream(tasks))
    best = 0.0
    for _ in range(repeat):
        batch = fresh(events)
        obj, handler = make()
        gc.collect()
        start = time.perf_counter()
        feed(handler, batch)
        best = max(best, len(batch) / (time.perf_counter() - start))
        del obj, handler
    obj, handler = make()
    feed(handler, scrape_stream())
    times = []
    for _ in range(5):
        start = time.perf_counter()
        body = scrape(obj)
        times.append(time.perf_counter() - start)
    return {"events": len(events), "rate": best, "scrape_s": statistics.median(times),
            "scrape_bytes": len(body)}


# -- running both ----------------------------------------------------------------------------


def other_python() -> Path:
    python = OTHER_VENV / "bin" / "python"
    if not python.exists():
        print(f"making {OTHER_VENV} with {CELERY_EXPORTER} (once)...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(OTHER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", CELERY_EXPORTER,
                        "celery==5.7.*"], check=True)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-tasks", type=int, default=10_000)
    parser.add_argument("--side", choices=["celery-exporter"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(celery_exporter_side(args.tasks, args.repeat, args.max_tasks)))
        return
    out = subprocess.run([str(other_python()), __file__, "--side", "celery-exporter",
                          "--tasks", str(args.tasks), "--repeat", str(args.repeat),
                          "--max-tasks", str(args.max_tasks)],
                         check=True, capture_output=True, text=True)
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    ours = tidings_side(args.tasks, args.repeat, args.max_tasks)
    print(f"stream: {args.tasks} tasks, {ours['events']} events; State bound "
          f"{args.max_tasks} tasks")
    print(f"{'':18}{'events/s':>12}{'scrape (1000 names x 20 hosts)':>34}")
    for label, r in (("celery-exporter", theirs), ("tidings exporter", ours)):
        print(f"{label:<18}{r['rate']:>12,.0f}{r['scrape_s'] * 1000:>24,.0f} ms "
              f"({r['scrape_bytes'] / 1e6:.1f} MB)")
    print(f"speed ratio tidings/celery-exporter: {ours['rate'] / theirs['rate']:.2f}x")
    print(f"scrape time ratio tidings/celery-exporter: "
          f"{ours['scrape_s'] / theirs['scrape_s']:.2f}x")


if __name__ == "__main__":
    main()
