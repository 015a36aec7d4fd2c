"""``celery inspect``/``celery control`` and Flower against a Tidings worker, compared
with a real Celery 5.7 worker running the same tasks; ``tidings inspect`` on Celery.

Nothing here hard-codes Celery's replies: both workers get the same tasks and
the same questions, and the replies must have the same keys and value types.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.cli.helpers import run, wait_for
from tests.conftest import ROOT
from tests.integration.test_exporter import free_port
from tests.interop.test_celery_events import celery_client
from tests.interop.test_worker_interop import celery_cmd, interop_env
from tests.worker.helpers import cluster, delete_queue

pytestmark = [pytest.mark.broker, pytest.mark.interop]

CEL, TID = "cel@interop", "tid@interop"


def shape(value: object) -> object:
    """The keys and value types of a reply (numbers are one type, as in JSON)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


@contextmanager
def two_workers(url: str, tmp_path: Path):
    """A Celery worker and a Tidings worker, same tasks, each on its own queue."""
    with cluster(url, tmp_path) as c:
        env = interop_env(c)
        log = (tmp_path / "celery-worker.log").open("w")
        celery = subprocess.Popen(
            celery_cmd("worker", "-E", "-P", "prefork", "-c", "2", "-n", CEL, "-Q",
                       c.queue + "-cel", "--without-gossip", "--without-mingle", "-l", "INFO"),
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            tidings = c.worker("-E", "-P", "prefork", "-c", "2", "-Q", c.queue + "-tid",
                               name=TID, app="tests.interop.tidings_app")
            assert c.capture.wait("worker-online", count=2, timeout=60), \
                (tmp_path / "celery-worker.log").read_text()
            yield c, env, celery, tidings
        finally:
            if celery.poll() is None:
                celery.terminate()
                celery.wait(30)
            log.close()
            for suffix in ("-cel", "-tid"):
                delete_queue(url, c.queue + suffix)


def celery_json(env: dict, *args: str) -> object:
    out = subprocess.run(celery_cmd(*args, "--json", "-t", "5", "-d", f"{CEL},{TID}"),
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_celery_inspect_and_control_get_the_same_shapes_from_both_workers(amqp_url,
                                                                           tmp_path):
    with two_workers(amqp_url, tmp_path) as (c, env, celery, tidings):
        client = celery_client(env)
        ids = {}
        for node, queue in ((CEL, c.queue + "-cel"), (TID, c.queue + "-tid")):
            running = [client.send_task("interop.sleep", (4,), queue=queue) for _ in range(2)]
            client.send_task("interop.add", (1, 2), queue=queue)
            client.send_task("interop.add", (3, 4), queue=queue, countdown=60)
            ids[node] = running
        for running in ids.values():
            for r in running:
                assert c.capture.wait("task-started", r.id, timeout=30)
        for command in ("stats", "active", "reserved", "scheduled", "registered",
                        "active_queues"):
            replies = celery_json(env, "inspect", command)
            assert set(replies) == {CEL, TID}, command
            assert replies[CEL] and replies[TID], command  # nothing empty compared
            assert shape(replies[TID]) == shape(replies[CEL]), command
            if command == "registered":
                assert replies[TID] == replies[CEL]
        conf = celery_json(env, "inspect", "conf")
        common = set(conf[CEL]) & set(conf[TID])
        assert {"broker_url", "task_default_queue", "event_exchange"} <= common
        assert {k: shape(conf[TID][k]) for k in common} == \
            {k: shape(conf[CEL][k]) for k in common}
        for args in (["rate_limit", "interop.add", "5/s"], ["rate_limit", "interop.add", "x"],
                     ["time_limit", "interop.add", "1", "2"], ["time_limit", "no.such", "1"],
                     ["pool_grow", "1"], ["pool_shrink", "1"], ["autoscale", "3", "1"]):
            replies = {node: reply for r in celery_json(env, "control", *args)
                       for node, reply in r.items()}
            assert set(replies) == {CEL, TID}, args
            assert shape(replies[TID]) == shape(replies[CEL]), (args, replies)
            assert list(replies[TID]) == list(replies[CEL]), (args, replies)  # ok or error
        # shutdown: neither replies, both stop
        for node, proc in ((CEL, celery), (TID, tidings.proc)):
            out = subprocess.run(celery_cmd("control", "shutdown", "-d", node), env=env,
                                 cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert out.returncode == 69 and "No nodes replied" in out.stderr, out
            assert proc.wait(60) == 0, node


def test_tidings_inspect_and_control_on_a_celery_worker(amqp_url, tmp_path):
    with two_workers(amqp_url, tmp_path) as (c, env, celery, _):
        out = run(["-b", amqp_url, "inspect", "stats", "-d", CEL, "--json", "-t", "5"], env)
        assert out.returncode == 0, out.stderr
        stats = json.loads(out.stdout)[CEL]
        assert stats["pool"]["implementation"] == "celery.concurrency.prefork:TaskPool"
        out = run(["-b", amqp_url, "inspect", "registered", "-d", CEL, "-t", "5"], env)
        assert f"->  {CEL}: OK\n    * interop.add\n" in out.stdout
        out = run(["-b", amqp_url, "inspect", "active_queues", "-t", "5", "--json"], env)
        queues = json.loads(out.stdout)
        assert [q["name"] for q in queues[CEL]] == [c.queue + "-cel"]
        assert [q["name"] for q in queues[TID]] == [c.queue + "-tid"]
        out = run(["-b", amqp_url, "control", "rate_limit", "interop.add", "5/s", "-d", CEL,
                   "-t", "5"], env)
        assert f"->  {CEL}: OK\n        new rate limit set successfully" in out.stdout
        out = run(["-b", amqp_url, "control", "shutdown", "-d", CEL], env)
        assert out.returncode == 0 and celery.wait(60) == 0


def test_flower_lists_a_tidings_worker_with_pool_queues_tasks_and_conf(amqp_url, tmp_path):
    with cluster(amqp_url, tmp_path) as c:
        env = dict(interop_env(c), FLOWER_UNAUTHENTICATED_API="true")
        c.worker("-E", "-P", "prefork", "-c", "3", name=TID, app="tests.interop.tidings_app")
        port = free_port()
        log = (tmp_path / "flower.log").open("w")
        flower = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.interop.celery_app", "flower",
             "--address=127.0.0.1", f"--port={port}", "--inspect_timeout=5000"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/api/workers?refresh=1"

            def workers() -> dict:
                try:
                    with urllib.request.urlopen(url, timeout=20) as response:
                        return json.loads(response.read())
                except OSError:
                    return {}

            assert wait_for(lambda: TID in workers(), 60), (tmp_path / "flower.log").read_text()
            info = workers()[TID]
            assert info["stats"]["pool"]["max-concurrency"] == 3
            assert len(info["stats"]["pool"]["processes"]) == 3
            assert [q["name"] for q in info["active_queues"]] == [c.queue]
            assert "interop.sleep" in info["registered"]
            assert info["conf"]["task_default_queue"] == c.queue
            assert info["timestamp"] > time.time() - 120
        finally:
            flower.terminate()
            flower.wait(30)
            log.close()
