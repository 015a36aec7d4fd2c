"""Redis receivers that take PUB/SUB envelopes directly (transport/redis_read.py).

kombu's path is the oracle: a receiver on a plain kombu connection and one
on ``App.connection_for_read()`` read the same messages (Tidings' and
Celery's events, batches, sequence gaps, and input that is not an event or
not JSON) and must end with the same events, the same skipped input and
the same losses; only the second takes them as envelopes.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from kombu import Connection, Exchange, Producer

from tests.conftest import cleanup_broker, make_app
from tidings.events import EventDispatcher, EventReceiver
from tidings.protocol.loss import SENDER_HEADER, SEQUENCE_HEADER
from tidings.transport.redis_read import RedisReadChannel

pytestmark = pytest.mark.broker


class Reader:
    """A receiver capturing in a thread; counts the messages its ``direct`` method
    (the receiver's entry for messages that skip kombu) was handed."""

    def __init__(self, app, connection, direct: str = "_on_envelope") -> None:
        self.events: list[dict] = []
        self.envelopes = 0
        self.ready = threading.Event()
        self.recv = EventReceiver(connection, app=app, handlers={"*": self.events.append})
        taken = getattr(self.recv, direct)

        def counted(*message):
            self.envelopes += 1
            return taken(*message)

        setattr(self.recv, direct, counted)
        ready = self.recv.on_consume_ready

        def on_ready(*args, **kwargs):
            ready(*args, **kwargs)
            self.ready.set()

        self.recv.on_consume_ready = on_ready
        self.thread = threading.Thread(target=lambda: self.recv.capture(wakeup=False),
                                       daemon=True)

    def __enter__(self) -> Reader:
        self.thread.start()
        assert self.ready.wait(15)
        return self

    def __exit__(self, *exc) -> None:
        self.recv.should_stop = True
        self.thread.join(10)

    def seen(self) -> list[dict]:
        return [{k: v for k, v in e.items() if k != "local_received"} for e in self.events]


@pytest.fixture
def app(redis_url):
    app, declared = make_app(redis_url)
    yield app
    cleanup_broker(redis_url, declared)


def _publish_everything(app, url: str) -> int:
    """Every kind of input, in order; returns the number of valid events sent."""
    import redis
    from celery import Celery

    exchange = Exchange(app.conf.event_exchange, "fanout")
    with app.connection_for_write() as conn:
        d = EventDispatcher(conn, hostname="ours@it", app=app, buffer_group=["task"],
                            buffer_limit=4)
        d.send("worker-online", freq=2.0, active=0, processed=0)
        for n in range(8):
            d.send("task-received", uuid=f"t{n}", name="proj.add", args="()", kwargs="{}")
        d.flush()
        producer = Producer(conn.default_channel, exchange=exchange, auto_declare=False)
        for body, content_type, encoding in (
            ("not json", "application/json", "utf-8"),  # not-json
            ("[1, 2]", "application/json", "utf-8"),  # a batch of non-events
            ("hello", "text/plain", "utf-8"),  # not accepted: kombu's way
            (json.dumps({"type": "worker-heartbeat", "hostname": "l1@it", "clock": 3,
                         "timestamp": 1.0}), "application/json", "latin-1"),  # kombu's way
        ):
            producer.publish(body, routing_key="worker.heartbeat", content_type=content_type,
                             content_encoding=encoding)
        for seq in (0, 5):  # a sender that skips four events
            producer.publish(json.dumps({"type": "worker-heartbeat", "hostname": "gap@it",
                                         "clock": 10 + seq, "timestamp": 2.0 + seq}),
                             routing_key="worker.heartbeat", content_type="application/json",
                             content_encoding="utf-8",
                             headers={SENDER_HEADER: "gap@it/1", SEQUENCE_HEADER: seq})
        prefix = conn.default_channel.keyprefix_fanout
    client = redis.Redis.from_url(url)
    try:  # not even an envelope: kombu warns and delivers nothing
        client.publish(f"{prefix}{exchange.name}/worker.heartbeat", b"\x00garbage")
    finally:
        client.close()
    celery = Celery("interop", broker=url, set_as_current=False)
    celery.conf.event_exchange = app.conf.event_exchange
    with celery.connection_for_write() as conn:
        theirs = celery.events.Dispatcher(conn, hostname="theirs@it")
        theirs.send("worker-heartbeat", freq=2.0, active=0, processed=1)
        theirs.send("task-succeeded", uuid="c1", result="3", runtime=0.01)
    return 1 + 8 + 1 + 2 + 2


def test_envelopes_give_what_kombus_path_gives(app, redis_url):
    fast_conn = app.connection_for_read()
    assert fast_conn.transport_cls.__name__ == "RedisReadTransport"
    messages = _RawCount(redis_url, app)
    with Reader(app, fast_conn) as fast, Reader(app, Connection(redis_url)) as plain:
        expected = _publish_everything(app, redis_url)
        deadline = time.monotonic() + 15
        while (min(len(fast.events), len(plain.events)) < expected
               and time.monotonic() < deadline):
            time.sleep(0.05)
        time.sleep(0.3)  # and nothing more comes
    count = messages.close()
    assert len(plain.events) == expected
    assert fast.seen() == plain.seen()
    assert fast.recv.errors == plain.recv.errors
    assert set(plain.recv.errors) >= {"not-json", "content-disallowed"}
    assert fast.recv.lost == plain.recv.lost and sum(plain.recv.lost.values()) == 4
    assert plain.envelopes == 0
    # every message but the one that is no envelope (two of them handed back to kombu)
    assert count >= 12 and fast.envelopes == count - 1


class _RawCount:
    """Counts the messages published to the app's event topics (a raw subscriber)."""

    def __init__(self, url: str, app) -> None:
        import redis

        with Connection(url) as conn:
            prefix = conn.default_channel.keyprefix_fanout
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.pubsub.psubscribe(f"{prefix}{app.conf.event_exchange}/*")
        assert self.pubsub.get_message(timeout=2)["type"] == "psubscribe"

    def close(self) -> int:
        count = 0
        while (message := self.pubsub.get_message(timeout=0.5)) is not None:
            count += message["type"] == "pmessage"
        self.pubsub.close()
        self.client.close()
        return count


def test_a_queue_without_an_envelope_consumer_is_kombus(app, redis_url):
    """A queue without an envelope consumer on the same channel is delivered by kombu."""
    from kombu import Consumer, Queue

    with app.connection_for_read() as conn:
        channel = conn.channel()
        assert isinstance(channel, RedisReadChannel)
        taken: list[dict] = []
        channel.consume_envelopes("nobody-reads-this", taken.append)
        got: list = []
        exchange = Exchange(app.conf.event_exchange, "fanout", channel=channel)
        queue = Queue(f"{app.conf.event_exchange}.q", exchange, routing_key="#",
                      auto_delete=True,
                      channel=channel)
        with Consumer(channel, [queue], callbacks=[lambda body, m: got.append(body)],
                      accept=["json"]):
            try:
                conn.drain_events(timeout=0.2)  # kombu subscribes on the first poll
            except TimeoutError:
                pass
            with app.connection_for_write() as w:
                Producer(w.default_channel, exchange=exchange).publish(
                    {"a": 1}, routing_key="x", serializer="json")
            deadline = time.monotonic() + 5
            while not got and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=0.2)
                except TimeoutError:
                    pass
    assert got == [{"a": 1}] and taken == []
