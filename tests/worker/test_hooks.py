"""Worker hooks fire whether events are on or not (a metrics middleware needs them)."""

import threading
import time

from tests.cli.helpers import wait_for
from tidings import App
from tidings.worker import Middleware, Worker

HOOKS = ("worker_online", "worker_heartbeat", "worker_offline", "task_received",
         "task_started", "task_succeeded", "task_failed", "task_retried", "task_rejected",
         "task_revoked", "task_unregistered")


class Recorder(Middleware):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []


def _recording(name):
    def hook(self, worker, *args, **kwargs):
        request = args[0] if args and name.startswith("task_") else None
        self.calls.append((name, getattr(request, "id", None)))
    return hook


for _name in HOOKS:
    setattr(Recorder, _name, _recording(_name))


def test_every_hook_fires_with_task_events_off(tmp_path):
    app = App("hooks", broker=f"filesystem://{tmp_path}/broker",
              task_default_queue=f"hooks-{time.time_ns()}")

    @app.task(name="hooks.add")
    def add(x, y):
        return x + y

    @app.task(name="hooks.fail")
    def fail():
        raise KeyError("x")

    recorder = Recorder()
    worker = Worker(app, hostname="hooks@test", pool="solo", task_events=False,
                    heartbeat_interval=0.2, middleware=[recorder])
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert worker.ready.wait(20)
        ok = add.delay(1, 2)
        bad = fail.delay()
        lost = app.send_task("hooks.nobody_knows")
        assert wait_for(lambda: ("task_unregistered", lost.id) in recorder.calls
                        and ("task_failed", bad.id) in recorder.calls
                        and ("task_succeeded", ok.id) in recorder.calls
                        and ("worker_heartbeat", None) in recorder.calls, 20), recorder.calls
    finally:
        worker.stop()
        thread.join(20)
        app.publisher.close()
    names = [name for name, _ in recorder.calls]
    for name in ("worker_online", "worker_heartbeat", "worker_offline"):
        assert name in names
    for uuid in (ok.id, bad.id):
        assert ("task_received", uuid) in recorder.calls
        assert ("task_started", uuid) in recorder.calls
    # task events were off: only worker events went out
    assert not worker.task_events_enabled
    assert worker.dispatcher.stats["sent"] == names.count("worker_online") + names.count(
        "worker_heartbeat") + names.count("worker_offline")
