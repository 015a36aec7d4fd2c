"""Inspect and control commands on real Tidings workers, and the limits they change."""

from __future__ import annotations

import itertools
import json
import os
import time

import pytest

from tests.cli.helpers import run
from tests.worker.helpers import NO_REPLY, cluster, delete_queue, inspect, wait_for
from tidings.protocol.control import COMMANDS

pytestmark = pytest.mark.broker

POOLS = ["solo", "threads", "prefork"]


def started(c: cluster, task_id: str) -> float:
    return c.capture.wait("task-started", task_id)[0]["timestamp"]


@pytest.mark.parametrize("pool", POOLS)
def test_every_inspect_command_on_each_pool(pool, amqp_url, tmp_path):
    """A solo worker runs tasks in its own thread and answers between them (as Celery's),
    so only the threads and prefork workers are asked while tasks run."""
    with cluster(amqp_url, tmp_path) as c:
        c.worker("-E", "-P", pool, "-c", "2")
        slots = 0 if pool == "solo" else 2
        running = [c.proj.sleep.delay(2.0) for _ in range(slots)]
        waiting = c.proj.add.delay(1, 2) if slots else None
        later = c.proj.add.apply_async((3, 4), countdown=60)
        for r in running:
            c.capture.wait("task-started", r.id)
        c.capture.wait("task-received", later.id)
        if waiting is not None:
            c.capture.wait("task-received", waiting.id)

        stats = inspect(c, "stats")
        assert stats["pid"] != os.getpid() and isinstance(stats["uptime"], int)
        assert stats["total"] == ({"proj.sleep": slots} if slots else {})
        assert int(stats["clock"]) > 0 and stats["broker"]["transport"] == "amqp"
        assert "password" not in stats["broker"] and stats["rusage"]["maxrss"] > 0
        assert stats["pool"]["max-concurrency"] == max(slots, 1)
        assert stats["prefetch_count"] == max(slots, 1) * 4 + 1  # +1: the ETA task held
        if pool == "prefork":
            assert len(stats["pool"]["processes"]) == 2
            assert stats["pool"]["writes"]["total"] == 2

        active = inspect(c, "active")
        assert sorted(t["id"] for t in active) == sorted(r.id for r in running)
        if running:
            one = active[0]
            assert one["name"] == "proj.sleep" and one["args"] == [2.0]
            assert one["acknowledged"] is True and one["hostname"] == "w1@test"
            assert one["time_start"] > time.time() - 60
            assert one["delivery_info"]["routing_key"] == c.queue
            if pool == "prefork":
                assert one["worker_pid"] in stats["pool"]["processes"]
            assert inspect(c, "active", safe=True)[0]["args"] == "(2.0,)"
            reserved = inspect(c, "reserved")
            assert [t["id"] for t in reserved] == [waiting.id]
            assert reserved[0]["acknowledged"] is False and reserved[0]["time_start"] is None
        else:
            assert inspect(c, "reserved") == []
        scheduled = inspect(c, "scheduled")
        assert [s["request"]["id"] for s in scheduled] == [later.id]
        assert scheduled[0]["eta"].startswith(time.strftime("%Y-", time.gmtime()))

        ids = [r.id for r in running] + ([waiting.id] if waiting else []) + [later.id]
        query = inspect(c, "query_task", ids=[*ids, "nope"])
        expected = {later.id: "scheduled"}
        if running:
            expected.update({running[0].id: "active", running[1].id: "active",
                             waiting.id: "reserved"})
        assert {k: v[0] for k, v in query.items()} == expected

        assert inspect(c, "revoke", task_id=later.id) == {
            "ok": f"tasks {{{later.id!r}}} flagged as revoked"}
        assert inspect(c, "revoked") == [later.id]
        registered = inspect(c, "registered")
        assert "proj.add" in registered and "proj.limited [rate_limit=5/s]" in registered
        assert "proj.cleanup_on_soft_limit [soft_time_limit=0.5]" in inspect(
            c, "registered", taskinfoitems=["soft_time_limit", "_private"])
        queues = inspect(c, "active_queues")
        assert [q["name"] for q in queues] == [c.queue]
        assert queues[0]["exchange"]["type"] == "direct" and queues[0]["durable"] is True
        conf = inspect(c, "conf")
        assert conf["task_default_queue"] == c.queue and "accept_content" not in conf
        full = inspect(c, "conf", with_defaults=True)
        assert full["accept_content"] == ["json"]
        assert inspect(c, "report")["ok"].lstrip().startswith("software -> tidings:")
        assert inspect(c, "ping") == {"ok": "pong"}
        assert inspect(c, "clock")["clock"] > 0
        hello = inspect(c, "hello", from_node="other@test", revoked=["r1"])
        assert hello["revoked"] == [later.id, "r1"] and hello["clock"] > 0
        assert inspect(c, "dump_tasks") == registered  # Celery's alias


def test_every_command_of_the_table_is_answered(broker_url, tmp_path):
    """No command of the protocol table gets kombu's "unknown command" reply."""
    with cluster(broker_url, tmp_path) as c:
        c.worker("-P", "threads", "-c", "2")
        for name in COMMANDS:
            if name in ("shutdown", "hello"):
                continue
            reply = inspect(c, name)
            assert reply != NO_REPLY, name
            assert not (isinstance(reply, dict)
                        and "KeyError" in str(reply.get("error", ""))), (name, reply)
        assert inspect(c, "shutdown", timeout=1.0) == NO_REPLY  # Celery's: no reply


def test_bad_commands_and_arguments_get_error_replies(amqp_url, tmp_path):
    with cluster(amqp_url, tmp_path) as c:
        c.worker("-E", "-P", "threads", "-c", "2")
        cases = [
            ("no_such_command", {}, "KeyError('no_such_command')"),
            ("rate_limit", {"task_name": "proj.add", "rate_limit": "fast"},
             "Invalid rate limit string"),
            ("rate_limit", {"task_name": "no.such", "rate_limit": "1/s"}, "unknown task"),
            ("rate_limit", {"task_name": 5}, "unknown task"),
            ("time_limit", {"task_name": "proj.add", "soft": "soon"}, "Invalid time limit"),
            ("time_limit", {"task_name": "no.such", "soft": 1}, "unknown task"),
            ("pool_grow", {"n": "x"}, "positive integer"),
            ("pool_shrink", {"n": -2}, "positive integer"),
            ("autoscale", {"max": 2}, "Autoscale not enabled"),
            ("pool_restart", {}, "Pool restarts not enabled"),
            ("add_consumer", {"queue": ["a list"]}, "needs a queue name"),
            ("revoke", {"task_id": "x", "terminate": True, "signal": "SIGNOPE"},
             "unknown signal"),
            ("stats", {"unexpected": object.__name__}, None),  # extra arguments are ignored
        ]
        for command, arguments, expected in cases:
            reply = inspect(c, command, **arguments)
            if expected is None:
                assert "pid" in reply, (command, reply)
            else:
                assert expected in reply["error"], (command, reply)
        assert inspect(c, "ping") == {"ok": "pong"}
        done = c.proj.add.delay(2, 2)  # and the worker still works
        assert c.capture.wait("task-succeeded", done.id)[0]["result"] == "4"
        assert inspect(c, "stats")["total"] == {"proj.add": 1}


@pytest.mark.parametrize("pool", POOLS)
def test_soft_time_limits_raise_inside_the_task(pool, amqp_url, tmp_path):
    with cluster(amqp_url, tmp_path) as c:
        c.worker("-E", "-P", pool, "-c", "2")
        caught = c.proj.cleanup_on_soft_limit.delay(5)      # the task's own soft limit
        uncaught = c.proj.busy.apply_async((5,), soft_time_limit=0.5)  # apply_async's
        succeeded = c.capture.wait("task-succeeded", caught.id)[0]
        assert succeeded["result"] == "'cleaned up'"
        assert 0.4 < succeeded["runtime"] < 3
        failed = c.capture.wait("task-failed", uncaught.id)[0]
        assert failed["exception"] == "SoftTimeLimitExceeded()"
        celerys = c.proj.cleanup_on_soft_limit.delay(5, celerys_class=True)
        assert c.capture.wait("task-succeeded", celerys.id)[0]["result"] == \
            '"caught Celery\'s class"'
        # the control command sets both limits for a task name
        assert inspect(c, "time_limit", task_name="proj.busy", soft=0.3, hard=None) == {
            "ok": "time limits set successfully"}
        third = c.proj.busy.delay(5)
        assert c.capture.wait("task-failed", third.id)[0]["exception"] == \
            "SoftTimeLimitExceeded()"
        quick = c.proj.busy.delay(0.05)  # under the limit: untouched
        assert c.capture.wait("task-succeeded", quick.id)[0]["result"] == "0.05"


def test_hard_time_limit_kills_the_child_and_the_pool_recovers(amqp_url, tmp_path):
    with cluster(amqp_url, tmp_path) as c:
        c.worker("-E", "-P", "prefork", "-c", "2")
        before = inspect(c, "stats")["pool"]["processes"]
        stuck = c.proj.sleep.apply_async((30,), time_limit=1.0)
        started_at = started(c, stuck.id)
        failed = c.capture.wait("task-failed", stuck.id, timeout=15)[0]
        assert failed["exception"] == "TimeLimitExceeded(1.0)"
        assert 0.9 < failed["timestamp"] - started_at < 5
        after = inspect(c, "stats")["pool"]["processes"]
        assert len(after) == 2 and after != before
        # a soft limit below the hard one still comes first
        assert inspect(c, "time_limit", task_name="proj.sleep", soft=0.5, hard=2) == {
            "ok": "time limits set successfully"}
        soft = c.proj.sleep.delay(30)
        assert c.capture.wait("task-failed", soft.id)[0]["exception"] == \
            "SoftTimeLimitExceeded()"
        fine = [c.proj.add.delay(i, i) for i in range(4)]
        for r in fine:
            assert c.capture.wait("task-succeeded", r.id)


def test_rate_limits_space_out_tasks_without_blocking_others(amqp_url, tmp_path):
    with cluster(amqp_url, tmp_path) as c:
        c.worker("-E", "-P", "threads", "-c", "4", "--prefetch-multiplier", "1")
        limited = [c.proj.limited.delay(i) for i in range(10)]   # rate_limit="5/s"
        others = [c.proj.add.delay(i, i) for i in range(10)]
        times = sorted(started(c, r.id) for r in limited)
        for r in others:
            assert c.capture.wait("task-succeeded", r.id)
        span = times[-1] - times[0]
        assert 1.6 < span < 3.5, span   # 10 starts at 5/s: about 9/5 s
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) > 0.1, gaps     # never a burst
        others_done = max(c.capture.wait("task-succeeded", r.id)[0]["timestamp"]
                          for r in others)
        assert others_done < times[-1]   # the other tasks did not wait in the line
        # changed at run time: off, then 2/s
        assert inspect(c, "rate_limit", task_name="proj.limited", rate_limit=None) == {
            "ok": "rate limit disabled successfully"}
        free = [c.proj.limited.delay(i) for i in range(10)]
        times = sorted(started(c, r.id) for r in free)
        assert times[-1] - times[0] < 1.0
        assert inspect(c, "rate_limit", task_name="proj.add", rate_limit="2/s") == {
            "ok": "new rate limit set successfully"}
        slow = [c.proj.add.delay(i, 0) for i in range(3)]
        times = sorted(started(c, r.id) for r in slow)
        assert times[-1] - times[0] > 0.8


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_pool_grow_shrink_and_restart(pool, amqp_url, tmp_path):
    with cluster(amqp_url, tmp_path) as c:
        c.worker("-E", "-P", pool, "-c", "2", env={"TIDINGS_WORKER_POOL_RESTARTS": "1"})

        def size() -> int:
            return inspect(c, "stats")["pool"]["max-concurrency"]

        def prefetch() -> int:
            return inspect(c, "stats")["prefetch_count"]

        assert inspect(c, "pool_grow", n=2) == {"ok": "pool will grow"}
        assert size() == 4 and prefetch() == 16
        running = [c.proj.sleep.delay(1.5) for _ in range(4)]
        for r in running:
            c.capture.wait("task-started", r.id)  # four at once: the new slots work
        assert inspect(c, "pool_shrink", n=3) == {"ok": "pool will shrink"}
        assert size() == 1 and prefetch() == 4
        for r in running:  # shrinking stopped no running task
            assert c.capture.wait("task-succeeded", r.id)
        if pool == "prefork":
            assert wait_for(lambda: len(inspect(c, "stats")["pool"]["processes"]) == 1, 10)
            before = inspect(c, "stats")["pool"]["processes"]
            assert inspect(c, "pool_restart", modules=["tests.worker.proj", "json"],
                           reload=True) == {"ok": "reload started"}
            assert wait_for(lambda: inspect(c, "stats")["pool"]["processes"] != before, 10)
        else:
            assert inspect(c, "stats")["pool"]["threads"] == 1
        done = c.proj.add.delay(1, 1)
        assert c.capture.wait("task-succeeded", done.id)
        assert inspect(c, "pool_shrink") == {
            "error": "ValueError('the pool cannot shrink below one "
                     + ("process')" if pool == "prefork" else "thread')")}


def test_autoscale_grows_with_the_load(amqp_url, tmp_path):
    with cluster(amqp_url, tmp_path) as c:
        c.worker("-E", "-P", "threads", "--autoscale", "3,1")
        assert inspect(c, "stats")["autoscaler"] == {"max": 3, "min": 1, "current": 1,
                                                     "qty": 0}
        running = [c.proj.sleep.delay(2) for _ in range(3)]
        for r in running:
            c.capture.wait("task-started", r.id, timeout=10)
        assert inspect(c, "stats")["pool"]["max-concurrency"] == 3
        assert inspect(c, "pool_grow") == {
            "error": "pool_grow is not supported with autoscale. Adjust autoscale range "
                     "instead."}
        assert inspect(c, "autoscale", max=5, min=2) == {"ok": "autoscale now max=5 min=2"}
        assert inspect(c, "autoscale", max=1, min=2)["error"].startswith("ValueError(")


def test_add_and_cancel_consumer(broker_url, tmp_path):
    with cluster(broker_url, tmp_path) as c:
        c.worker("-E", "-P", "threads", "-c", "2")
        extra = c.queue + "-extra"
        try:
            assert inspect(c, "add_consumer", queue=extra) == {"ok": f"add consumer {extra}"}
            assert inspect(c, "add_consumer", queue=extra) == {
                "ok": f"already consuming from {extra!r}"}
            assert [q["name"] for q in inspect(c, "active_queues")] == [c.queue, extra]
            there = c.proj.add.apply_async((5, 5), queue=extra)
            assert c.capture.wait("task-succeeded", there.id)[0]["result"] == "10"
            assert inspect(c, "cancel_consumer", queue=extra) == {
                "ok": f"no longer consuming from {extra}"}
            assert [q["name"] for q in inspect(c, "active_queues")] == [c.queue]
            ignored = c.proj.add.apply_async((6, 6), queue=extra)
            time.sleep(1.5)
            assert not c.capture.of("task-received", ignored.id)
            assert inspect(c, "cancel_consumer", queue=extra) == {
                "ok": f"was not consuming from {extra}"}
        finally:
            delete_queue(broker_url, extra)


def test_shutdown_command_finishes_the_running_task(amqp_url, tmp_path):
    with cluster(amqp_url, tmp_path) as c:
        w = c.worker("-E", "-P", "prefork", "-c", "2")
        slow = c.proj.sleep.delay(1.0)
        c.capture.wait("task-started", slow.id)
        out = run(["-b", amqp_url, "control", "shutdown", "-d", "w1@test"], c.env)
        assert out.returncode == 0, out.stderr
        assert "Shutdown sent to w1@test (workers do not reply to it)." in out.stdout
        assert w.proc.wait(30) == 0
        assert c.capture.wait("task-succeeded", slow.id)
        assert c.capture.wait("worker-offline")
        assert "Got shutdown from remote" in w.log


def test_inspect_and_control_command_lines(amqp_url, tmp_path):
    with cluster(amqp_url, tmp_path) as c:
        c.worker("-E", "-P", "threads", "-c", "2")
        out = run(["-b", amqp_url, "inspect", "registered", "-t", "5"], c.env)
        assert out.returncode == 0, out.stderr
        assert "->  w1@test: OK\n    * proj.add\n" in out.stdout
        assert out.stdout.endswith("\n\n1 node online.\n")
        out = run(["-b", amqp_url, "inspect", "stats", "--json"], c.env)
        assert json.loads(out.stdout)["w1@test"]["pool"]["max-concurrency"] == 2
        out = run(["-b", amqp_url, "control", "rate_limit", "proj.add", "10/m"], c.env)
        assert "->  w1@test: OK\n        new rate limit set successfully" in out.stdout
        out = run(["-b", amqp_url, "control", "--json", "pool_grow", "1"], c.env)
        assert json.loads(out.stdout) == [{"w1@test": {"ok": "pool will grow"}}]
        out = run(["-b", amqp_url, "inspect", "query_task", "a", "b"], c.env)
        assert "->  w1@test: OK\n    {}" in out.stdout
        out = run(["-b", amqp_url, "control", "time_limit", "no.such", "1"], c.env)
        assert "->  w1@test: ERROR\n        unknown task" in out.stdout
        out = run(["inspect", "--list"], c.env)
        assert "registered [attr1 [attr2 [... [attrN]]]]" in out.stdout
        assert "hello" not in out.stdout
        for args, message in [
            (["inspect", "pool_grow"], "no inspect command 'pool_grow'"),
            (["control", "pool_grow", "many"], "pool_grow: bad value for n: 'many'"),
            (["control", "cancel_consumer", "a", "b"], "cancel_consumer takes arguments"),
            (["control", "revoke"], "revoke needs at least one task id"),
            (["control", "ping", "--terminate"], "options of revoke only"),
        ]:
            out = run(["-b", amqp_url, *args], c.env)
            assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
