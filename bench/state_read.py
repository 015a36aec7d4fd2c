"""State reads: Tidings' State against Celery's, same tasks, same run.

Each State is fed the stream of ``bench/state_ingest.py`` (``--tasks``
tasks, 100k by default) in a process of its own that holds nothing else,
as a monitor holds one State, and then read the ways monitors and cameras
read it: ``tasks_by_time(limit=100)`` (Celery's gives about 25 tasks, its
``limit`` counting heap entries; the line under it says how many each
gave), the newest 100 tasks each State's cheapest way (what a monitor's
first page needs), every task by time, every task in storage order, a
shallow copy of the task map with ingest paused (a camera's shot),
``as_dict()`` of every task (in the caller's loop, and the cheapest way
each API gives them all: see :func:`every_dict`) and a pickle of the whole
State.  Each figure is the best of ``--repeat`` timings, each after a
``gc.collect()``; a read of under a millisecond is timed over enough calls
to fill 10 ms, and the figure is per call (see :data:`SHORT`).  The ratio
is Tidings' time over Celery's (below 1: Tidings is faster).

Why a process each: what a read of every task costs depends on what else
the process holds.  Such a read makes one new object per task, and the
garbage collector runs a full collection once the objects made since the
last one exceed a quarter of those it tracks.  Held beside Celery's State
(about two million tracked objects), a read of ours never met one; alone
(about 125k), every read of all 100k tasks did, which cost it more than
the read itself.

The memory row is the RSS a fresh process gains by holding the State, per
task, measured in a child process for each implementation.

    python bench/state_read.py [--tasks 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from state_ingest import fresh, stream

#: The child that measures RSS: build the State, print RSS growth per task.
RSS_CHILD = """
import gc, json, sys
sys.path.insert(0, sys.argv[3])
from state_ingest import stream
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096
impl, n = sys.argv[1], int(sys.argv[2])
if impl == 'celery':
    from celery.events.state import State
else:
    from tidings.events.state import State
gc.collect()
before = rss()
state = State(max_tasks_in_memory=n)
for event in stream(n):  # each event decoded afresh, as a receiver would
    state.event(json.loads(json.dumps(event)))
gc.collect()
assert len(state.tasks) == n
print((rss() - before) / n)
"""


#: Seconds a timing of a short read fills: one call of a few µs timed alone
#: right after ``gc.collect()`` measures the collection's after-effects more
#: than the read (the first allocations after it cost 20-40 µs on this
#: machine, whatever they are: an empty ``with lock:`` took 23 µs, against
#: 1 µs warm), so such a read is timed over as many calls as fill this.
SHORT = 0.01


def best(fun: Callable[[], object], repeat: int) -> float:
    """Seconds per call of ``fun``, the best of ``repeat`` timings, each after a
    ``gc.collect()``: of one call, or, for a read of under a millisecond, of as
    many calls as fill :data:`SHORT` (the first call says which)."""
    calls = 1
    times: list[float] = []
    while len(times) < repeat:
        gc.collect()
        start = time.perf_counter()
        for _ in range(calls):
            fun()
        elapsed = time.perf_counter() - start
        if calls == 1 and elapsed < SHORT / 10:  # short: timed again, over many calls
            calls = int(SHORT / max(elapsed, 1e-7))
            continue
        times.append(elapsed / calls)
    return min(times)


def is_celerys(state: object) -> bool:
    """Whether ``state`` is Celery's State (the two differ in what reads them cheapest)."""
    return state.__class__.__module__.startswith("celery")


def newest_100(state: object) -> list:
    """The newest 100 tasks, the cheapest way each State's API gives them.

    Celery's ``limit`` counts heap entries, several per task, so its
    ``tasks_by_time(limit=100)`` yields about a quarter as many tasks; its
    generator without a limit walks the heap lazily, and the first 100 it
    yields are 100 tasks.  Ours: ``limit=100`` is 100 tasks.
    """
    s: object = state
    if is_celerys(s):
        return list(islice(s.tasks_by_time(), 100))
    return list(s.tasks_by_time(limit=100))


def every_dict(state: object) -> list:
    """``as_dict()`` of every task, the cheapest way each State's API gives them.

    Celery's has no call for it: a loop over its tasks.  Ours reads them all
    at one instant with :meth:`State.read_tasks`, the collector held off.
    """
    s: object = state
    if is_celerys(s):
        return [t.as_dict() for t in s.tasks.values()]
    return s.read_tasks(s.task_list(), lambda t: t.as_dict())


def readings(state: object, repeat: int) -> dict[str, float]:
    s: object = state
    copy = getattr(s, "freeze_while")  # noqa: B009 - both States have it
    return {
        "tasks_by_time(limit=100)": best(lambda: list(s.tasks_by_time(limit=100)), repeat),
        "newest 100 tasks": best(lambda: newest_100(s), repeat),
        "tasks_by_time() all": best(lambda: list(s.tasks_by_time()), repeat),
        "itertasks() all": best(lambda: list(s.itertasks()), repeat),
        "freeze_while + shallow copy": best(lambda: copy(lambda: dict(s.tasks.items())),
                                            repeat),
        "as_dict() every task": best(lambda: [t.as_dict() for t in s.tasks.values()], repeat),
        "  the same, in one read": best(lambda: every_dict(s), repeat),
        "pickle.dumps(state)": best(lambda: pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL),
                                    max(1, repeat // 2)),
    }


def rss_per_task(impl: str, n: int) -> float:
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, impl, str(n),
                          str(Path(__file__).resolve().parent)],
                         check=True, capture_output=True, text=True).stdout
    return float(out.strip())


def child(impl: str, n: int, repeat: int) -> None:
    """Build one State in this process, read it, print what was measured."""
    if impl == "celery":
        from celery.events.state import State
    else:
        from tidings.events.state import State
    state = State(max_tasks_in_memory=n)
    for event in fresh(list(stream(n))):
        state.event(event)
    assert len(newest_100(state)) == 100
    given = [u for u, _ in state.tasks_by_time(limit=100)]
    print(json.dumps({"readings": readings(state, repeat), "given": len(given),
                      "newest": given}))


def read_alone(impl: str, n: int, repeat: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", impl, str(n), str(repeat)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        impl, n, repeat = args.child
        return child(impl, int(n), int(repeat))

    from celery import __version__ as celery_version

    from tidings import __version__ as tidings_version

    n = args.tasks
    read = {label: read_alone(label, n, args.repeat) for label in ("celery", "tidings")}
    # the same newest tasks, or the comparison is moot
    if set(read["celery"]["newest"]) != set(read["tidings"]["newest"]):
        print("note: the two States disagree on the newest 100 "
              "(Celery's heap walk is only roughly ordered)")
    results = {label: r["readings"] for label, r in read.items()}
    given = {label: r["given"] for label, r in read.items()}
    rss = {label: rss_per_task(label, n) for label in read}

    print(f"{n:,} tasks; celery {celery_version}, tidings {tidings_version}; "
          f"best of {args.repeat}")
    print(f"{'read':<30}{'celery ms':>12}{'tidings ms':>12}{'ratio':>9}")
    for name in results["celery"]:
        c, t = results["celery"][name] * 1e3, results["tidings"][name] * 1e3
        print(f"{name:<30}{c:>12.3f}{t:>12.3f}{t / c:>8.2f}x")
        if name == "tasks_by_time(limit=100)":
            print(f"{'  tasks it gives':<30}{given['celery']:>12}{given['tidings']:>12}")
    print(f"{'RSS per task (bytes)':<30}{rss['celery']:>12,.0f}{rss['tidings']:>12,.0f}"
          f"{rss['tidings'] / rss['celery']:>8.2f}x")


if __name__ == "__main__":
    main()
