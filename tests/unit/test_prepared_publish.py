"""RabbitMQ's prepared publishing (transport/publish.py): the same bytes as py-amqp's,
and kombu's path wherever it does not apply."""

from __future__ import annotations

import time
import uuid

import amqp
import pytest
from amqp.serialization import dumps
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu import Connection, Consumer, Exchange, Queue

from tidings import App
from tidings.events import EventDispatcher
from tidings.protocol.loss import SENDER_HEADER, SEQUENCE_HEADER
from tidings.transport import publish_prepared
from tidings.transport.publish import _Template, publish_arguments

names = st.text(min_size=1, max_size=40).filter(lambda s: len(s.encode("utf-8", "surrogatepass"))
                                                <= 255)
values = st.one_of(st.text(max_size=200), st.integers(min_value=-(2**63) + 1,
                                                      max_value=2**63 - 1))


@settings(max_examples=300, deadline=None)
@given(headers=st.dictionaries(names, values, max_size=5), last=names,
       seq=st.integers(min_value=0, max_value=2**63 - 1),
       content_type=st.sampled_from(["application/json", "application/x-yaml", "é/ü"]),
       delivery_mode=st.sampled_from([1, 2]), exchange=names, routing_key=names)
def test_the_frames_are_py_amqps(headers, last, seq, content_type, delivery_mode, exchange,
                                 routing_key):
    headers = {k: v for k, v in headers.items() if k != last}
    message = amqp.Message(b"{}", priority=0, content_type=content_type,
                           content_encoding="utf-8",
                           application_headers={**headers, last: seq},
                           delivery_mode=delivery_mode)
    template = _Template(content_type, "utf-8", tuple(headers.items()), last, delivery_mode)
    assert template.properties(seq) == message._serialize_properties()
    ours = publish_arguments(exchange, routing_key)
    assert ours == dumps("Bssbb", (0, exchange, routing_key, False, False))


class _Producer:
    """What the prepared path reads of a kombu producer."""

    def __init__(self, connection, channel):
        self.connection, self.channel = connection, channel


@pytest.mark.broker
def test_it_stands_aside_where_kombu_must_publish(amqp_url):
    exchange = Exchange(f"tidings-test-prep-{uuid.uuid4().hex[:8]}", "topic")
    with Connection(amqp_url) as conn:
        channel = conn.default_channel
        producer = _Producer(conn, channel)
        args = ("task.started", b"{}", {"hostname": "h"}, SEQUENCE_HEADER, 1,
                "application/json", "utf-8")
        try:
            assert not publish_prepared(producer, exchange, *args, 1)  # not declared yet
            conn.declared_entities.add(hash(exchange))
            exchange(channel).declare()
            assert publish_prepared(producer, exchange, *args, 1)
            assert not publish_prepared(producer, exchange, *args, "persistent")
            unhashable = ("task.started", b"{}", {"h": [1]}, SEQUENCE_HEADER, 1,
                          "application/json", "utf-8", 1)
            assert not publish_prepared(producer, exchange, *unhashable)
            odd = ("task.started", b"{}", {"h": 1.5}, SEQUENCE_HEADER, 1,
                   "application/json", "utf-8", 1)
            assert not publish_prepared(producer, exchange, *odd)
            channel.connection.confirm_publish = True
            assert not publish_prepared(producer, exchange, *args, 1)
            channel.connection.confirm_publish = False
            channel.close()
            assert not publish_prepared(producer, exchange, *args, 1)
        finally:
            with Connection(amqp_url) as other:
                exchange(other.default_channel).delete()


@pytest.mark.broker
def test_a_dispatcher_publishes_the_same_messages_either_way(amqp_url, monkeypatch):
    """Events from the prepared path and from kombu's arrive alike: body, content type,
    headers (the sequence number counting on across both), delivery mode; one larger
    than a frame too (split by py-amqp's frame writer)."""
    tag = uuid.uuid4().hex[:8]
    app = App("prep", broker=amqp_url, event_exchange=f"tidings-test-prep-{tag}")
    taken: list[bool] = []

    def spy(*args, **kwargs):
        taken.append(publish_prepared(*args, **kwargs))
        return taken[-1]

    monkeypatch.setattr("tidings.events.dispatcher.publish_prepared", spy)
    got: list = []
    with Connection(amqp_url) as conn:
        exchange = Exchange(app.conf.event_exchange, "topic", durable=True)
        queue = Queue(f"tidings-test-prep-{tag}", exchange, routing_key="#", auto_delete=True)
        with Consumer(conn, [queue], callbacks=[lambda body, m: got.append(m)],
                      accept=["json"]):
            d = EventDispatcher(app.connection_for_write(), app=app)
            for n in range(4):
                d.send("task-started", uuid=f"t{n}", n=n)
            d.send("task-succeeded", uuid="big", n=4, result="x" * 300_000)
            deadline = time.monotonic() + 10
            while len(got) < 5 and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=0.5)
                except TimeoutError:
                    pass
            d.close()
            exchange(conn.default_channel).delete()
    assert taken[0] is False and all(taken[1:]), taken  # kombu declares first, then prepared
    assert [m.payload["n"] for m in got] == [0, 1, 2, 3, 4]
    assert got[4].payload["result"] == "x" * 300_000
    first = got[0]
    for m in got:
        assert m.content_type == "application/json" and m.content_encoding == "utf-8"
        assert m.properties["delivery_mode"] == first.properties["delivery_mode"]
        assert m.properties.get("priority") == first.properties.get("priority")
        assert m.delivery_info["routing_key"] == m.payload["type"].replace("-", ".")
        assert m.headers[SENDER_HEADER] == first.headers[SENDER_HEADER]
        assert {k: v for k, v in m.headers.items() if k != SEQUENCE_HEADER} == \
            {k: v for k, v in first.headers.items() if k != SEQUENCE_HEADER}
    assert [m.headers[SEQUENCE_HEADER] for m in got] == \
        list(range(first.headers[SEQUENCE_HEADER], first.headers[SEQUENCE_HEADER] + 5))

