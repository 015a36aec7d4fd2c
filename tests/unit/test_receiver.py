import logging
import time
import uuid

import pytest
from kombu import Connection, Producer

from tidings import App
from tidings.events import EventDispatcher, EventReceiver, State
from tidings.transport import get_exchange


@pytest.fixture
def app():
    return App("t", broker="memory://", event_exchange=f"ev-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def conn():
    with Connection("memory://") as c:
        yield c


def make_receiver(app, conn, **handlers):
    recv = EventReceiver(conn, handlers=handlers or None, app=app)
    # declare the queue now so that what is published next is kept for it
    recv.queue(conn.default_channel).declare()
    return recv


def publish_raw(app, conn, body, content_type="application/json", routing_key="x.y"):
    Producer(conn.default_channel).publish(
        body, exchange=get_exchange(conn, app.conf.event_exchange), routing_key=routing_key,
        content_type=content_type, content_encoding="utf-8",
        declare=[get_exchange(conn, app.conf.event_exchange)])


def good(type_="worker-heartbeat", **fields):
    return {"hostname": "w@h", "utcoffset": 0.0, "pid": 1, "clock": 5, **fields,
            "timestamp": time.time(), "type": type_}


def capture_all(recv, limit=30):
    try:
        recv.capture(limit=limit, timeout=1, wakeup=False)
    except TimeoutError:
        pass


def test_queue_and_exchange_declaration_follow_settings(app, conn):
    recv = EventReceiver(conn, app=app, node_id="n1")
    q = recv.queue
    assert q.name == "celeryev.n1"
    assert q.exchange.name == app.conf.event_exchange and q.routing_key == "#"
    assert q.exclusive and q.auto_delete and not q.durable
    assert (q.message_ttl, q.expires) == (5.0, 60.0)
    r2 = EventReceiver(conn, app=app, queue_prefix="fooq", queue_ttl=1, queue_expires=2)
    assert r2.queue.name.startswith("fooq.")
    assert (r2.queue.message_ttl, r2.queue.expires) == (1, 2)
    from tidings import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="exclusive and durable"):
        EventReceiver(conn, app=app, queue_exclusive=True, queue_durable=True)


def test_star_is_a_fallback_only(app, conn):
    specific, fallback = [], []
    recv = EventReceiver(conn, app=app, handlers={"task-failed": specific.append,
                                                  "*": fallback.append})
    recv._receive([good("task-failed", uuid="a"), good("task-started", uuid="a")], None)
    assert [e["type"] for e in specific] == ["task-failed"]
    assert [e["type"] for e in fallback] == ["task-started"]


def test_clock_rules_and_local_received(app, conn):
    recv = EventReceiver(conn, app=app)
    app.clock.value = 302
    _, ev = recv.event_from_message({"type": "task-sent", "clock": 9999, "uuid": "u"},
                                    now=lambda: 42.0)
    assert ev["clock"] == 301 and ev["local_received"] == 42.0
    _, ev = recv.event_from_message({"type": "worker-online", "clock": 500})
    assert app.clock.value == 501 and ev["clock"] == 500
    _, ev = recv.event_from_message({"type": "worker-online"})
    assert ev["clock"] == 502


def test_timestamps_are_not_shifted_by_time_zones(app, conn):
    recv = EventReceiver(conn, app=app)
    _, ev = recv.event_from_message({"type": "worker-online", "clock": 1, "timestamp": 1.0,
                                     "utcoffset": 8.0})
    assert ev["timestamp"] == 1.0 and ev["utcoffset"] == 8.0


def test_every_kind_of_bad_input_is_counted_logged_once_and_skipped(app, conn, caplog):
    got = []

    def handler(event):
        if event.get("boom"):
            raise RuntimeError("handler bug")
        got.append(event["n"])

    recv = make_receiver(app, conn, **{"*": handler})
    publish_raw(app, conn, b"{not json", content_type="application/json")
    publish_raw(app, conn, b"\x80\x03pickle", content_type="application/x-python-serialize")
    publish_raw(app, conn, b'"a string"')
    publish_raw(app, conn, b"[1, 2]")
    publish_raw(app, conn, b'{"hostname": "h"}')
    publish_raw(app, conn, b'{"type": "worker-heartbeat", "clock": null, "n": -1}')
    publish_raw(app, conn, b'{"type": "worker-heartbeat", "timestamp": "x", "n": -2}')
    publish_raw(app, conn, b'{"type": "worker-heartbeat", "boom": true}')
    publish_raw(app, conn, b'{"type": "worker-heartbeat", "boom": true}')
    batch = [good(n=1), "junk", good(n=2), {"type": "task-started"}, good(n=3)]
    import json

    publish_raw(app, conn, json.dumps(batch).encode(), routing_key="task.multi")
    publish_raw(app, conn, json.dumps(good(n=4)).encode())
    with caplog.at_level(logging.WARNING, logger="tidings.events.receiver"):
        capture_all(recv)
    assert got == [1, 2, 3, 4]
    assert dict(recv.errors) == {
        "not-json": 1, "content-disallowed": 1, "not-an-object": 4, "missing-type": 1,
        "null-clock": 1, "bad-field-type": 1, "handler-error": 2, "missing-field": 1,
    }
    warnings = [r for r in caplog.records if r.name == "tidings.events.receiver"]
    assert len(warnings) == len(recv.errors)  # once per cause


def test_capture_timeout_raises_like_celery(app, conn):
    recv = make_receiver(app, conn)
    with pytest.raises(TimeoutError):
        next(recv.itercapture(timeout=0.0001, wakeup=False))


def test_round_trip_with_state_and_limit(app, conn):
    state = State()
    recv = make_receiver(app, conn, **{"*": state.event})
    d = EventDispatcher(conn, hostname="w1@h", app=app, buffer_group=["task"])
    d.send("worker-online", freq=2.0)
    d.send("task-received", uuid="t1", name="proj.add", args="(1, 2)", kwargs="{}")
    d.send("task-started", uuid="t1")
    d.send("task-succeeded", uuid="t1", result="3", runtime=0.01)
    d.flush()
    recv.capture(limit=2, wakeup=False)
    assert state.tasks["t1"].state == "SUCCESS"
    assert state.tasks["t1"].worker.hostname == "w1@h"
    assert state.workers["w1@h"].alive
    assert recv.event_count == 4
