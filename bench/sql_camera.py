"""SQL camera: how long a shot takes and how long it stalls ingest, against Celery's Polaroid.

A State holds ``--tasks`` tasks (100k); ``--changed`` of them (10k) change
before the shot.  A feeder thread keeps sending events into the State while
the shot runs; the longest time one ``State.event`` call waited is the
ingest stall.  Celery's Polaroid runs ``on_shutter`` under the State lock
(and, knowing nothing of changes, writes every task); Tidings copies the
changed tasks under the lock and writes outside it.

    python bench/sql_camera.py                       # SQLite file
    python bench/sql_camera.py --db postgresql+psycopg://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))

from state_ingest import stream


def fill(state, n_tasks: int) -> None:
    for event in stream(n_tasks):
        state.event(event)


def change(state, uuids: list[str], clock: int) -> None:
    now = time.time()
    for i, uuid in enumerate(uuids):
        state.event({"hostname": "worker0@bench", "utcoffset": 0.0, "pid": 1,
                     "clock": clock + i, "uuid": uuid, "result": "'changed'", "runtime": 0.5,
                     "timestamp": now, "type": "task-succeeded", "local_received": now})


class Feeder(threading.Thread):
    """Sends events during the shot and records the longest wait of one call."""

    def __init__(self, state) -> None:
        super().__init__(daemon=True)
        self.state = state
        self.stop = threading.Event()
        self.longest = 0.0
        self.count = 0

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            now = time.time()
            event = {"hostname": "worker1@bench", "utcoffset": 0.0, "pid": 1,
                     "clock": 10_000_000 + i, "freq": 2.0, "active": 1, "processed": i,
                     "timestamp": now, "type": "worker-heartbeat", "local_received": now}
            start = time.perf_counter()
            self.state.event(event)
            self.longest = max(self.longest, time.perf_counter() - start)
            self.count += 1
            i += 1
            time.sleep(0.0005)


def measure(label: str, state, shoot) -> tuple[float, float]:
    feeder = Feeder(state)
    feeder.start()
    time.sleep(0.05)
    start = time.perf_counter()
    shoot()
    elapsed = time.perf_counter() - start
    feeder.stop.set()
    feeder.join()
    print(f"{label:<34}{elapsed:>10.3f}s{feeder.longest * 1000:>14.1f}ms")
    return elapsed, feeder.longest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--changed", type=int, default=10_000)
    parser.add_argument("--db", default=None, help="database URL (default: a SQLite file)")
    args = parser.parse_args()

    from celery.events.snapshot import Polaroid as CeleryPolaroid
    from celery.events.state import State as CeleryState

    from tidings.cameras import SQLCamera, task_row, worker_row
    from tidings.events.state import State
    from tidings.utils.timer import Timer

    folder = tempfile.mkdtemp(prefix="tidings-bench-")
    db = args.db or f"sqlite:///{folder}/bench.sqlite"
    schema = None
    if db.startswith("postgresql"):
        # work in a schema of our own, dropped at the end, never in the user's tables
        import sqlalchemy

        schema = f"tidings_bench_{os.getpid()}"
        admin = sqlalchemy.create_engine(db)
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f'create schema "{schema}"'))
        db += ("&" if "?" in db else "?") + f"options=-csearch_path%3D{schema}"
    print(f"{args.tasks} tasks in State, {args.changed} changed before the shot; db: "
          f"{db.split('://')[0]}")
    print(f"{'':34}{'shot took':>11}{'ingest stall':>15}")

    # Tidings
    state = State(max_tasks_in_memory=args.tasks)
    fill(state, args.tasks)
    cam = SQLCamera(state, timer=Timer(), db=db)
    cam.shutter()  # first shot writes everything
    uuids = list(state.tasks)[: args.changed]
    change(state, uuids, 20_000_000)
    tid_time, tid_stall = measure("tidings SQLCamera (changed only)", state, cam.shutter)
    assert cam.last_shot[1] == args.changed, cam.last_shot

    # Celery's Polaroid with the same SQL writing, as a Celery camera would do it
    class CelerySQL(CeleryPolaroid):
        def on_shutter(self, st):
            now = time.time()
            task_rows = [task_row(t, now) for t in st.tasks.values()]
            worker_rows = [worker_row(w, now) for w in st.workers.values()]
            with cam.engine.begin() as conn:
                cam._upsert(conn, cam.workers_table, "hostname", worker_rows)
                cam._upsert(conn, cam.tasks_table, "uuid", task_rows)

    cstate = CeleryState(max_tasks_in_memory=args.tasks)
    fill(cstate, args.tasks)
    change(cstate, list(cstate.tasks.keys())[: args.changed], 20_000_000)
    ccam = CelerySQL(cstate, timer=Timer())
    cel_time, cel_stall = measure("celery Polaroid (whole state)", cstate, ccam.capture)
    print(f"shot time ratio tidings/celery: {tid_time / cel_time:.3f}x; "
          f"ingest stall ratio tidings/celery: {tid_stall / cel_stall:.4f}x")
    cam.cancel(final=False)
    if schema is not None:
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f'drop schema "{schema}" cascade'))


if __name__ == "__main__":
    main()
