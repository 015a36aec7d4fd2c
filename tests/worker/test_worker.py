"""A real ``tidings worker`` process on RabbitMQ and Redis: events, control, shutdown."""

from __future__ import annotations

import itertools
import json
import os
import time

import pytest
from kombu import Producer

from tests.cli.helpers import run
from tests.worker.helpers import cluster, delete_queue, wait_for
from tidings.protocol.events import EVENT_TYPES
from tidings.protocol.loss import DROPPED_FIELD

pytestmark = pytest.mark.broker

ENVELOPE = {"hostname", "utcoffset", "pid", "clock", "timestamp", "type", "local_received"}


def fields_of(event: dict) -> set[str]:
    return set(event) - ENVELOPE


def test_every_event_type_with_celerys_fields(broker_url, tmp_path):
    with cluster(broker_url, tmp_path) as c:
        w = c.worker("-E", "-P", "prefork", "-c", "2")
        p = c.proj
        ok = p.add.delay(2, 3)
        bad = p.fail.delay(7)
        retried = p.retry_once.delay(21)
        rejected = p.reject_me.delay("malformed")
        parent = p.spawn.delay(1)
        later = p.add.apply_async((1, 1), countdown=3)
        stale = p.add.apply_async((5, 5), countdown=2, expires=1)
        long = p.sleep.delay(30)
        ev = c.capture
        assert ev.wait("task-received", later.id)
        p.app.control.revoke(later.id)
        assert ev.wait("task-started", long.id)
        replies = p.app.control.revoke(long.id, terminate=True, reply=True, timeout=5)
        assert replies == [{"w1@test": {"ok": f"terminate: {long.id}"}}]
        for uuid in (later.id, stale.id, long.id):
            assert ev.wait("task-revoked", uuid, timeout=20), uuid
        assert ev.wait("task-succeeded", retried.id)
        assert ev.wait("task-succeeded", parent.id)
        assert ev.wait("task-rejected", rejected.id)
        assert ev.wait("task-succeeded", count=4)  # add, retry_once, spawn x2

        received = ev.of("task-received", ok.id)[0]
        assert fields_of(received) == set(EVENT_TYPES["task-received"].fields)
        assert (received["name"], received["args"], received["kwargs"]) == \
            ("proj.add", "(2, 3)", "{}")
        assert received["hostname"] == "w1@test"
        assert fields_of(ev.of("task-started", ok.id)[0]) == {"uuid"}
        done = ev.of("task-succeeded", ok.id)[0]
        assert fields_of(done) == {"uuid", "result", "runtime"} and done["result"] == "5"
        failed = ev.of("task-failed", bad.id)[0]
        assert failed["exception"] == "ValueError('intentional failure for x=7')"
        assert "Traceback (most recent call last)" in failed["traceback"]
        assert 'raise ValueError(f"intentional failure' in failed["traceback"]
        retry = ev.of("task-retried", retried.id)[0]
        assert retry["exception"] == "RuntimeError('transient error, will retry')"
        assert [e["retries"] for e in ev.of("task-received", retried.id)] == [0, 1]
        assert ev.of("task-succeeded", retried.id)[0]["result"] == "42"
        assert ev.of("task-rejected", rejected.id)[0]["requeue"] is False
        assert "reject requeue=False: malformed" in \
            ev.of("task-failed", rejected.id)[0]["exception"]
        terminated = ev.of("task-revoked", long.id)[0]
        assert (terminated["terminated"], terminated["signum"], terminated["expired"]) == \
            (True, 15, False)
        assert ev.of("task-revoked", later.id)[0]["expired"] is False
        expired = ev.of("task-revoked", stale.id)[0]
        assert expired["expired"] is True and not ev.of("task-started", stale.id)
        children = [e for e in ev.of("task-received") if e.get("parent_id") == parent.id]
        assert len(children) == 1 and children[0]["root_id"] == parent.id
        sent = ev.of("task-sent", ok.id)[0]
        assert fields_of(sent) == set(EVENT_TYPES["task-sent"].fields)

        online = ev.of("worker-online")[0]
        # Celery's fields, and ours: the events the worker dropped itself (loss.md)
        assert fields_of(online) == {*EVENT_TYPES["worker-online"].fields, DROPPED_FIELD}
        assert online["sw_ident"] == "py-tidings" and online["freq"] == 2.0
        assert online[DROPPED_FIELD] == 0
        assert w.stop() == 0
        assert ev.wait("worker-offline", timeout=10)
        offline = ev.of("worker-offline")[0]
        assert offline["processed"] == 8 and offline["active"] == 0  # 2 never started


def test_unknown_task_and_bad_messages_do_not_stop_the_worker(amqp_url, tmp_path):
    with cluster(amqp_url, tmp_path) as c:
        w = c.worker("-E", "-P", "threads", "-c", "2")
        ghost = c.app.send_task("proj.not_there", (1,))
        conn = c.proj.app.connection_for_write()
        producer = Producer(conn)
        producer.publish(b"{not json", routing_key=c.queue, exchange="",
                         content_type="application/json", content_encoding="utf-8",
                         headers={"task": "proj.add", "id": "broken-1"})
        producer.publish({"no": "task"}, routing_key=c.queue, exchange="",
                         serializer="json")
        producer.publish([1, 2], routing_key=c.queue, exchange="", serializer="json",
                         headers={"task": "proj.add", "id": "broken-2"})
        conn.release()
        after = c.proj.add.delay(20, 22)
        assert c.capture.wait("task-succeeded", after.id)
        failed = c.capture.wait("task-failed", ghost.id)
        assert failed[0]["exception"] == "NotRegistered('proj.not_there')"
        assert not c.capture.of("task-received", ghost.id)
        assert w.proc.poll() is None
        log = w.log
        assert "unregistered task 'proj.not_there'" in log
        assert "cannot be decoded" in log
        assert log.count("Rejected an invalid task message") == 2


def test_heartbeat_cadence_and_batching_within_100ms(amqp_url, tmp_path):
    with cluster(amqp_url, tmp_path) as c:
        c.worker("-E", "-P", "solo", "--heartbeat-interval", "0.5")
        for i in range(20):
            c.proj.add.delay(i, i)
        assert c.capture.wait("task-succeeded", count=20)
        # Four beats take about 2 s after the worker is up; waiting for them
        # (not sleeping a fixed 2 s) keeps a beat still in flight from
        # failing the count, while the gaps below still check the cadence.
        beats = [e["timestamp"] for e in c.capture.wait("worker-heartbeat", count=4,
                                                         timeout=10)]
        gaps = [b - a for a, b in itertools.pairwise(beats)]
        assert len(gaps) >= 3
        assert all(0.4 < g < 0.8 for g in gaps), gaps
        task_events = [e for e in c.capture.events if e["type"].startswith("task-")
                       and e["type"] != "task-sent"]
        delays = [e["local_received"] - e["timestamp"] for e in task_events]
        assert max(delays) < 0.15, max(delays)


def test_task_events_travel_as_task_multi(amqp_url, tmp_path):
    import amqp

    with cluster(amqp_url, tmp_path) as c:
        conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest")
        conn.connect()
        ch = conn.channel()
        ch.exchange_declare(c.app.conf.event_exchange, "topic", durable=True,
                            auto_delete=False)
        queue, _, _ = ch.queue_declare("", exclusive=True)
        ch.queue_bind(queue, c.app.conf.event_exchange, "#")
        c.worker("-E", "-P", "solo")
        c.proj.add.delay(1, 2)
        assert c.capture.wait("task-succeeded")
        keys = []
        while (message := ch.basic_get(queue, no_ack=True)) is not None:
            body = json.loads(message.body)
            keys.append((message.delivery_info["routing_key"], isinstance(body, list)))
        conn.close()
        worker_keys = {k for k in keys if not k[0].startswith("task.sent")}
        assert ("task.multi", True) in worker_keys
        assert all(k[0].startswith("worker.") or k == ("task.multi", True)
                   for k in worker_keys), keys


def test_enable_disable_events_at_runtime(broker_url, tmp_path):
    with cluster(broker_url, tmp_path) as c:
        c.worker("-P", "solo")  # no -E: worker events only
        first = c.proj.add.delay(1, 1)
        time.sleep(1.5)
        assert not c.capture.of("task-received", first.id)
        out = run(["-b", broker_url, "control", "enable_events", "-d", "w1@test"], c.env)
        assert out.returncode == 0 and "->  w1@test: OK\n        task events enabled" in out.stdout
        second = c.proj.add.delay(2, 2)
        assert c.capture.wait("task-succeeded", second.id)
        out = run(["-b", broker_url, "control", "disable_events"], c.env)
        assert "->  w1@test: OK\n        task events disabled" in out.stdout
        third = c.proj.add.delay(3, 3)
        time.sleep(1.5)
        assert not c.capture.of("task-received", third.id)
        beats = len(c.capture.of("worker-heartbeat"))
        assert wait_for(lambda: len(c.capture.of("worker-heartbeat")) > beats, 5)
        out = run(["-b", broker_url, "control", "ping"], c.env)
        assert "->  w1@test: OK\n        pong" in out.stdout and "1 node online." in out.stdout
        out = run(["-b", broker_url, "control", "ping", "-d", "nobody@nowhere",
                   "--timeout", "0.5"], c.env)
        assert out.returncode == 69 and "no reply within 0.5s from nobody@nowhere" in out.stderr


def test_disable_events_really_disables_a_worker_started_with_E(amqp_url, tmp_path):
    with cluster(amqp_url, tmp_path) as c:
        c.worker("-E", "-P", "solo")
        out = run(["-b", amqp_url, "control", "disable_events"], c.env)
        assert "task events disabled" in out.stdout
        task = c.proj.add.delay(1, 1)
        time.sleep(1.5)
        assert not c.capture.of("task-received", task.id)
        out = run(["-b", amqp_url, "control", "heartbeat"], c.env)
        assert out.returncode == 0 and "->  w1@test: OK" in out.stdout


def test_warm_shutdown_finishes_running_tasks_and_loses_nothing(broker_url, tmp_path):
    with cluster(broker_url, tmp_path) as c:
        w = c.worker("-E", "-P", "prefork", "-c", "2", "--prefetch-multiplier", "4")
        slow = [c.proj.sleep.delay(1.0) for _ in range(2)]
        queued = [c.proj.add.delay(i, 1) for i in range(10)]
        assert c.capture.wait("task-started", count=2)
        assert w.stop() == 0
        assert c.capture.wait("worker-offline", timeout=10)
        for task in slow:  # running tasks were finished, not killed
            assert c.capture.of("task-succeeded", task.id)
        done_by_first = {e["uuid"] for e in c.capture.of("task-succeeded")}
        assert len(done_by_first & {t.id for t in queued}) < len(queued)  # some were left
        c.worker("-E", "-P", "solo", name="w2@test")

        def all_done():
            return {t.id for t in queued} <= {e["uuid"] for e in c.capture.of("task-succeeded")}

        assert wait_for(all_done, 30)  # the unstarted ones went back to the queue


def test_second_signal_stops_at_once(amqp_url, tmp_path):
    import signal as sig

    with cluster(amqp_url, tmp_path) as c:
        w = c.worker("-E", "-P", "prefork", "-c", "1")
        long = c.proj.sleep.delay(60)
        assert c.capture.wait("task-started", long.id)
        started = time.monotonic()
        w.proc.send_signal(sig.SIGTERM)
        # the second signal must come after the first was handled (two pending
        # signals of one kind are delivered once)
        assert wait_for(lambda: "Warm shutdown" in w.log, 10), w.log
        w.proc.send_signal(sig.SIGTERM)
        w.proc.wait(20)
        assert time.monotonic() - started < 15


def test_sigusr1_writes_every_stack_and_the_worker_goes_on(amqp_url, tmp_path):
    import signal as sig

    with cluster(amqp_url, tmp_path) as c:
        w = c.worker("-E", "-P", "prefork", "-c", "1")
        long = c.proj.sleep.delay(8)
        assert c.capture.wait("task-started", long.id)
        [child] = w.children()  # the prefork process running the task
        w.proc.send_signal(sig.SIGUSR1)
        # the worker's own thread, in its loop
        assert wait_for(lambda: "_run_consuming" in w.log, 10), w.log
        assert "thread 0x" in w.log and "(most recent call first)" in w.log
        assert "proj.py" not in w.log  # the task runs in the child, not here
        os.kill(child, sig.SIGUSR1)
        # the child's stack: the task, in time.sleep
        assert wait_for(lambda: "proj.py" in w.log, 10), w.log
        assert w.proc.poll() is None
        assert c.capture.wait("task-succeeded", long.id, timeout=20), w.log
        assert c.capture.wait("task-succeeded", c.proj.add.delay(2, 2).id, timeout=20), w.log
        assert w.stop() == 0, w.log


def test_a_worker_stopped_while_it_reconnects_still_says_goodbye(amqp_url, tmp_path):
    """Its queue deleted (``Basic.cancel``), the worker waits a second to reconnect;
    SIGTERM in that second: it stops at once, and still sends ``worker-offline``
    (one quick connection of its own: the broker is there)."""
    with cluster(amqp_url, tmp_path) as c:
        w = c.worker("-E", "-P", "prefork", "-c", "2", "-Q", c.queue + "-gone")
        try:
            delete_queue(amqp_url, c.queue + "-gone")
            assert wait_for(lambda: "reconnecting in 1s" in w.log, 10, interval=0.01), w.log
            started = time.monotonic()
            assert w.stop(timeout=20) == 0, w.log
            assert time.monotonic() - started < 10, w.log
            assert "Warm shutdown" in w.log, w.log
            assert c.capture.wait("worker-offline", timeout=10), w.log
        finally:
            delete_queue(amqp_url, c.queue + "-gone")


def test_a_worker_whose_broker_is_gone_still_stops_on_sigterm(amqp_url, tmp_path):
    """While it waits to reconnect, a worker obeys SIGTERM (it used to retry forever)."""
    import signal as sig

    from tests.cli.proxy import Proxy
    from tests.worker.helpers import WorkerProcess

    proxy = Proxy(5672)
    proxy.start()
    with cluster(amqp_url, tmp_path) as c:
        env = dict(c.env, TIDINGS_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{proxy.port}//")
        w = WorkerProcess(env, tmp_path, "-P", "solo", name="away@test")
        try:
            assert wait_for(lambda: any(e["hostname"] == "away@test"
                                        for e in c.capture.of("worker-online")), 40), w.log
            proxy.cut()
            assert wait_for(lambda: "lost" in w.log, 30), w.log
            time.sleep(3)  # past the first back-off: trying to connect again
            started = time.monotonic()
            w.proc.send_signal(sig.SIGTERM)
            assert w.proc.wait(20) == 0, w.log
            assert time.monotonic() - started < 15
            assert "worker-offline not sent" in w.log, w.log  # said, not silent
        finally:
            w.stop()
            proxy.cut()
