"""Every long-running part of Tidings at once, on one broker URL, and ways to read them.

A worker (threads pool, ``-E``), ``tidings events --json``, ``tidings exporter``,
the SQL camera on SQLite and the terminal monitor's ingest all connect to the
URL given (the real broker, or a :class:`~tests.cli.proxy.Proxy` in front of
it); the test's client keeps publishing through the cluster's own app, so a
cut proxy leaves the broker itself reachable for it.
"""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.request

from tests.cli.helpers import Running
from tests.integration.test_exporter import free_port
from tests.worker.helpers import WorkerProcess, cluster, wait_for
from tidings import App
from tidings.events import State
from tidings.top import Ingest

__all__ = ["CONSUMERS", "RECONNECT_BOUND", "Components", "send"]

#: Seconds within which every component is working again after the broker is back
#: (the reconnect back-off tops out at 16 s: transport/reconnect.py).
RECONNECT_BOUND = 30.0
#: What :meth:`Components.caught_up` waits for.
CONSUMERS = ("dump", "ingest", "camera", "exporter")


class Components:
    """A worker, ``events --json``, the exporter, the SQL camera and the monitor's ingest.

    With ``wait`` (the default) the constructor returns once all of them are
    connected; without, it returns at once (a broker that is not there yet).
    """

    def __init__(self, c: cluster, tmp_path, url: str, *, name: str = "w1@test",
                 wait: bool = True) -> None:
        self.c = c
        env = dict(c.env, TIDINGS_BROKER_URL=url)
        self.worker: WorkerProcess = c.worker("-E", "-P", "threads", "-c", "2", name=name,
                                              env=env, wait=wait)
        self.dump = Running(["events", "--json"], env, tmp_path, name="dump")
        self.port = free_port()
        self.exporter = Running(["exporter", "--port", str(self.port)], env, tmp_path,
                                name="exporter")
        self.db = tmp_path / "camera.db"
        self.camera = Running(["events", "-c", "tidings.cameras.SQLCamera", "--db",
                               f"sqlite:///{self.db}", "-F", "0.3"], env, tmp_path,
                              name="camera")
        self.state = State()
        app = App("faults", broker=url, event_exchange=c.app.conf.event_exchange,
                  control_exchange=c.app.conf.control_exchange)
        self.ingest = Ingest(app, self.state).start()
        self.running = [self.dump, self.exporter, self.camera]
        if wait:
            assert wait_for(lambda: "receiving events" in self.dump.stderr
                            and "receiving events" in self.camera.stderr
                            and self.metrics() is not None, 40), \
                (self.dump.stderr, self.camera.stderr, self.exporter.stderr)

    def dumped(self, uuid: str, type_: str) -> bool:
        for line in self.dump.stdout.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("uuid") == uuid and event.get("type") == type_:
                return True
        return False

    def metrics(self) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                        timeout=5) as r:
                return r.read().decode()
        except OSError:
            return None

    def succeeded(self) -> float:
        """Tasks the exporter counted as succeeded."""
        return sum(float(line.rsplit(" ", 1)[1]) for line in (self.metrics() or "").splitlines()
                   if line.startswith("celery_task_succeeded_total{"))

    def in_camera(self, uuid: str) -> bool:
        try:
            with sqlite3.connect(self.db) as conn:
                row = conn.execute("select state from tidings_tasks where uuid = ?",
                                   (uuid,)).fetchone()
        except sqlite3.Error:
            return False
        return row is not None and row[0] == "SUCCESS"

    def everywhere(self, uuid: str) -> dict[str, bool]:
        """Which consumers have seen ``uuid`` succeed."""
        task = self.state.tasks.get(uuid)
        return {"dump": self.dumped(uuid, "task-succeeded"),
                "ingest": task is not None and task.state == "SUCCESS",
                "camera": self.in_camera(uuid)}

    def alive(self) -> bool:
        return self.worker.proc.poll() is None and all(r.proc.poll() is None
                                                       for r in self.running)

    def caught_up(self, uuid: str, since: float, seen: dict[str, float],
                  succeeded: float) -> bool:
        """Record in ``seen`` how long after ``since`` each consumer had ``uuid``
        (the exporter: a succeeded count of at least ``succeeded``); True once all had."""
        for name, ok in self.everywhere(uuid).items():
            if ok and name not in seen:
                seen[name] = time.monotonic() - since
        if "exporter" not in seen and self.succeeded() >= succeeded:
            seen["exporter"] = time.monotonic() - since
        return all(name in seen for name in CONSUMERS)

    def close(self) -> None:
        self.ingest.close()
        for r in self.running:
            r.stop()


def send(c: cluster, *args, deadline: float = RECONNECT_BOUND) -> str:
    """A task sent as soon as the broker takes it."""
    end = time.monotonic() + deadline
    while True:
        try:
            return c.proj.add.delay(*args).id
        except Exception:
            c.proj.app.publisher.close()
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
