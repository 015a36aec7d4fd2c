"""A real ``tidings worker`` process and an event capture around it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.cli.helpers import TIDINGS, cli_env, wait_for
from tests.conftest import ROOT, cleanup_broker, delete_queue, make_app, unique
from tidings import App
from tidings.events import EventReceiver

__all__ = ["NO_REPLY", "Capture", "WorkerProcess", "cluster", "delete_queue", "inspect",
           "wait_for"]


class Capture:
    """Every event of an app's exchange, received in a thread."""

    def __init__(self, app: App) -> None:
        self.events: list[dict] = []
        self.ready = threading.Event()
        self.recv = EventReceiver(app.connection_for_read(), app=app,
                                  handlers={"*": self.events.append})
        original = self.recv.on_consume_ready

        def on_ready(*args, **kwargs):
            original(*args, **kwargs)
            self.ready.set()

        self.recv.on_consume_ready = on_ready
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.recv.capture(wakeup=False)
        except Exception:  # pragma: no cover - the test sees missing events
            pass

    def start(self) -> Capture:
        self.thread.start()
        assert self.ready.wait(20)
        return self

    def stop(self) -> None:
        self.recv.should_stop = True
        self.thread.join(10)

    def of(self, type_: str, uuid: str | None = None) -> list[dict]:
        return [e for e in list(self.events) if e["type"] == type_
                and (uuid is None or e.get("uuid") == uuid)]

    def wait(self, type_: str, uuid: str | None = None, count: int = 1,
             timeout: float = 30) -> list[dict]:
        wait_for(lambda: len(self.of(type_, uuid)) >= count, timeout)
        return self.of(type_, uuid)


class WorkerProcess:
    def __init__(self, env: dict, tmp_path: Path, *args: str, name: str = "w1@test",
                 app: str = "tests.worker.proj") -> None:
        self.name = name
        self.log_path = tmp_path / f"{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [TIDINGS, "-A", app, "worker", "-n", name, *args],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def children(self) -> list[int]:
        """The pids of the worker's child processes (its prefork pool), Linux only."""
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # a worker that does not stop: its log gets every thread's stack (SIGUSR1),
            # and the failure shows it
            for pid in [self.proc.pid, *self.children()]:
                try:
                    os.kill(pid, signal.SIGUSR1)
                except OSError:
                    pass
            time.sleep(1)
            raise AssertionError(f"{self.name} did not stop in {timeout} s:\n"
                                 f"{self.log[-12000:]}") from None
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log.close()


class cluster:
    """A private app (exchanges, queue), its capture, and worker processes."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.tmp_path = tmp_path
        self.queue = unique("tidings-test-q")
        self.app, self.declared = make_app(url, task_default_queue=self.queue,
                                           task_send_sent_event=True)
        self.env = cli_env(self.app, TIDINGS_BROKER_URL=url,
                           TIDINGS_TASK_DEFAULT_QUEUE=self.queue,
                           TIDINGS_TASK_SEND_SENT_EVENT="1")
        self.workers: list[WorkerProcess] = []
        self.capture = Capture(self.app)

    def __enter__(self) -> cluster:
        from tests.worker import proj

        proj.app.conf.update(broker_url=self.url, event_exchange=self.app.conf.event_exchange,
                             control_exchange=self.app.conf.control_exchange,
                             task_default_queue=self.queue, task_send_sent_event=True)
        self.proj = proj
        self.capture.start()
        return self

    def worker(self, *args: str, name: str = "w1@test", wait: bool = True,
               app: str = "tests.worker.proj", env: dict | None = None) -> WorkerProcess:
        w = WorkerProcess(dict(self.env, **(env or {})), self.tmp_path, *args, name=name,
                          app=app)
        self.workers.append(w)
        if wait:
            ok = wait_for(lambda: any(e["hostname"] == name
                                      for e in self.capture.of("worker-online")), 40)
            assert ok, w.log
        return w

    def __exit__(self, *exc: object) -> None:
        try:
            for w in self.workers:
                w.stop()  # raises if one does not stop: the broker is cleaned all the same
        finally:
            self.capture.stop()
            self.proj.app.publisher.close()
            cleanup_broker(self.url, self.declared)
            delete_queue(self.url, self.queue)


def inspect(c: cluster, command: str, name: str = "w1@test", timeout: float = 5.0,
            **arguments: object) -> object:
    """One worker's reply to an inspect or control command (:data:`NO_REPLY` if none)."""
    replies = c.app.control.broadcast(command, arguments=arguments, destination=[name],
                                      reply=True, timeout=timeout)
    return (replies or [{}])[0].get(name, NO_REPLY)


#: What :func:`inspect` returns when the worker did not answer in time.
NO_REPLY = "<no reply>"


def now() -> float:
    return time.time()


PY = sys.executable
