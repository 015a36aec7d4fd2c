"""Publish -> receive round trips on real RabbitMQ and Redis."""

import shutil
import subprocess
import threading
import time

import pytest
from kombu import Connection
from kombu.pidbox import Mailbox

from tidings.events import EventDispatcher, EventReceiver, State

pytestmark = pytest.mark.broker


class Capture:
    """A receiver capturing in a thread, declared before anything is published."""

    def __init__(self, app, wakeup=False, also=None):
        self.events = []
        self.ready = threading.Event()

        def handler(event):
            self.events.append(event)
            if also is not None:
                also(event)

        self.recv = EventReceiver(app.connection_for_read(), handlers={"*": handler}, app=app)
        self.recv.on_consume_ready = self._ready(self.recv.on_consume_ready)
        self.thread = threading.Thread(target=self._run, args=(wakeup,), daemon=True)
        self.error = None

    def _ready(self, original):
        def on_consume_ready(connection, channel, consumers, **kwargs):
            original(connection, channel, consumers, **kwargs)
            self.ready.set()
        return on_consume_ready

    def _run(self, wakeup):
        try:
            self.recv.capture(wakeup=wakeup)
        except Exception as exc:  # pragma: no cover - surfaced by the test
            self.error = exc

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(15), "receiver did not start"
        return self

    def __exit__(self, *exc):
        self.recv.should_stop = True
        self.thread.join(10)

    def wait(self, count, timeout=15.0):
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.events


def test_single_and_multi_round_trip_loses_nothing(broker_app):
    state = State()
    with Capture(broker_app, also=state.event) as cap:
        with broker_app.connection_for_write() as conn:
            d = EventDispatcher(conn, hostname="w1@it", app=broker_app, buffer_group=["task"],
                                buffer_limit=10)
            d.send("worker-online", freq=2.0, active=0, processed=0)
            for i in range(300):
                d.send("task-received", uuid=f"t{i}", name="proj.add", args="()",
                       kwargs="{}")
                d.send("task-succeeded", uuid=f"t{i}", result="1", runtime=0.001)
            d.flush()
            d.send("worker-offline")
            assert d.stats["sent"] == 602 and d.buffered == 0
        events = cap.wait(602)
    assert cap.error is None
    assert len(events) == 602
    assert sum(1 for e in events if e["type"] == "task-succeeded") == 300
    assert len(state.tasks) == 300
    assert all(t.state == "SUCCESS" for t in state.tasks.values())
    clocks = [e["clock"] for e in events if e["type"] != "worker-online"]
    assert len(set(clocks)) == len(clocks)
    assert not cap.recv.errors


def test_wakeup_asks_workers_for_a_heartbeat(broker_app):
    """capture(wakeup=True) broadcasts the pidbox ``heartbeat`` command, as Celery does."""
    app = broker_app
    mailbox = Mailbox(app.conf.control_exchange, type="fanout", accept=["json"])
    answered = threading.Event()
    conn = Connection(app.conf.broker_url)
    dispatcher = EventDispatcher(app.connection_for_write(), hostname="sleepy@it", app=app)

    def heartbeat(state, **kwargs):
        dispatcher.send("worker-heartbeat", freq=5)
        answered.set()

    node = mailbox(conn).Node("sleepy@it", handlers={"heartbeat": heartbeat},
                              channel=conn.default_channel)
    consumer = node.listen()
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn.drain_events(timeout=0.2)
            except TimeoutError:
                pass

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        time.sleep(0.5)
        with Capture(app, wakeup=True) as cap:
            assert answered.wait(10), "the wake-up broadcast did not reach the worker"
            events = cap.wait(1)
        assert [e["type"] for e in events][:1] == ["worker-heartbeat"]
        assert events[0]["hostname"] == "sleepy@it"
    finally:
        stop.set()
        server.join(5)
        consumer.cancel()
        conn.close()
        dispatcher.close()


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="rabbitmqctl not installed")
def test_rabbitmq_topology_matches_celery(amqp_url):
    from tests.conftest import cleanup_broker, make_app

    app, declared = make_app(amqp_url)
    try:
        recv = EventReceiver(app.connection_for_read(), app=app, node_id="topo")
        with app.connection_for_read() as conn:
            recv.queue(conn.default_channel).declare()
            exchanges = subprocess.run(
                ["rabbitmqctl", "-q", "list_exchanges", "name", "type", "durable",
                 "auto_delete"], capture_output=True, text=True, timeout=60).stdout
            queues = subprocess.run(
                ["rabbitmqctl", "-q", "list_queues", "name", "durable", "auto_delete",
                 "exclusive", "arguments"], capture_output=True, text=True, timeout=60).stdout
            bindings = subprocess.run(
                ["rabbitmqctl", "-q", "list_bindings", "source_name", "destination_name",
                 "routing_key"], capture_output=True, text=True, timeout=60).stdout
        ev = app.conf.event_exchange
        assert f"{ev}\ttopic\ttrue\tfalse" in exchanges
        line = next(q for q in queues.splitlines() if q.startswith("celeryev.topo\t"))
        _, durable, auto_delete, exclusive, arguments = line.split("\t")
        assert (durable, auto_delete, exclusive) == ("false", "true", "true")
        assert '"x-expires",60000' in arguments and '"x-message-ttl",5000' in arguments
        assert f"{ev}\tceleryev.topo\t#" in bindings
    finally:
        cleanup_broker(amqp_url, declared)
