"""Redis receivers that take PUB/SUB envelopes directly (transport/redis_read.py).

kombu's path is the oracle: a receiver on a plain kombu connection and one
on ``App.connection_for_read()`` read the same messages (Tidings' and
Celery's events, batches, sequence gaps, and input that is not an event or
not JSON) and must end with the same events, the same skipped input and
the same losses; only the second takes them as envelopes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kombu import Connection, Exchange, Producer

from tests.conftest import cleanup_broker, make_app
from tests.unit.direct_input import publish_everything, record_pacer
from tidings.events import EventReceiver
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

        def on_ready(connection, channel, *args, **kwargs):
            ready(connection, channel, *args, **kwargs)
            self.channel = channel
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


def _not_an_envelope(url: str) -> Callable[[Any, Any], int]:
    """Publishes a message that is not even an envelope: kombu warns and delivers nothing."""
    import redis

    def publish(conn, exchange) -> int:
        prefix = conn.default_channel.keyprefix_fanout
        client = redis.Redis.from_url(url)
        try:
            client.publish(f"{prefix}{exchange.name}/worker.heartbeat", b"\x00garbage")
        finally:
            client.close()
        return 1

    return publish


def test_envelopes_give_what_kombus_path_gives(app, redis_url):
    fast_conn = app.connection_for_read()
    assert fast_conn.transport_cls.__name__ == "RedisReadTransport"
    messages = _RawCount(redis_url, app)
    with Reader(app, fast_conn) as fast, Reader(app, Connection(redis_url)) as plain:
        expected, _ = publish_everything(app, redis_url, _not_an_envelope(redis_url))
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
    assert count >= 13 and fast.envelopes == count - 1


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


# -- replies read in bulk ------------------------------------------------------------------


class _Reads:
    """Counts ``BulkReadConnection.read_replies`` calls and the replies each returned."""

    def __init__(self, monkeypatch) -> None:
        from tidings.transport import redis_read

        self.sizes: list[int | None] = []
        real = redis_read.BulkReadConnection.read_replies

        def read_replies(conn):
            replies = real(conn)
            self.sizes.append(None if replies is None else len(replies))
            return replies

        monkeypatch.setattr(redis_read.BulkReadConnection, "read_replies", read_replies)


def _publish_events(app, events: list[dict]) -> None:
    from tidings.transport import get_exchange

    with app.connection_for_write() as conn:
        exchange = get_exchange(conn, app.conf.event_exchange)
        producer = Producer(conn.default_channel, exchange=exchange)
        for event in events:
            producer.publish(event, routing_key=event["type"].replace("-", "."),
                             serializer="json", declare=[])


def _task_event(n: int, **fields) -> dict:
    return {"type": "task-received", "uuid": f"task-{n}", "hostname": "w@h",
            "timestamp": 1.0 + n, "clock": n + 1, **fields}


def _wait(predicate, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def test_messages_that_wait_are_read_together(app, monkeypatch):
    """Held back by a slow handler, 300 messages are read many to a read, in order."""
    reads = _Reads(monkeypatch)
    release = threading.Event()
    conn = app.connection_for_read()
    with Reader(app, conn) as reader:
        handler = reader.recv.handlers["*"]

        def slow_first(event):
            if event["uuid"] == "task-0":
                release.wait(10)  # the rest pile up in the socket meanwhile
            handler(event)

        reader.recv.handlers["*"] = slow_first
        _publish_events(app, [_task_event(n) for n in range(300)])
        time.sleep(0.5)
        release.set()
        assert _wait(lambda: len(reader.events) == 300), len(reader.events)
    assert [e["uuid"] for e in reader.events] == [f"task-{n}" for n in range(300)]
    assert reader.envelopes == 300
    assert None not in reads.sizes and max(reads.sizes) >= 50, reads.sizes


def test_a_message_longer_than_a_read_arrives_whole(app):
    """A reply that takes several reads (256 KiB of arguments) is put together first."""
    long_args = "x" * 262_144
    events = [_task_event(0), _task_event(1, args=long_args), _task_event(2)]
    with Reader(app, app.connection_for_read()) as reader:
        _publish_events(app, events)
        assert _wait(lambda: len(reader.events) == 3), len(reader.events)
    assert [e["uuid"] for e in reader.events] == ["task-0", "task-1", "task-2"]
    assert reader.events[1]["args"] == long_args


def test_health_checks_are_answered(redis_url, monkeypatch):
    """After a second without a read, redis-py pings the PUB/SUB connection; the bulk
    reads send those pings and count the answers, so kombu does not drop the
    connection as unanswered."""
    app, declared = make_app(redis_url,
                             broker_transport_options={"health_check_interval": 1})
    reads = _Reads(monkeypatch)
    try:
        with Reader(app, app.connection_for_read()) as reader:
            client = reader.channel.subclient
            connection = client.connection
            for n in range(4):
                time.sleep(1.3)  # past the interval: the next read pings first
                _publish_events(app, [_task_event(n)])
                assert _wait(lambda n=n: len(reader.events) == n + 1)
            time.sleep(0.3)
            assert client.connection is connection and connection.is_connected
            assert client.health_check_response_counter == 0
    finally:
        cleanup_broker(redis_url, declared)
    # the subscription's reply, the 4 events, and the answers to 3 pings or more
    assert None not in reads.sizes and sum(reads.sizes) >= 1 + 4 + 3, reads.sizes


def test_without_hiredis_replies_are_read_one_at_a_time(app, monkeypatch):
    """Without hiredis the connection cannot read in bulk: kombu's way, same events."""
    from tidings.transport import redis_read

    monkeypatch.setattr(redis_read, "BULK_READS", False)
    reads = _Reads(monkeypatch)
    with Reader(app, app.connection_for_read()) as reader:
        _publish_events(app, [_task_event(n) for n in range(20)])
        assert _wait(lambda: len(reader.events) == 20), len(reader.events)
    assert [e["uuid"] for e in reader.events] == [f"task-{n}" for n in range(20)]
    assert reader.envelopes == 20
    assert reads.sizes and set(reads.sizes) == {None}


def test_the_pacer_is_told_the_messages_each_read_brought(app, monkeypatch):
    """What each read took reaches the read pacer, whose wait adapts to it."""
    from tidings.transport import redis_read

    told = record_pacer(monkeypatch, redis_read)
    conn = app.connection_for_read()
    with Reader(app, conn) as reader:
        _publish_events(app, [_task_event(n) for n in range(300)])
        assert _wait(lambda: len(reader.events) == 300), len(reader.events)
    assert sum(m for m, _ in told) == 300
    # each message's envelope: its base64 body and kombu's fields, a few hundred bytes
    assert all(300 * m <= n <= 3000 * m for m, n in told), told
