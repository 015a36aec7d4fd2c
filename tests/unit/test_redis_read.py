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
from tests.unit.direct_input import publish_everything
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
