"""RabbitMQ receivers that take their messages directly (transport/buffered.py).

kombu's path is the oracle, as for Redis envelopes: a receiver on a plain
kombu connection and one on ``App.connection_for_read()`` read the same
messages and must end with the same events, skipped input and losses; only
the second takes them as ``(properties, body)``.  Then the pieces: the
property decoder against py-amqp's, and a consumer that stops being one.
"""

from __future__ import annotations

import struct
import threading
import time

import pytest
from amqp.basic_message import Message as AmqpMessage
from amqp.serialization import decode_properties_basic
from hypothesis import given
from hypothesis import strategies as st
from kombu import Connection, Consumer, Producer, Queue

from tests.conftest import cleanup_broker, make_app
from tests.unit.direct_input import publish_everything
from tests.unit.test_redis_read import Reader, _publish_events, _task_event, _wait
from tidings.transport.buffered import _read_properties


@pytest.fixture
def app(amqp_url):
    app, declared = make_app(amqp_url)
    yield app
    cleanup_broker(amqp_url, declared)


def test_direct_deliveries_give_what_kombus_path_gives(app, amqp_url):
    fast_conn = app.connection_for_read()
    with Reader(app, fast_conn, direct="_on_delivery") as fast, \
            Reader(app, Connection(amqp_url), direct="_on_delivery") as plain:
        expected, messages = publish_everything(app, amqp_url)
        deadline = time.monotonic() + 15
        while (min(len(fast.events), len(plain.events)) < expected
               and time.monotonic() < deadline):
            time.sleep(0.05)
        time.sleep(0.3)  # and nothing more comes
    assert len(plain.events) == expected
    assert fast.seen() == plain.seen()
    assert fast.recv.errors == plain.recv.errors
    assert set(plain.recv.errors) >= {"not-json", "content-disallowed", "not-an-object"}
    assert fast.recv.lost == plain.recv.lost and sum(plain.recv.lost.values()) == 4
    assert plain.envelopes == 0 and fast.envelopes == messages


_HEADER_VALUES = st.one_of(
    st.text(max_size=40), st.integers(-2**63, 2**63 - 1), st.booleans(), st.none(),
    st.floats(allow_nan=False),
    st.dictionaries(st.text(max_size=5), st.integers(-2**31, 2**31 - 1), max_size=2),
    st.lists(st.integers(-5, 5), max_size=3))


@given(headers=st.one_of(st.none(), st.dictionaries(st.text(max_size=20), _HEADER_VALUES,
                                                     max_size=5)),
       content_type=st.sampled_from([None, "application/json", "text/plain"]),
       content_encoding=st.sampled_from([None, "utf-8", "binary"]),
       extra=st.sampled_from([{}, {"delivery_mode": 2, "priority": 0},
                              {"correlation_id": "c", "reply_to": "r"}]))
def test_properties_read_as_py_amqp_reads_them(headers, content_type, content_encoding,
                                               extra):
    message = AmqpMessage(b"", content_type=content_type, content_encoding=content_encoding,
                          application_headers=headers, **extra)
    payload = struct.pack(">HHQ", 60, 0, 0) + message._serialize_properties()
    expected = decode_properties_basic(payload, 12)[0]
    got = _read_properties(payload)
    assert got == {k: v for k, v in expected.items() if k in got}
    assert {"content_type", "content_encoding", "application_headers"} & set(expected) \
        <= set(got)


def test_a_cancelled_consumer_is_delivered_the_usual_way_again(app, amqp_url):
    with app.connection_for_read() as conn:
        channel = conn.channel()
        queue = Queue(f"direct-{time.monotonic_ns()}", channel=channel)
        queue.declare()
        try:
            _consume_cancel_consume(app, conn, channel, queue)
        finally:
            queue.delete()


def _consume_cancel_consume(app, conn, channel, queue) -> None:
    """A direct consumer, cancelled, then a kombu consumer again on the same channel."""
    got: list = []
    consumer = Consumer(channel, [queue], no_ack=True,
                        callbacks=[lambda body, m: got.append(body)], accept=["json"])
    consumer.consume()
    taken: list = []
    assert channel.consume_deliveries(queue.name, lambda p, b: taken.append(b))
    assert not channel.consume_deliveries("nobody-reads-this", taken.append)
    with app.connection_for_write() as w:
        Producer(w.default_channel).publish({"n": 1}, routing_key=queue.name,
                                            serializer="json")
    conn.drain_events(timeout=5)
    assert taken == [b'{"n": 1}'] and got == []
    consumer.cancel()
    tag = next(iter(channel.direct))
    assert channel.direct_callback(tag) is None and not channel.direct
    consumer.consume()  # a new consumer, read by kombu
    with app.connection_for_write() as w:
        Producer(w.default_channel).publish({"n": 2}, routing_key=queue.name,
                                            serializer="json")
    conn.drain_events(timeout=5)
    assert got == [{"n": 2}] and taken == [b'{"n": 1}']


def _held_capture(app, limit):
    """A receiver capturing in a thread (``limit`` drains), held in its first event
    until released; returns (events, drains, release, thread, receiver)."""
    from tidings.events import EventReceiver

    events: list[dict] = []
    drains: list[int] = []  # events handled by the end of each drain
    release, ready = threading.Event(), threading.Event()

    def handle(event):
        if event["uuid"] == "task-0":
            release.wait(10)  # the rest are read meanwhile
        events.append(event)

    recv = EventReceiver(app.connection_for_read(), app=app, handlers={"*": handle})
    on_ready = recv.on_consume_ready
    recv.on_consume_ready = lambda *a, **k: (on_ready(*a, **k), ready.set())

    def run():
        for _ in recv.itercapture(limit=limit, wakeup=False):
            drains.append(len(events))
            if recv.should_stop:
                break

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(15)
    return events, drains, release, thread, recv


def test_without_a_limit_a_drain_takes_every_message_already_read(app):
    events, drains, release, thread, recv = _held_capture(app, None)
    _publish_events(app, [_task_event(n) for n in range(200)])
    time.sleep(0.5)
    release.set()
    assert _wait(lambda: len(events) == 200), len(events)
    recv.should_stop = True
    thread.join(10)
    assert [e["uuid"] for e in events] == [f"task-{n}" for n in range(200)]
    assert len(drains) < 50, drains  # most of the 199 held back came in a few drains


def test_with_a_limit_a_drain_takes_one_message(app):
    """``capture(limit=N)`` counts drains, as Celery's does: one message each.  (The
    consumer's cancel at the end hands it what the broker sent meanwhile, as kombu's
    path does: ``events`` may hold more than five.)"""
    events, drains, release, thread, _ = _held_capture(app, 5)
    _publish_events(app, [_task_event(n) for n in range(20)])
    time.sleep(0.5)
    release.set()
    thread.join(10)
    assert not thread.is_alive()
    assert drains == [1, 2, 3, 4, 5], drains
    assert [e["uuid"] for e in events[:5]] == [f"task-{n}" for n in range(5)]
