"""State ingest: Tidings' State against Celery's, on the same event stream, in one run.

The stream is deterministic and shaped like a real cluster's after the
receiver: about four events per task (sent, received, started, then
succeeded or failed; some retried), heartbeats from 10 workers, clocks and
``local_received`` set as the receiver sets them, and out-of-order arrival
(batches of a few events swapped, as ``task.multi`` batches from several
workers interleave).

Prints events/s for each implementation, the ratio, and the memory each
State holds per tracked task once ``--tasks`` tasks are in it.  With
``--bound``, both States keep at most that many tasks
(``max_tasks_in_memory``) and evict as the stream goes on, as a long-running
monitor's does; the memory row is then left out.

With ``--floor``, a third row: :class:`FloorState`, the least any State
written in Python can do per event (find or make the task, copy the
event's fields onto it, note a worker; with ``--bound``, drop the oldest
task), fed the same way.  It is no State (no states by precedence, no time
order, no indexes, nothing for readers); it says how fast a reducer in pure
Python could be at best, against Celery's in the same run.

    python bench/state_ingest.py            # 100k tasks
    python bench/state_ingest.py --floor    # and the pure-Python floor
    python bench/state_ingest.py --tasks 20000 --repeat 1
    python bench/state_ingest.py --tasks 227000 --bound 10000   # 1M events, 10k kept
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
import tracemalloc
from collections import deque
from collections.abc import Callable, Iterator

WORKERS = [f"worker{i}@bench" for i in range(10)]
NAMES = [f"proj.tasks.task_{i}" for i in range(20)]


def stream(n_tasks: int, seed: int = 7) -> Iterator[dict]:
    """The event stream, as fresh dicts (what ``json.loads`` gives a receiver)."""
    rnd = random.Random(seed)
    clock = 0
    now = 1_795_600_000.0
    window: list[dict] = []

    def emit(event: dict) -> Iterator[dict]:
        window.append(event)
        if len(window) >= 8:
            # arrival order differs from causal order within a small window
            rnd.shuffle(window)
            yield from window
            window.clear()

    for i in range(n_tasks):
        uuid = f"{rnd.getrandbits(128):032x}"
        uuid = f"{uuid[:8]}-{uuid[8:12]}-{uuid[12:16]}-{uuid[16:20]}-{uuid[20:]}"
        worker = WORKERS[i % len(WORKERS)]
        name = NAMES[rnd.randrange(len(NAMES))]
        now += 0.001
        base = {"utcoffset": 0.0, "pid": 1000 + i % 10}
        clock += 1
        yield from emit({"hostname": "gen42@client", **base, "clock": clock, "uuid": uuid,
                         "root_id": uuid, "parent_id": None, "name": name,
                         "args": f"({i}, {i + 1})", "kwargs": "{}", "retries": 0, "eta": None,
                         "expires": None, "queue": "celery", "exchange": "",
                         "routing_key": "celery", "timestamp": now, "type": "task-sent",
                         "local_received": now + 0.0005})
        for subject, extra in (
            ("received", {"name": name, "args": f"({i}, {i + 1})", "kwargs": "{}",
                          "root_id": uuid, "parent_id": None, "retries": 0, "eta": None,
                          "expires": None}),
            ("started", {}),
        ):
            clock += 1
            yield from emit({"hostname": worker, **base, "clock": clock, "uuid": uuid,
                             **extra, "timestamp": now, "type": f"task-{subject}",
                             "local_received": now + 0.001})
        clock += 1
        if i % 10 == 9:
            final = {"exception": "ValueError('bad input')",
                     "traceback": "Traceback (most recent call last):\n  ...\nValueError",
                     "type": "task-failed"}
        elif i % 50 == 7:
            final = {"exception": "RuntimeError('again')", "traceback": "Traceback ...",
                     "type": "task-retried"}
        else:
            final = {"result": str(2 * i + 1), "runtime": 0.0012, "type": "task-succeeded"}
        ftype = final.pop("type")
        yield from emit({"hostname": worker, **base, "clock": clock, "uuid": uuid, **final,
                         "timestamp": now + 0.002, "type": ftype,
                         "local_received": now + 0.003})
        if i % 25 == 0:
            for w in WORKERS:
                clock += 1
                yield from emit({"hostname": w, "utcoffset": 0.0, "pid": 1, "clock": clock,
                                 "freq": 2.0, "active": 1, "processed": i, "loadavg":
                                 [0.5, 0.4, 0.3], "sw_ident": "py-celery", "sw_ver": "5.7.0",
                                 "sw_sys": "Linux", "timestamp": now,
                                 "type": "worker-heartbeat", "local_received": now + 0.001})
    yield from window


def fresh(events: list[dict]) -> list[dict]:
    """A deep copy with new string objects, as decoding each message would give."""
    return json.loads(json.dumps(events))


class _FloorTask:
    """A task of :class:`FloorState`: its fields in its ``__dict__``, nothing else."""


class FloorState:
    """The least a State written in Python does per event (see the module docs):
    one dict lookup for the task (one more, and a class call, for a new one), one
    C call that copies every field, its state named after the event, a worker
    kept by name.  Not a State."""

    def __init__(self, max_tasks_in_memory: int) -> None:
        self.max_tasks_in_memory = max_tasks_in_memory
        self.tasks: dict[str, _FloorTask] = {}
        self.workers: dict[str, dict] = {}
        self._order: deque[str] = deque()  # first seen first: what goes over the bound

    def event(self, event: dict) -> None:
        group, _, subject = event["type"].partition("-")
        if group == "task":
            uuid = event["uuid"]
            tasks = self.tasks
            task = tasks.get(uuid)
            if task is None:
                task = tasks[uuid] = _FloorTask()
                self._order.append(uuid)
                if len(tasks) > self.max_tasks_in_memory:
                    del tasks[self._order.popleft()]
            task.__dict__.update(event)
            task.state = subject
        elif group == "worker":
            self.workers[event["hostname"]] = event


def throughput(make_state: Callable[[], object], events: list[dict], repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        batch = fresh(events)
        state = make_state()
        feed = state.event  # type: ignore[attr-defined]
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            for event in batch:
                feed(event)
            elapsed = time.perf_counter() - start
        finally:
            gc.enable()
        best = max(best, len(batch) / elapsed)
        del state, batch
    return best


def bytes_per_task(make_state: Callable[[], object], n_tasks: int) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        state = make_state()
        for event in stream(n_tasks):
            state.event(json.loads(json.dumps(event)))  # type: ignore[attr-defined]
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        tasks = len(state.tasks)  # type: ignore[attr-defined]
        assert tasks == n_tasks, (tasks, n_tasks)
        del state
    finally:
        tracemalloc.stop()
    return held / tasks


def same_result(events: list[dict]) -> None:
    """Both States agree on every task's state and name (a benchmark of wrong code is moot)."""
    from celery.events.state import State as CeleryState

    from tidings.events.state import State as TidingsState

    n = len({e["uuid"] for e in events if "uuid" in e})
    a, b = CeleryState(max_tasks_in_memory=n), TidingsState(max_tasks_in_memory=n)
    for e in fresh(events):
        a.event(e)
    for e in fresh(events):
        b.event(e)
    assert {u: (t.state, t.name) for u, t in a.tasks.items()} == \
        {u: (t.state, t.name) for u, t in b.tasks.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bound", type=int, default=None,
                        help="max_tasks_in_memory of both States (default: --tasks)")
    parser.add_argument("--floor", action="store_true",
                        help="also the least a State in pure Python can do (FloorState)")
    args = parser.parse_args()

    from celery import __version__ as celery_version
    from celery.events.state import State as CeleryState

    from tidings import __version__ as tidings_version
    from tidings.events.state import State as TidingsState

    n = args.tasks
    bound = args.bound or n
    events = list(stream(n))
    same_result(events[: 40_000])
    print(f"stream: {n} tasks, {len(events)} events "
          f"({len(events) / n:.2f} events/task, 10 workers, out-of-order windows of 8); "
          f"max_tasks_in_memory {bound}")

    def celery_state():
        return CeleryState(max_tasks_in_memory=bound)

    def tidings_state():
        return TidingsState(max_tasks_in_memory=bound)

    rates = {}
    for label, make in (("celery", celery_state), ("tidings", tidings_state)):
        rates[label] = throughput(make, events, args.repeat)
    if args.floor:
        rates["floor"] = throughput(lambda: FloorState(bound), events, args.repeat)
    if bound < n:  # bytes per task are those of a State holding every task
        print(f"{'':10}{'events/s':>14}")
        print(f"{'celery ' + celery_version:<16}{rates['celery']:>8,.0f}")
        print(f"{'tidings ' + tidings_version:<16}{rates['tidings']:>8,.0f}")
        print(f"speed ratio tidings/celery: {rates['tidings'] / rates['celery']:.2f}x")
        print_floor(rates)
        return
    mem = {}
    for label, make in (("celery", celery_state), ("tidings", tidings_state)):
        mem[label] = bytes_per_task(make, n)
    print(f"{'':10}{'events/s':>14}{'bytes/task':>14}")
    print(f"{'celery ' + celery_version:<16}{rates['celery']:>8,.0f}{mem['celery']:>14,.0f}")
    print(f"{'tidings ' + tidings_version:<16}{rates['tidings']:>8,.0f}{mem['tidings']:>14,.0f}")
    print(f"speed ratio tidings/celery: {rates['tidings'] / rates['celery']:.2f}x")
    print(f"memory ratio tidings/celery: {mem['tidings'] / mem['celery']:.2f}x")
    print_floor(rates)


def print_floor(rates: dict[str, float]) -> None:
    """The ``--floor`` row, when measured: events/s and its ratios to both States."""
    floor = rates.get("floor")
    if floor is not None:
        print(f"floor (pure Python, no State): {floor:,.0f} events/s, "
              f"{floor / rates['celery']:.2f}x celery's, {floor / rates['tidings']:.2f}x tidings'")


if __name__ == "__main__":
    main()
