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
        # the receiver's handler table, as its run() builds it
        handlers = {
            "worker-heartbeat": exporter.track_worker_heartbeat,
            "worker-online": lambda event: exporter.track_worker_status(event, True),
            "worker-offline": lambda event: exporter.track_worker_status(event, False),
        }
        for key in exporter.state_counters:
            handlers[key] = exporter.track_task_event
        return exporter, handlers

    def feed(handlers: dict, batch: list[dict]) -> None:
        for event in batch:
            handler = handlers.get(event["type"])
            if handler is not None:
                handler(event)

    return measure(make, feed, lambda exp: generate_latest(exp.registry), tasks, repeat)


def comparable(text: str) -> dict[str, float]:
    """The samples of celery-exporter's task metrics, as ``name{labels}`` -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("celery_task_"):
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


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

    # The exposition alone on both sides (the stream's timestamps are old: a
    # worker timeout check would rightly purge every worker's series).
    return measure(make, feed, lambda metrics: generate_latest(metrics.registry), tasks,
                   repeat)


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
    obj, handler = make()
    feed(handler, fresh(events))
    return {"events": len(events), "rate": best, "scrape_s": statistics.median(times),
            "scrape_bytes": len(body), "samples": comparable(scrape(obj).decode())}


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
    compare(theirs["samples"], ours["samples"])


def compare(theirs: dict[str, float], ours: dict[str, float]) -> None:
    """Same names, labels and values?  Differences are sorted by their reason."""
    only_ours = {k for k in ours.keys() - theirs.keys() if "queue_wait_time" in k}
    client_host = {k for k in theirs.keys() - ours.keys()
                   if "hostname=client" in k and "task_sent" not in k}

    def totals(samples: dict[str, float]) -> dict[str, float]:
        """Per sample with the hostname label left out (it is where they differ)."""
        out: dict[str, float] = {}
        for key, value in samples.items():
            if "queue_wait_time" in key or "task_sent" in key:
                continue
            name, _, labels = key.partition("{")
            kept = ",".join(p for p in labels.rstrip("}").split(",")
                            if not p.startswith("hostname="))
            out[f"{name}{{{kept}}}"] = out.get(f"{name}{{{kept}}}", 0.0) + value
        return out

    sent_same = all(theirs.get(k) == ours.get(k) for k in theirs.keys() | ours.keys()
                    if "task_sent" in k)
    t, o = totals(theirs), totals(ours)
    unexplained = sorted(k for k in t.keys() | o.keys()
                         if t.get(k) is None or o.get(k) is None
                         or abs(t[k] - o[k]) > 1e-6 * max(1.0, abs(t[k])))
    print(f"celery_task_* samples after the stream: {len(theirs)} celery-exporter, "
          f"{len(ours)} tidings")
    print(f"  task_sent samples identical: {'yes' if sent_same else 'NO'}")
    print(f"  per (metric, name, queue, exception), hostname aside: "
          f"{'identical' if not unexplained else f'{len(unexplained)} differ'}")
    for key in unexplained[:10]:
        print(f"    {key}: celery-exporter {t.get(key)}, tidings {o.get(key)}")
    print(f"  {len(client_host)} celery-exporter series put worker events under the client's "
          "host (Celery's State lets a late task-sent overwrite task.hostname)")
    print(f"  {len(only_ours)} tidings-only samples: celery_task_queue_wait_time")


if __name__ == "__main__":
    main()
