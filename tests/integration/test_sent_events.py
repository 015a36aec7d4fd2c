"""A client's ``task-sent`` events on real brokers: Celery's way by default; with
``task_sent_event_max_delay``, batched under load, none left behind."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time
import uuid
import weakref
from contextlib import contextmanager

import pytest
from kombu import Connection, Consumer, Queue

from tests.cli.proxy import Proxy
from tests.conftest import cleanup_broker, delete_queue, make_app
from tidings import App
from tidings.events.sent import SENT_EVENT_BATCH
from tidings.transport import get_exchange

pytestmark = pytest.mark.broker

DELAY = 0.005  # task_sent_event_max_delay of the batching clients here


class Raw:
    """The event exchange's messages as they were published: routing key and body.

    A consumer (Redis delivers fanout messages to subscribers only), subscribed
    before anything is published.
    """

    def __init__(self, url: str, exchange: str) -> None:
        self.conn = Connection(url)
        queue = Queue(f"sent-{uuid.uuid4().hex[:8]}", get_exchange(self.conn, exchange),
                      routing_key="#", auto_delete=True)
        self.messages: list[tuple[str, object]] = []
        self.consumer = Consumer(self.conn, [queue], callbacks=[self._on_message],
                                 accept=["json"], no_ack=True)
        self.consumer.consume()
        self._drain(0.2)  # subscribed (Redis subscribes on its first poll)

    def _on_message(self, body: object, message: object) -> None:
        self.messages.append((message.delivery_info["routing_key"], body))

    def _drain(self, timeout: float) -> None:
        try:
            while True:
                self.conn.drain_events(timeout=timeout)
        except TimeoutError:
            pass

    def events(self) -> list[dict]:
        self._drain(0.05)
        out = []
        for _, body in self.messages:
            out.extend(body if isinstance(body, list) else [body])
        return out

    def wait_for(self, count: int, timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(events := self.events()) < count and time.monotonic() < deadline:
            pass
        return events

    def close(self) -> None:
        try:
            self.consumer.cancel()
        finally:
            self.conn.release()


@contextmanager
def _client(url: str, witness_url: str | None = None, **settings):
    """An app on ``url`` with a queue and event exchange of its own, and a :class:`Raw`
    witness of its events (on ``witness_url``, else the same broker); both cleaned up."""
    witness_url = witness_url or url
    queue = f"sent-q-{uuid.uuid4().hex[:8]}"
    app, declared = make_app(url, task_default_queue=queue, **settings)
    raw = Raw(witness_url, app.conf.event_exchange)
    try:
        yield app, raw
    finally:
        app.publisher.close()
        raw.close()
        delete_queue(witness_url, queue)
        cleanup_broker(witness_url, declared)


@pytest.fixture
def client(broker_url):
    with _client(broker_url, task_send_sent_event=True,
                 task_sent_event_max_delay=DELAY) as pair:
        yield pair


def test_a_busy_clients_events_go_in_batches_and_all_arrive_without_a_close(client):
    app, raw = client
    ids = [app.send_task("proj.add", (n, n)).id for n in range(3 * SENT_EVENT_BATCH)]
    # no close: the last batch goes by the dispatcher's timer
    events = raw.wait_for(len(ids))
    assert [e["uuid"] for e in events] == ids
    assert {e["type"] for e in events} == {"task-sent"}
    clocks = [e["clock"] for e in events]
    assert clocks == sorted(clocks) and len(set(clocks)) == len(clocks)
    keys = [key for key, _ in raw.messages]
    assert keys[0] == "task.multi" and len(raw.messages[0][1]) == 1  # idle: at once
    assert len(keys) < len(ids) / 2  # under load: a few batches, not one message each
    assert all(len(body) <= SENT_EVENT_BATCH for _, body in raw.messages)
    assert app.publisher.sent_events.dispatcher.stats["sent"] == len(ids)


def test_an_idle_clients_event_goes_at_once(client):
    app, raw = client
    for n in range(3):
        task_id = app.send_task("proj.add", (n, n)).id
        events = raw.wait_for(n + 1, timeout=2.0)
        assert events[-1]["uuid"] == task_id
        time.sleep(4 * DELAY)  # idle longer than the batch delay


_EXITING_CLIENT = """
import sys
from tidings import App
app = App("exit", broker=sys.argv[1], event_exchange=sys.argv[2],
          task_default_queue=sys.argv[3], task_send_sent_event=True,
          task_sent_event_max_delay=0.005)
sent = 0
while sent < int(sys.argv[4]) or not app.publisher.sent_events.dispatcher.buffered:
    app.send_task("proj.add", (sent, sent))  # until some are waiting, as it ends
    sent += 1
print(sent, app.publisher.sent_events.dispatcher.buffered)
"""


def test_events_waiting_when_the_process_exits_are_published(client, broker_url):
    app, raw = client
    count = 2 * SENT_EVENT_BATCH - 1
    out = subprocess.run(
        [sys.executable, "-c", _EXITING_CLIENT, broker_url, app.conf.event_exchange,
         app.conf.task_default_queue, str(count)],
        check=True, capture_output=True, text=True, timeout=60)
    sent, waiting = map(int, out.stdout.split())
    assert sent >= count and waiting > 0  # some were still waiting when it ended
    events = raw.wait_for(sent)
    assert len(events) == sent
    assert len({e["uuid"] for e in events}) == sent


def test_a_cut_connection_is_replaced_and_events_flow_again(amqp_url):
    proxy = Proxy(5672)
    proxy.start()
    try:  # the witness reaches the broker directly
        with _client(f"amqp://guest:guest@127.0.0.1:{proxy.port}//", amqp_url,
                     task_send_sent_event=True, task_sent_event_max_delay=DELAY
                     ) as (app, raw):
            first = app.send_task("proj.add", (1, 1)).id
            assert [e["uuid"] for e in raw.wait_for(1)] == [first]
            before = app.publisher.sent_events.dispatcher
            proxy.cut()
            proxy.start()
            # The task's own publish reconnects (kombu's retries); the event's
            # connection was cut under it: its first writes fail, or vanish as
            # writes into a closed socket do, and from then on a new connection
            # carries the events.
            later = []
            for n in range(20):
                time.sleep(0.05)
                later.append(app.send_task("proj.add", (n, n)).id)
            time.sleep(0.2)
            last = app.send_task("proj.add", (0, 0)).id
            received = {e["uuid"] for e in raw.wait_for(22, timeout=5.0)}
            assert app.publisher.sent_events.dispatcher is not before
            assert last in received
            assert later[-1] in received
    finally:
        proxy.cut()


def test_close_publishes_what_waits_and_a_later_send_opens_again(client):
    app, raw = client
    ids = [app.send_task("proj.add", (n, n)).id for n in range(50)]
    app.publisher.close()
    assert app.publisher.sent_events.dispatcher is None
    assert [e["uuid"] for e in raw.wait_for(50, timeout=2.0)] == ids
    again = app.send_task("proj.add", (0, 0)).id
    assert raw.wait_for(51)[-1]["uuid"] == again


def test_by_default_each_event_goes_at_once_as_celerys_does(broker_url):
    with _client(broker_url, task_send_sent_event=True) as (app, raw):
        ids = [app.send_task("proj.add", (n, n)).id for n in range(20)]
        events = raw.wait_for(len(ids), timeout=5.0)
        assert [e["uuid"] for e in events] == ids
        assert [key for key, _ in raw.messages] == ["task.sent"] * len(ids)  # no batches
        assert app.publisher.sent_events.dispatcher is None


def test_an_app_without_the_setting_sends_no_event(broker_url):
    with _client(broker_url) as (app, raw):
        app.send_task("proj.add", (1, 1))
        time.sleep(0.3)
        assert raw.events() == []
        assert app.publisher.sent_events.dispatcher is None


def test_apps_are_independent(broker_url):
    a = App("a", broker=broker_url)
    assert a.publisher.sent_events is not App("b", broker=broker_url).publisher.sent_events


def test_an_app_dropped_with_events_waiting_publishes_them(broker_url):
    """No close, no exit: the app is collected while its events wait (the batch delay is
    far longer than the test), and they are published all the same."""
    queue = f"sent-q-{uuid.uuid4().hex[:8]}"
    app, declared = make_app(broker_url, task_default_queue=queue, task_send_sent_event=True,
                             task_sent_event_max_delay=60.0)
    raw = Raw(broker_url, app.conf.event_exchange)
    try:
        ids = [app.send_task("proj.add", (n, n)).id for n in range(20)]
        assert app.publisher.sent_events.dispatcher.buffered > 0  # waiting for the timer
        collected = weakref.ref(app)
        del app
        gc.collect()
        assert collected() is None
        assert sorted(e["uuid"] for e in raw.wait_for(len(ids), timeout=10.0)) == sorted(ids)
    finally:
        raw.close()
        delete_queue(broker_url, queue)
        cleanup_broker(broker_url, declared)


def test_a_close_publishes_on_a_new_connection_when_its_own_is_gone(amqp_url):
    """The dispatcher's socket closed under it (as the collector closes the sockets of
    an app it collects): the close takes a new connection for what waits."""
    with _client(amqp_url, task_send_sent_event=True,
                 task_sent_event_max_delay=60.0) as (app, raw):
        ids = [app.send_task("proj.add", (n, n)).id for n in range(20)]
        dispatcher = app.publisher.sent_events.dispatcher
        assert dispatcher.buffered > 0
        dispatcher.connection.connection.transport.sock.close()
        app.publisher.sent_events.close()
        assert [e["uuid"] for e in raw.wait_for(len(ids), timeout=5.0)] == ids


def test_a_close_waits_for_a_send_under_way(client):
    """A thread is inside the dispatcher's send when another closes: the close publishes
    that event with the rest, instead of retiring the dispatcher under it."""
    app, raw = client
    first = app.send_task("proj.add", (0, 0)).id
    dispatcher = app.publisher.sent_events.dispatcher
    send, inside, go_on = dispatcher.send_fields, threading.Event(), threading.Event()

    def slow_send(*args, **kwargs):
        inside.set()
        go_on.wait(5.0)
        return send(*args, **kwargs)

    dispatcher.send_fields = slow_send
    sender = threading.Thread(target=lambda: ids.append(app.send_task("proj.add", (1, 1)).id))
    ids = [first]
    sender.start()
    assert inside.wait(5.0)
    closer = threading.Thread(target=app.publisher.sent_events.close)
    closer.start()
    time.sleep(0.2)  # the close is under way, or waiting for the send
    go_on.set()
    sender.join(10.0)
    closer.join(10.0)
    assert [e["uuid"] for e in raw.wait_for(2, timeout=5.0)] == ids
    assert dispatcher.stats["dropped_closed"] == 0
