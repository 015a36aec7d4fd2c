"""Every long-running part of Tidings at once, on one broker URL, and ways to read them.

A worker (threads pool, ``-E``), ``tidings events --json``, ``tidings exporter``,
the SQL camera on SQLite, ``tidings web`` and the terminal monitor's ingest all
connect to the URL given (the real broker, or a :class:`~tests.cli.proxy.Proxy`
in front of it); the test's client keeps publishing through the cluster's own app, so a
cut proxy leaves the broker itself reachable for it.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
import traceback
import urllib.request

from tests.cli.helpers import Running
from tests.integration.test_exporter import free_port
from tests.web.helpers import http
from tests.worker.helpers import WorkerProcess, cluster, wait_for
from tidings import App
from tidings.events import State
from tidings.top import Ingest

__all__ = ["CONSUMERS", "RECONNECT_BOUND", "Components", "send"]

#: Seconds within which every component is working again after the broker is back
#: (the reconnect back-off tops out at 16 s: transport/reconnect.py).
RECONNECT_BOUND = 30.0
#: What :meth:`Components.back_in_service` waits for.
CONSUMERS = ("dump", "ingest", "camera", "exporter", "web")
#: The probe task of :meth:`Components.back_in_service` (used for nothing else), and
#: seconds between probes.
PROBE = "proj.noop"
PROBE_INTERVAL = 0.5


class Components:
    """A worker, ``events --json``, the exporter, the SQL camera, the web monitor and
    the terminal monitor's ingest.

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
        self.web_port = free_port()
        self.web = Running(["web", "--port", str(self.web_port)], env, tmp_path, name="web")
        self.running = [self.dump, self.exporter, self.camera, self.web]
        if wait:
            assert wait_for(lambda: all("receiving events" in r.stderr
                                        for r in (self.dump, self.camera, self.web))
                            and self.metrics() is not None, 40), self.diagnosis()

    def dumped(self, uuid: str, type_: str) -> bool:
        return uuid in self._dumped(type_)

    def _dumped(self, type_: str) -> set[str]:
        """The ids of the tasks whose ``type_`` event the dump printed."""
        ids = set()
        for line in self.dump.stdout.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("type") == type_:
                ids.add(event.get("uuid"))
        return ids

    def metrics(self) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                        timeout=5) as r:
                return r.read().decode()
        except OSError:
            return None

    def succeeded(self, name: str | None = None) -> float:
        """Tasks the exporter counted as succeeded (of the task ``name``, or all)."""
        label = f'name="{name}"'
        return sum(float(line.rsplit(" ", 1)[1]) for line in (self.metrics() or "").splitlines()
                   if line.startswith("celery_task_succeeded_total{")
                   and (name is None or label in line))

    def _in_camera(self, uuids: list[str]) -> bool:
        try:
            with sqlite3.connect(self.db) as conn:
                row = conn.execute(
                    "select 1 from tidings_tasks where state = 'SUCCESS' and uuid in "
                    f"({','.join('?' * len(uuids))})", uuids).fetchone()
        except sqlite3.Error:
            return False
        return row is not None

    def _in_web(self, uuids: tuple[str, ...]) -> bool:
        try:
            status, _, tasks = http(f"http://127.0.0.1:{self.web_port}/api/tasks?state=SUCCESS",
                                    timeout=5)
        except OSError:
            return False
        return status == 200 and any(u in tasks for u in uuids)

    def web_serves(self, uuid: str) -> bool:
        """The web monitor answers with what it knows of ``uuid`` (its page and the API)."""
        try:
            page = http(f"http://127.0.0.1:{self.web_port}/task/{uuid}", timeout=5)
            api = http(f"http://127.0.0.1:{self.web_port}/api/task/info/{uuid}", timeout=5)
        except OSError:
            return False
        return page[0] == 200 and api[0] == 200 and api[2].get("state") == "SUCCESS"

    def everywhere(self, *uuids: str) -> dict[str, bool]:
        """Which consumers have seen one of ``uuids`` succeed."""
        dumped = self._dumped("task-succeeded")
        return {"dump": any(u in dumped for u in uuids),
                "ingest": any(getattr(self.state.tasks.get(u), "state", None) == "SUCCESS"
                              for u in uuids),
                "camera": self._in_camera(list(uuids)),
                "web": self._in_web(uuids)}

    def alive(self) -> bool:
        return self.worker.proc.poll() is None and all(r.proc.poll() is None
                                                       for r in self.running)

    def back_in_service(self, since: float, seen: dict[str, float],
                        bound: float = RECONNECT_BOUND) -> bool:
        """Send a probe task every :data:`PROBE_INTERVAL` seconds until each consumer
        has seen one succeed; record in ``seen`` how long after ``since`` each did
        (``worker``: the first probe run).  True if all did within ``bound``.

        One probe is not enough: events published while a consumer is still
        reconnecting reach no queue of its own (the broker keeps none for it),
        so a consumer is back once it sees a probe sent after it was.
        """
        probes: list[str] = []
        end = since + bound
        due = 0.0
        while time.monotonic() < end:
            if time.monotonic() >= due:
                probes.append(send(self.c, task=PROBE, deadline=max(end - time.monotonic(), 0)))
                due = time.monotonic() + PROBE_INTERVAL
            status = self.everywhere(*probes)
            status["exporter"] = self.succeeded(PROBE) >= 1
            for name, ok in status.items():
                if ok:
                    seen.setdefault(name, time.monotonic() - since)
                    seen.setdefault("worker", seen[name])
            if all(name in seen for name in CONSUMERS):
                return True
            time.sleep(0.1)
        return False

    def diagnosis(self) -> str:
        """What a failed assertion should show: each consumer's latest words and, for
        the in-process ingest, its status, counts and where its thread is."""
        source = self.ingest.source
        frame = sys._current_frames().get(self.ingest.thread.ident)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(gone)"
        return "\n".join([
            f"ingest: status={source.status!s} reconnects={source.reconnects} "
            f"events={source.event_count} errors={dict(source.errors)}",
            f"ingest thread:\n{stack}",
            *(f"{r.err_path.stem} stderr: {r.stderr[-1500:]}" for r in self.running),
        ])

    def close(self) -> None:
        self.ingest.close()
        for r in self.running:
            r.stop()


def send(c: cluster, *args, task: str = "proj.add", deadline: float = RECONNECT_BOUND) -> str:
    """A task sent as soon as the broker takes it."""
    end = time.monotonic() + deadline
    while True:
        try:
            return getattr(c.proj, task.split(".")[-1]).delay(*args).id
        except Exception:
            c.proj.app.publisher.close()
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
