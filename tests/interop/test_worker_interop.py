"""A Tidings worker among Celery 5.7 tools, and Tidings tools on a Celery worker."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from tests.cli.helpers import run, wait_for
from tests.conftest import ROOT
from tests.interop.test_celery_events import celery_client
from tests.worker.helpers import cluster

pytestmark = [pytest.mark.broker, pytest.mark.interop]


def interop_env(c: cluster) -> dict[str, str]:
    return dict(c.env, INTEROP_BROKER=c.url, INTEROP_EVENT_EXCHANGE=c.app.conf.event_exchange,
                INTEROP_CONTROL_EXCHANGE=c.app.conf.control_exchange, INTEROP_QUEUE=c.queue)


def celery_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "tests.interop.celery_app", *args]


def test_celery_client_and_celery_state_with_a_tidings_worker(broker_url, tmp_path):
    with cluster(broker_url, tmp_path) as c:
        env = interop_env(c)
        client = celery_client(env)
        state = client.events.State()
        ready = threading.Event()
        holder = {}

        def capture():
            with client.connection_for_read() as conn:
                recv = client.events.Receiver(conn, handlers={"*": state.event})
                holder["recv"] = recv
                original = recv.on_consume_ready

                def on_ready(*a, **kw):
                    original(*a, **kw)
                    ready.set()

                recv.on_consume_ready = on_ready
                recv.capture(wakeup=False)

        thread = threading.Thread(target=capture, daemon=True)
        thread.start()
        assert ready.wait(15)
        c.worker("-E", "-P", "prefork", "-c", "2", name="tid@interop")
        ok = client.send_task("proj.add", (2, 3))          # a Celery client ...
        bad = client.send_task("proj.fail", (7,))
        later = client.send_task("proj.add", (1, 1), countdown=30)
        assert c.capture.wait("task-succeeded", ok.id)     # ... a Tidings worker
        assert c.capture.wait("task-received", later.id)
        client.control.revoke(later.id)                    # Celery's revoke
        assert wait_for(lambda: ok.id in state.tasks and state.tasks[ok.id].state == "SUCCESS"
                        and bad.id in state.tasks and state.tasks[bad.id].ready, 20)
        assert state.tasks[ok.id].name == "proj.add" and state.tasks[ok.id].result == "5"
        assert state.tasks[bad.id].state == "FAILURE"
        assert "intentional failure" in state.tasks[bad.id].exception
        worker = state.workers["tid@interop"]
        assert worker.alive and worker.sw_ident == "py-tidings"
        holder["recv"].should_stop = True
        thread.join(10)


def test_celery_events_dump_and_celery_control_on_a_tidings_worker(amqp_url, tmp_path):
    with cluster(amqp_url, tmp_path) as c:
        env = interop_env(c)
        dump = subprocess.Popen(celery_cmd("events", "--dump"), env=env, cwd=ROOT,
                                stdout=(tmp_path / "celery-dump.txt").open("w"),
                                stderr=subprocess.STDOUT)
        try:
            time.sleep(3)  # celery events starts slowly
            c.worker("-P", "solo", name="tid@interop")  # no -E
            out = subprocess.run(celery_cmd("control", "enable_events", "-d", "tid@interop"),
                                 env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert "task events enabled" in out.stdout, out.stdout + out.stderr
            task = c.proj.add.delay(40, 2)
            assert c.capture.wait("task-succeeded", task.id)
            out = subprocess.run(celery_cmd("control", "disable_events"), env=env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=60)
            assert "task events disabled" in out.stdout
            out = subprocess.run(celery_cmd("control", "revoke", "some-task-id"), env=env,
                                 cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert "flagged as revoked" in out.stdout
            text = (tmp_path / "celery-dump.txt").read_text()
            assert wait_for(lambda: f"task succeeded: proj.add({task.id})" in
                            (tmp_path / "celery-dump.txt").read_text(), 20), text
            text = (tmp_path / "celery-dump.txt").read_text()
            assert "tid@interop" in text and "started:" in text and "sw_ident=py-tidings" in text
        finally:
            dump.terminate()
            dump.wait(20)


def test_tidings_control_on_a_celery_worker(broker_url, tmp_path):
    with cluster(broker_url, tmp_path) as c:
        env = interop_env(c)
        log = (tmp_path / "celery-worker.log").open("w")
        worker = subprocess.Popen(
            celery_cmd("worker", "-P", "solo", "-n", "cel@interop", "-Q", c.queue,
                       "--without-gossip", "--without-mingle", "-l", "INFO"),
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            assert c.capture.wait("worker-online", timeout=60)
            out = run(["-b", c.url, "control", "enable_events", "-d", "cel@interop",
                       "--timeout", "5"], env)
            assert "->  cel@interop: OK\n        task events enabled" in out.stdout, out.stderr
            result = celery_client(env).send_task("interop.add", (1, 2))
            assert c.capture.wait("task-succeeded", result.id)
            out = run(["-b", c.url, "control", "ping", "--timeout", "5"], env)
            assert "->  cel@interop: OK\n        pong" in out.stdout
        finally:
            worker.terminate()
            worker.wait(30)
            log.close()
