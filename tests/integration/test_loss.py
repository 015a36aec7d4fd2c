"""Events lost on real brokers are counted exactly, by cause.

RabbitMQ: a receiver whose queue drops messages (its message TTL while the
receiver is too slow, or a length limit) counts every event in them, from the
dead letters, whether the sender is Tidings or Celery (a bare ``.multi`` body
without our headers).  Redis: a receiver cut off from PUB/SUB counts exactly
the events a Tidings sender published meanwhile, from the sequence numbers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from kombu import Producer

from tests.cli.proxy import Proxy
from tests.conftest import cleanup_broker, make_app
from tests.integration.test_roundtrip import Capture
from tidings.events import EventDispatcher
from tidings.events.source import BrokerSource

pytestmark = pytest.mark.broker


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


#: Padding of each event: enough bytes that the socket buffers fill and the burst
#: waits in the queue (a consumer without a prefetch limit otherwise takes it all).
PAD = "x" * 16_000


def publish_burst(app, singles: int, batches: int, per_batch: int = 10) -> int:
    """``singles`` Tidings events one per message, ``batches`` Tidings ``task.multi``
    batches, and as many bare batches as a Celery worker sends them; returns the events."""
    with app.connection_for_write() as conn:
        d = EventDispatcher(conn, hostname="w1@loss", app=app, buffer_group=["task"],
                            buffer_limit=per_batch)
        for i in range(singles):
            d.send("worker-heartbeat", freq=2.0, active=0, processed=i, pad=PAD)
        for i in range(batches * per_batch):
            d.send("task-started", uuid=f"t{i}", pad=PAD)
        d.flush()
        producer = Producer(conn.default_channel, exchange=d.exchange, serializer="json")
        for b in range(batches):
            producer.publish([{"type": "task-started", "uuid": f"c{b}-{i}", "hostname": "cel",
                               "timestamp": time.time(), "clock": 1, "pid": 1,
                               "utcoffset": 0, "pad": PAD} for i in range(per_batch)],
                             routing_key="task.multi", declare=[d.exchange])
    return singles + 2 * batches * per_batch


@pytest.mark.parametrize("limit", ["ttl", "max_length"])
def test_rabbitmq_counts_every_event_its_queue_dropped(amqp_url, limit):
    settings = ({"event_queue_ttl": 0.2} if limit == "ttl"
                else {"event_queue_max_length": 50})
    app, declared = make_app(amqp_url, **settings)
    slow = lambda event: time.sleep(0.002)  # noqa: E731  (far slower than the burst)
    try:
        with Capture(app, also=slow) as cap:
            sent = publish_burst(app, singles=1500, batches=150)
            lost = cap.recv.lost
            assert wait_for(lambda: len(cap.events) + sum(lost.values()) >= sent, 60), \
                (len(cap.events), dict(lost), sent)
            time.sleep(0.5)  # nothing more arrives: the count is exact, not a lower bound
            received = len(cap.events)
        assert received + sum(lost.values()) == sent
        print(f"\n{limit}: sent {sent}, received {received}, lost {dict(lost)}")
        cause = "expired" if limit == "ttl" else "overflow"
        assert lost[cause] > 0 and set(lost) <= {cause, "sequence-gap"}
        assert lost["sequence-gap"] == 0  # every gap was filled by its dead letter
        assert cap.recv.errors == {}
    finally:
        cleanup_broker(amqp_url, declared)  # with the event exchange's dead-letter one


def test_a_queue_that_drops_nothing_reports_no_loss(amqp_url):
    app, declared = make_app(amqp_url)
    try:
        with Capture(app) as cap:
            sent = publish_burst(app, singles=200, batches=20)
            assert len(cap.wait(sent)) == sent
        assert cap.recv.lost == {} and cap.recv.pipeline.losses.duplicates == 0
    finally:
        cleanup_broker(amqp_url, declared)  # with the event exchange's dead-letter one


@contextmanager
def consuming(source: BrokerSource, handler) -> Iterator[BrokerSource]:
    """``source`` feeding ``handler`` in a thread for the block."""
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(handler, stop), daemon=True)
    thread.start()
    try:
        yield source
    finally:
        stop.set()
        thread.join(10)


@contextmanager
def redis_behind_proxy(redis_url: str):
    """``(app, proxy, source, received)``: ``app`` publishes to Redis directly; ``source``
    receives into ``received`` through ``proxy``, which the test cuts and restores."""
    proxy = Proxy(6379)
    proxy.start()
    app, declared = make_app(redis_url)
    via_proxy, _ = make_app(redis_url.replace("6379", str(proxy.port)),
                            event_exchange=app.conf.event_exchange,
                            control_exchange=app.conf.control_exchange)
    received: list[dict] = []
    source = BrokerSource(via_proxy, wakeup=False, connect_retries=None)
    try:
        with consuming(source, received.append):
            yield app, proxy, source, received
    finally:
        proxy.cut()
        cleanup_broker(redis_url, declared)


def test_redis_counts_exactly_what_a_tidings_sender_published_while_cut_off(redis_url):
    sent = 0
    with redis_behind_proxy(redis_url) as (app, proxy, source, received):
        with app.connection_for_write() as conn:
            d = EventDispatcher(conn, hostname="w1@redis-loss", app=app)

            def burst(n: int) -> None:
                nonlocal sent
                for _ in range(n):
                    d.send("worker-heartbeat", freq=2.0, active=0, processed=sent)
                    sent += 1

            assert wait_for(lambda: source.status is not None and source.status.ok, 20)
            burst(1)
            assert wait_for(lambda: len(received) == 1, 10)
            burst(100)
            assert wait_for(lambda: len(received) == 101, 10)
            proxy.cut()
            assert wait_for(lambda: not source.status.ok, 10)
            burst(250)  # nobody is subscribed: Redis drops them
            proxy.start()
            assert wait_for(lambda: source.status.ok, 30), source.status
            for _ in range(100):  # until one published now gets through
                burst(1)
                if wait_for(lambda: received[-1]["processed"] == sent - 1, 0.3):
                    break
            assert wait_for(lambda: received[-1]["processed"] == sent - 1, 10)
        assert source.losses.lost["sequence-gap"] == sent - len(received) >= 250
        assert source.losses.as_dict() == {"sequence-gap": sent - len(received)}
        print(f"\nredis: sent {sent}, received {len(received)}, lost {source.losses}")


def test_redis_estimates_what_a_celery_sender_published_while_cut_off(redis_url):
    """No sequence numbers (a Celery worker): the outage is recorded with its duration,
    and the tasks the worker's heartbeats say it finished meanwhile are estimated."""
    processed = 0
    with redis_behind_proxy(redis_url) as (app, proxy, source, received):
        with app.connection_for_write() as conn:
            exchange = EventDispatcher(conn, app=app, enabled=False).exchange
            producer = Producer(conn.default_channel, exchange=exchange, serializer="json")

            def celery_event(type_: str, **fields) -> None:  # Celery's body, no headers
                producer.publish({"hostname": "cel@loss", "utcoffset": 0, "pid": 7,
                                  "clock": 1, "timestamp": time.time(), "type": type_,
                                  **fields}, routing_key=type_.replace("-", "."),
                                 declare=[exchange])

            def tasks(n: int) -> None:
                nonlocal processed
                for _ in range(n):
                    uuid = f"c{processed}"
                    celery_event("task-received", uuid=uuid, name="proj.add")
                    celery_event("task-started", uuid=uuid)
                    celery_event("task-succeeded", uuid=uuid, result="1", runtime=0.1)
                    processed += 1

            def heartbeat() -> None:
                celery_event("worker-heartbeat", freq=2.0, active=0, processed=processed)

            assert wait_for(lambda: source.status is not None and source.status.ok, 20)
            heartbeat()
            tasks(5)
            heartbeat()
            assert wait_for(lambda: len(received) == 17, 10), len(received)
            proxy.cut()
            assert wait_for(lambda: not source.status.ok, 10)
            tasks(40)  # nobody is subscribed: Redis drops them
            heartbeat()
            proxy.start()
            assert wait_for(lambda: source.status.ok, 30), source.status
            time.sleep(0.5)
            tasks(3)  # seen
            heartbeat()
            assert wait_for(lambda: source.losses.total > 0, 10), source.losses
        # 43 processed since the last heartbeat seen, 3 seen finish: 40 tasks, 3 events each
        assert source.losses.as_dict() == {"disconnected": 40 * 3}
        (start, end), = source.losses.outages
        assert end > start
        print(f"\nredis, Celery sender: {source.losses}, outage {end - start:.1f} s")
