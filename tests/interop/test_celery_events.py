"""Interop with real Celery 5.7: each side understands the other's events."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.cli.helpers import wait_for
from tests.conftest import ROOT, cleanup_broker, delete_queue, make_app, unique
from tidings.events import EventDispatcher, EventReceiver, State

pytestmark = [pytest.mark.broker, pytest.mark.interop]




@pytest.fixture
def celery_env(broker_url):
    app, declared = make_app(broker_url)
    queue = unique("tidings-test-q")
    env = dict(os.environ, INTEROP_BROKER=broker_url,
               INTEROP_EVENT_EXCHANGE=app.conf.event_exchange,
               INTEROP_CONTROL_EXCHANGE=app.conf.control_exchange, INTEROP_QUEUE=queue,
               PYTHONPATH=str(ROOT))
    yield app, env, queue
    cleanup_broker(broker_url, declared)
    delete_queue(broker_url, queue)


def celery_client(env):
    """A Celery client app in this process, configured like the worker."""
    from celery import Celery

    client = Celery("interop-client", broker=env["INTEROP_BROKER"], set_as_current=False)
    client.conf.update(event_exchange=env["INTEROP_EVENT_EXCHANGE"],
                       control_exchange=env["INTEROP_CONTROL_EXCHANGE"],
                       task_default_queue=env["INTEROP_QUEUE"], task_send_sent_event=True)
    return client


def test_tidings_state_follows_a_real_celery_worker(celery_env, tmp_path):
    app, env, queue = celery_env
    state = State()
    recv = EventReceiver(app.connection_for_read(), handlers={"*": state.event}, app=app)
    thread = threading.Thread(target=recv.capture, kwargs={"wakeup": True}, daemon=True)
    thread.start()
    log = Path(tmp_path / "worker.log").open("w")  # noqa: SIM115 - outlives this block
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.interop.celery_app", "worker", "-E",
         "-P", "solo", "-n", "celery-w@interop", "-Q", queue, "--without-gossip",
         "--without-mingle", "-l", "INFO"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        assert wait_for(lambda: "celery-w@interop" in state.workers, 60), \
            (tmp_path / "worker.log").read_text()
        client = celery_client(env)
        ok = client.send_task("interop.add", (2, 3))
        bad = client.send_task("interop.fail", (7,))
        assert wait_for(lambda: all(
            u in state.tasks and state.tasks[u].ready for u in (ok.id, bad.id)), 60)
        good_task, bad_task = state.tasks[ok.id], state.tasks[bad.id]
        assert (good_task.name, good_task.state, good_task.result) == \
            ("interop.add", "SUCCESS", "5")
        assert (bad_task.name, bad_task.state) == ("interop.fail", "FAILURE")
        assert "intentional failure" in bad_task.exception
        assert "Traceback" in bad_task.traceback
        assert good_task.worker.hostname == "celery-w@interop"
        assert good_task.client.startswith("gen")  # task-sent from the Celery client
        assert state.workers["celery-w@interop"].alive
        assert state.workers["celery-w@interop"].sw_ident == "py-celery"
        assert not recv.errors
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        assert wait_for(lambda: not state.workers["celery-w@interop"].alive, 15)
    finally:
        if worker.poll() is None:
            worker.kill()
        recv.should_stop = True
        thread.join(10)
        log.close()


def test_celery_understands_tidings_events(celery_env):
    app, env, _ = celery_env
    client = celery_client(env)
    state = client.events.State()
    ready = threading.Event()

    def run():
        with client.connection_for_read() as conn:
            recv = client.events.Receiver(conn, handlers={"*": state.event})
            original = recv.on_consume_ready

            def on_ready(*args, **kwargs):
                original(*args, **kwargs)
                ready.set()

            recv.on_consume_ready = on_ready
            runner.recv = recv
            try:
                recv.capture(wakeup=False)
            except Exception as exc:  # pragma: no cover - shown by the assertions
                runner.error = exc

    runner = threading.Thread(target=run, daemon=True)
    runner.error = None
    runner.start()
    try:
        assert ready.wait(15)
        time.sleep(0.3)
        with app.connection_for_write() as conn:
            d = EventDispatcher(conn, hostname="tid@interop", app=app, buffer_group=["task"])
            d.send("worker-online", freq=2.0, active=0, processed=0, loadavg=[0.0, 0.0, 0.0],
                   sw_ident="py-tidings", sw_ver="0.1.0", sw_sys="Linux")
            d.send("task-received", uuid="t-1", name="proj.mul", args="(2, 4)", kwargs="{}",
                   root_id="t-1", parent_id=None, retries=0, eta=None, expires=None)
            d.send("task-started", uuid="t-1")
            d.send("task-succeeded", uuid="t-1", result="8", runtime=0.002)
            d.send("task-received", uuid="t-2", name="proj.div", args="(1, 0)", kwargs="{}",
                   root_id="t-2", parent_id=None, retries=0, eta=None, expires=None)
            d.send("task-failed", uuid="t-2", exception="ZeroDivisionError('division by zero')",
                   traceback="Traceback (most recent call last):\n...")
            d.flush()
        assert wait_for(lambda: "t-2" in state.tasks and state.tasks["t-2"].state == "FAILURE",
                        15), runner.error
        t1 = state.tasks["t-1"]
        assert (t1.name, t1.state, t1.result, t1.args) == ("proj.mul", "SUCCESS", "8", "(2, 4)")
        assert t1.worker.hostname == "tid@interop"
        worker = state.workers["tid@interop"]
        assert worker.alive and worker.sw_ident == "py-tidings"
        assert runner.error is None
    finally:
        if getattr(runner, "recv", None) is not None:
            runner.recv.should_stop = True
        runner.join(10)
