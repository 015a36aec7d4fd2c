"""RabbitMQ receivers that take their messages directly (transport/buffered.py).

kombu's path is the oracle, as for Redis envelopes: a receiver on a plain
kombu connection and one on ``App.connection_for_read()`` read the same
messages and must end with the same events, skipped input and losses; only
the second takes them as ``(properties, body)``.  Then the pieces: the
property decoder against py-amqp's, and a consumer that stops being one.
"""

from __future__ import annotations

import json
import struct
import time

import pytest
from amqp.basic_message import Message as AmqpMessage
from amqp.serialization import decode_properties_basic
from hypothesis import given
from hypothesis import strategies as st
from kombu import Connection, Consumer, Producer, Queue

from tests.conftest import cleanup_broker, make_app
from tests.unit.test_redis_read import Reader
from tidings.events import EventDispatcher
from tidings.protocol.loss import SENDER_HEADER, SEQUENCE_HEADER
from tidings.transport import get_exchange
from tidings.transport.buffered import _read_properties


@pytest.fixture
def app(amqp_url):
    app, declared = make_app(amqp_url)
    yield app
    cleanup_broker(amqp_url, declared)


def _publish_everything(app, url: str) -> tuple[int, int]:
    """Every kind of input, in order; returns (valid events sent, messages sent)."""
    from celery import Celery

    messages = 0
    with app.connection_for_write() as conn:
        d = EventDispatcher(conn, hostname="ours@it", app=app, buffer_group=["task"],
                            buffer_limit=4)
        d.send("worker-online", freq=2.0, active=0, processed=0)
        for n in range(8):
            d.send("task-received", uuid=f"t{n}", name="proj.add", args="()", kwargs="{}")
        d.flush()
        messages += 1 + 2
        exchange = get_exchange(conn, app.conf.event_exchange)
        producer = Producer(conn.default_channel, exchange=exchange, auto_declare=False)
        for body, content_type, encoding in (
            ("not json", "application/json", "utf-8"),  # not-json
            ("[1, 2]", "application/json", "utf-8"),  # a batch of non-events
            ("hello", "text/plain", "utf-8"),  # not accepted
            (json.dumps({"type": "worker-heartbeat", "hostname": "l1@it", "clock": 3,
                         "timestamp": 1.0}), "application/json", "latin-1"),  # kombu's decoder
        ):
            producer.publish(body, routing_key="worker.heartbeat", content_type=content_type,
                             content_encoding=encoding)
            messages += 1
        for seq in (0, 5):  # a sender that skips four events
            producer.publish(json.dumps({"type": "worker-heartbeat", "hostname": "gap@it",
                                         "clock": 10 + seq, "timestamp": 2.0 + seq}),
                             routing_key="worker.heartbeat", content_type="application/json",
                             content_encoding="utf-8",
                             headers={SENDER_HEADER: "gap@it/1", SEQUENCE_HEADER: seq})
            messages += 1
        # headers py-amqp's decoder reads (a float, a table, a list) and a body of
        # several frames (past the broker's frame_max of 128 KiB)
        big = [{"type": "task-received", "uuid": f"big{n}", "hostname": "big@it",
                "clock": 100 + n, "timestamp": 3.0, "args": "x" * 2000} for n in range(90)]
        producer.publish(json.dumps(big), routing_key="task.multi",
                         content_type="application/json", content_encoding="utf-8",
                         headers={"hostname": "big@it", "ratio": 0.5, "meta": {"a": 1},
                                  "list": [1, "b"]})
        messages += 1
    celery = Celery("interop", broker=url, set_as_current=False)
    celery.conf.event_exchange = app.conf.event_exchange
    with celery.connection_for_write() as conn:
        theirs = celery.events.Dispatcher(conn, hostname="theirs@it")
        theirs.send("worker-heartbeat", freq=2.0, active=0, processed=1)
        theirs.send("task-succeeded", uuid="c1", result="3", runtime=0.01)
        messages += 2
    return 1 + 8 + 1 + 2 + 90 + 2, messages


def test_direct_deliveries_give_what_kombus_path_gives(app, amqp_url):
    fast_conn = app.connection_for_read()
    with Reader(app, fast_conn, direct="_on_delivery") as fast, \
            Reader(app, Connection(amqp_url), direct="_on_delivery") as plain:
        expected, messages = _publish_everything(app, amqp_url)
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
