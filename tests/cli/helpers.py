"""Running the real ``tidings`` command as a subprocess, and feeding it events."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tidings import App
from tidings.events import EventDispatcher

TIDINGS = str(Path(sys.executable).with_name("tidings"))
ROOT = Path(__file__).resolve().parents[2]


def cli_env(app: App, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(TIDINGS_EVENT_EXCHANGE=app.conf.event_exchange,
               TIDINGS_CONTROL_EXCHANGE=app.conf.control_exchange,
               PYTHONPATH=str(ROOT), **extra)
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 60, **kwargs
        ) -> subprocess.CompletedProcess:
    return subprocess.run([TIDINGS, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class Running:
    """``tidings ...`` in the background, with its output in files."""

    def __init__(self, args: list[str], env: dict[str, str], tmp_path: Path,
                 name: str = "cli") -> None:
        self.out_path = tmp_path / f"{name}.out"
        self.err_path = tmp_path / f"{name}.err"
        self._out = self.out_path.open("w")
        self._err = self.err_path.open("w")
        self.proc = subprocess.Popen([TIDINGS, *args], env=env, stdout=self._out,
                                     stderr=self._err, cwd=tmp_path)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def wait_ready(self, timeout: float = 30.0) -> None:
        ok = wait_for(lambda: "receiving events" in self.stderr or self.proc.poll() is not None,
                      timeout)
        assert ok and self.proc.poll() is None, f"not ready:\n{self.stderr}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._out.close()
            self._err.close()
        return code


def publish_cluster(app: App, hostname: str = "w1@cli", tasks: int = 3,
                    name: str = "proj.add") -> list[str]:
    """What a worker with task events on would publish; returns the task ids."""
    ids = []
    with app.connection_for_write() as conn:
        d = EventDispatcher(conn, hostname=hostname, app=app, buffer_group=["task"])
        info = dict(freq=2.0, active=0, processed=0, loadavg=[0.1, 0.2, 0.3],
                    sw_ident="py-tidings", sw_ver="0.1.0", sw_sys="Linux")
        d.send("worker-online", **info)
        for i in range(tasks):
            uuid = f"{hostname}-{name}-{i}"
            ids.append(uuid)
            d.send("task-received", uuid=uuid, name=name, args=f"({i}, 1)", kwargs="{}",
                   root_id=uuid, parent_id=None, retries=0, eta=None, expires=None)
            d.send("task-started", uuid=uuid)
            if i % 3 == 2:
                d.send("task-failed", uuid=uuid, exception="ValueError('x')",
                       traceback="Traceback (most recent call last):\nValueError: x")
            else:
                d.send("task-succeeded", uuid=uuid, result=str(i + 1), runtime=0.01)
        d.flush()
        d.send("worker-heartbeat", **info)
    return ids
