"""Real broker restarts (RabbitMQ ``stop_app``/``start_app``, Redis shut down and started
again) under every consumer and a worker at once; and a broker that is unreachable for
the first 10 seconds.

Each component must not crash, must reconnect on its own within
:data:`RECONNECT_BOUND` seconds of the broker's return (the times are printed,
``pytest -s`` shows them), keep doing what it can while the broker is away (the
worker finishes the task it holds; the exporter keeps answering), and say so.

These tests restart a shared broker: they are marked ``broker_restart`` so that
``-m "not broker_restart"`` leaves them out, and they bring the broker back even
when they fail.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
import urllib.request
from contextlib import contextmanager

import pytest

from tests.cli.helpers import Running
from tests.cli.proxy import Proxy
from tests.integration.test_exporter import free_port
from tests.worker.helpers import cluster, wait_for
from tidings.events import State
from tidings.top import Ingest

pytestmark = [pytest.mark.broker, pytest.mark.broker_restart]

#: Seconds within which every component is working again after the broker is back
#: (the reconnect back-off tops out at 16 s: transport/reconnect.py).
RECONNECT_BOUND = 30.0
#: Seconds the broker stays away.
OUTAGE = 5.0
REDIS_START = ("redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' "
               "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log")


def _ok(*cmd: str) -> bool:
    return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0


@contextmanager
def restartable(url: str):
    """``stop()``/``start()`` of the broker at ``url``; it is running again afterwards."""
    if url.startswith("amqp"):
        if not shutil.which("rabbitmqctl"):
            pytest.skip("rabbitmqctl not available")
        stop = lambda: _ok("rabbitmqctl", "-q", "stop_app")  # noqa: E731
        start = lambda: _ok("rabbitmqctl", "-q", "start_app")  # noqa: E731
        up = lambda: _ok("rabbitmq-diagnostics", "-q", "check_running")  # noqa: E731
    else:
        if not shutil.which("redis-server"):
            pytest.skip("redis-server not available")
        up = lambda: _ok("redis-cli", "-h", "127.0.0.1", "ping")  # noqa: E731

        def stop() -> bool:  # the client's exit status says nothing: the server is gone
            subprocess.run(["redis-cli", "-h", "127.0.0.1", "shutdown", "nosave"],
                           capture_output=True, timeout=60)
            return wait_for(lambda: not up(), 20)

        def start() -> bool:
            return subprocess.run(REDIS_START, shell=True, timeout=60).returncode == 0
    try:
        yield stop, start
    finally:
        if not up():
            start()
        assert wait_for(up, 60), "the broker did not come back"


class Components:
    """A worker, ``events --json``, the exporter, the SQL camera and the monitor's ingest."""

    def __init__(self, c: cluster, tmp_path, url: str) -> None:
        self.c = c
        self.worker = c.worker("-E", "-P", "threads", "-c", "2")
        env = dict(c.env, TIDINGS_BROKER_URL=url)
        self.dump = Running(["events", "--json"], env, tmp_path, name="dump")
        self.port = free_port()
        self.exporter = Running(["exporter", "--port", str(self.port)], env, tmp_path,
                                name="exporter")
        self.db = tmp_path / "camera.db"
        self.camera = Running(["events", "-c", "tidings.cameras.SQLCamera", "--db",
                               f"sqlite:///{self.db}", "-F", "0.3"], env, tmp_path,
                              name="camera")
        self.state = State()
        self.ingest = Ingest(c.app, self.state).start()
        self.running = [self.dump, self.exporter, self.camera]
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
        return self.metrics_at(self.port)

    @staticmethod
    def metrics_at(port: int) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return r.read().decode()
        except OSError:
            return None

    @staticmethod
    def succeeded_count(text: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
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
        task = self.state.tasks.get(uuid)
        return {"dump": self.dumped(uuid, "task-succeeded"),
                "ingest": task is not None and task.state == "SUCCESS",
                "camera": self.in_camera(uuid)}

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


@pytest.mark.parametrize("broker", ["amqp", "redis"])
def test_every_component_survives_a_broker_restart(broker, amqp_url, redis_url, tmp_path):
    url = amqp_url if broker == "amqp" else redis_url
    with restartable(url) as (stop, start), cluster(url, tmp_path) as c:
        comp = Components(c, tmp_path, url)
        try:
            first = send(c, 1, 1)
            assert wait_for(lambda: all(comp.everywhere(first).values()), 40), \
                comp.everywhere(first)
            assert wait_for(lambda: comp.succeeded_count(comp.metrics() or "") >= 1, 20)
            held = c.proj.sleep.delay(OUTAGE + 2).id
            assert wait_for(lambda: comp.dumped(held, "task-started"), 20)
            assert stop()
            down_at = time.monotonic()
            time.sleep(OUTAGE)
            # while the broker is away: nothing crashed, the exporter still answers,
            # the monitor's state is still there
            assert comp.worker.proc.poll() is None
            assert all(r.proc.poll() is None for r in comp.running)
            assert comp.metrics() is not None
            assert comp.state.tasks[first].state == "SUCCESS"
            assert start()
            up_at = time.monotonic()
            second = send(c, 2, 2)
            seen: dict[str, float] = {}

            def caught_up() -> bool:
                for name, ok in comp.everywhere(second).items():
                    if ok and name not in seen:
                        seen[name] = time.monotonic() - up_at
                if "exporter" not in seen and comp.succeeded_count(comp.metrics() or "") >= 2:
                    seen["exporter"] = time.monotonic() - up_at
                return len(seen) == 4

            assert wait_for(caught_up, RECONNECT_BOUND), (seen, comp.dump.stderr[-2000:])
            # the task the worker held while the broker was away finished, and said so
            assert wait_for(lambda: comp.dumped(held, "task-succeeded"), 20), \
                comp.worker.log[-3000:]
            assert "lost" in comp.dump.stderr, comp.dump.stderr  # the outage was reported
            assert "tidings_reconnects_total" in (comp.metrics() or "")
            print(f"\n{broker}: broker away {up_at - down_at:.1f} s; back in service "
                  "after it returned: "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(seen.items())))
        finally:
            comp.close()


def test_a_broker_unreachable_for_the_first_ten_seconds(amqp_url, tmp_path):
    """Every consumer and the worker wait for a broker that is not there yet (Celery's
    ``broker_connection_retry_on_startup``), say so, and work once it is there."""
    from tidings import App

    proxy = Proxy(5672)  # not listening yet: connections are refused
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}//"
    with cluster(amqp_url, tmp_path) as c:
        env = dict(c.env, TIDINGS_BROKER_URL=url)
        worker = c.worker("-E", "-P", "threads", "-c", "2", name="late@test", env=env,
                          wait=False)
        port = free_port()
        db = tmp_path / "camera.db"
        dump = Running(["events", "--json"], env, tmp_path, name="dump")
        exporter = Running(["exporter", "--port", str(port)], env, tmp_path, name="exporter")
        camera = Running(["events", "-c", "tidings.cameras.SQLCamera", "--db",
                          f"sqlite:///{db}", "-F", "0.3"], env, tmp_path, name="camera")
        running = [dump, exporter, camera]
        app = App("late", broker=url, event_exchange=c.app.conf.event_exchange,
                  control_exchange=c.app.conf.control_exchange)
        state = State()
        ingest = Ingest(app, state).start()
        try:
            time.sleep(10)
            assert worker.proc.poll() is None, worker.log
            for r in running:
                assert r.proc.poll() is None, r.stderr
            assert "Cannot connect to" in dump.stderr and "retrying" in dump.stderr
            assert "Cannot connect to" in worker.log
            assert not ingest.source.status.ok  # the monitor shows it has no broker
            proxy.start()
            up_at = time.monotonic()
            seen: dict[str, float] = {}
            probe = Components.__new__(Components)  # its readers, on these processes
            probe.dump, probe.db, probe.state, probe.port = dump, db, state, port

            def served() -> bool:
                task = c.proj.add.delay(3, 4)  # through the real broker, to late@test
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline and len(seen) < 5:
                    found = probe.everywhere(task.id)
                    found["worker"] = probe.dumped(task.id, "task-received")
                    found["exporter"] = Components.succeeded_count(probe.metrics() or "") >= 1
                    for name, ok in found.items():
                        if ok and name not in seen:
                            seen[name] = time.monotonic() - up_at
                    time.sleep(0.1)
                return len(seen) == 5

            assert wait_for(served, RECONNECT_BOUND), (seen, dump.stderr[-2000:],
                                                       worker.log[-2000:])
            print("\nunreachable for 10 s, then reachable: back in service after "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(seen.items())))
        finally:
            ingest.close()
            for r in running:
                r.stop()
            proxy.cut()
