import os
import threading
import uuid

import pytest
from kombu import Connection, Queue
from kombu.exceptions import OperationalError

from tidings import App
from tidings.events import EventDispatcher
from tidings.protocol.loss import SENDER_HEADER, SEQUENCE_HEADER, read_sequence


@pytest.fixture
def app():
    return App("t", broker="memory://", event_exchange=f"ev-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def conn(app):
    with Connection("memory://") as c:
        yield c


def drain(conn, app, routing_key="#", accept=("json",)):
    """Bind a queue to the event exchange; return a function that reads what arrived."""
    from tidings.transport import get_exchange

    queue = Queue(f"q-{uuid.uuid4().hex[:8]}", get_exchange(conn, app.conf.event_exchange),
                  routing_key=routing_key)
    queue(conn.default_channel).declare()

    def read():
        out = []
        while True:
            message = queue(conn.default_channel).get(no_ack=True, accept=list(accept))
            if message is None:
                return out
            out.append(message)
    return read


class FailingProducer:
    """Stands in for a producer while the broker is down."""

    connection = None  # no connection: the exchange is declared inside publish

    def __init__(self):
        self.calls = 0

    def publish(self, *args, **kwargs):
        self.calls += 1
        raise OperationalError("broker down")


def test_send_publishes_celery_shaped_message(app, conn):
    read = drain(conn, app)
    d = EventDispatcher(conn, hostname="w1@h", app=app)
    d.send("worker-online", freq=2.0, active=0)
    (message,) = read()
    assert message.delivery_info["routing_key"] == "worker.online"
    assert message.headers["hostname"] == "w1@h"  # Celery's header, and our sequence:
    sender, _ = read_sequence(message.headers)
    assert sender.startswith(f"w1@h/{os.getpid()}/") and set(message.headers) == {
        "hostname", SENDER_HEADER, SEQUENCE_HEADER}
    assert message.properties["delivery_mode"] == 1
    assert message.content_type == "application/json"
    body = message.payload
    assert list(body) == ["hostname", "utcoffset", "pid", "clock", "freq", "active",
                          "timestamp", "type"]
    assert body["clock"] == app.clock.value


def test_send_fields_publishes_what_send_does_alone_and_batched(app, conn):
    """Our senders hand their fields over as a dict: the events are send's, field for
    field and in the same order, whether they go at once or in a batch."""
    read = drain(conn, app)
    d = EventDispatcher(conn, hostname="w1@h", app=app, buffer_group=["task"], buffer_limit=2)
    fields = {"uuid": "a", "name": "proj.add", "args": "(1,)", "retries": 0, "eta": None}
    d.send("worker-online", freq=2.0, active=0)
    d.send_fields("worker-online", {"freq": 2.0, "active": 0})
    d.send("task-received", **fields)
    d.send_fields("task-received", dict(fields))
    single_a, single_b, batch = read()
    assert single_a.delivery_info == single_b.delivery_info
    strip = ("clock", "timestamp")
    assert [[(k, v) for k, v in m.payload.items() if k not in strip]
            for m in (single_a, single_b)] == [
        [("hostname", "w1@h"), ("utcoffset", single_a.payload["utcoffset"]),
         ("pid", os.getpid()), ("freq", 2.0), ("active", 0), ("type", "worker-online")]] * 2
    by_send, by_fields = batch.payload
    assert list(by_send) == list(by_fields) == [
        "hostname", "utcoffset", "pid", "clock", *fields, "timestamp", "type"]
    assert {k: v for k, v in by_send.items() if k not in strip} == {
        k: v for k, v in by_fields.items() if k not in strip}
    assert by_fields["clock"] == by_send["clock"] + 1


def test_sequence_numbers_count_events_per_node_name_and_survive_a_new_dispatcher(app, conn):
    read = drain(conn, app)
    name = f"seq-{uuid.uuid4().hex[:8]}@h"
    d = EventDispatcher(conn, hostname=name, app=app, buffer_group=["task"], buffer_limit=3)
    d.send("worker-online")
    for i in range(3):  # one task.multi message of 3 events
        d.send("task-started", uuid=str(i))
    real, d.producer = d.producer, FailingProducer()
    d.send("worker-heartbeat")  # fails: buffered, and its number not spent
    d.producer = real
    d.flush()
    again = EventDispatcher(conn, hostname=name, app=app)  # a worker's new dispatcher
    again.send("worker-heartbeat")
    numbers = [read_sequence(m.headers) for m in read()]
    assert [seq for _, seq in numbers] == [0, 1, 4, 5]
    assert len({sender for sender, _ in numbers}) == 1


def test_disabled_and_filtered_sends_are_not_published(app, conn):
    read = drain(conn, app)
    d = EventDispatcher(conn, app=app, enabled=False)
    assert d.send("worker-online") is None
    d.enable()
    d.groups = {"worker"}
    d.send("task-received", uuid="x")
    d.send("worker-heartbeat")
    assert [m.payload["type"] for m in read()] == ["worker-heartbeat"]


def test_blind_event_has_null_clock(app, conn):
    read = drain(conn, app)
    EventDispatcher(conn, app=app).send("task-sent", blind=True, uuid="u")
    assert read()[0].payload["clock"] is None


def test_buffer_group_batches_into_multi(app, conn):
    read = drain(conn, app)
    scheduled = []
    d = EventDispatcher(conn, app=app, buffer_group=["task"], buffer_limit=3,
                        on_send_buffered=lambda: scheduled.append(1))
    d.send("task-received", uuid="a")
    d.send("task-started", uuid="a")
    assert read() == [] and len(scheduled) == 2
    d.send("task-succeeded", uuid="a")  # reaches the limit: one batch
    (message,) = read()
    assert message.delivery_info["routing_key"] == "task.multi"
    assert [e["type"] for e in message.payload] == ["task-received", "task-started",
                                                    "task-succeeded"]
    clocks = [e["clock"] for e in message.payload]
    assert clocks == sorted(clocks) and len(set(clocks)) == 3
    d.send("task-failed", uuid="b")
    d.flush()
    assert [len(m.payload) for m in read()] == [1]


def test_a_batched_event_keeps_the_clock_and_time_it_was_sent_with(app, conn, monkeypatch):
    """Events of plain values are built when their batch goes, one that holds a list
    when it is sent: each keeps its own clock, time and field order."""
    read = drain(conn, app)
    d = EventDispatcher(conn, hostname="w1@h", app=app, buffer_group=["task"])
    times = iter([100.0, 200.0, 300.0, 400.0, 500.0])
    monkeypatch.setattr("time.time", lambda: next(times))
    d.send("task-received", uuid="a", retries=0, eta=None)  # plain: built with the batch
    d.send("task-started", uuid="a", pids=[1, 2])  # a list: built now
    d.send("task-succeeded", uuid="a", runtime=0.5, timestamp=7.5)
    d.flush()
    (message,) = read()
    received, started, succeeded = message.payload
    assert [received["clock"], started["clock"]] == [succeeded["clock"] - 2,
                                                     succeeded["clock"] - 1]
    assert [received["timestamp"], started["timestamp"], succeeded["timestamp"]] == [
        100.0, 200.0, 7.5]
    assert list(received) == ["hostname", "utcoffset", "pid", "clock", "uuid", "retries",
                              "eta", "timestamp", "type"]
    assert list(succeeded) == ["hostname", "utcoffset", "pid", "clock", "uuid", "runtime",
                               "timestamp", "type"]
    assert received["hostname"] == "w1@h"
    assert started["pids"] == [1, 2] and received["pid"] == os.getpid()


def test_events_carried_to_another_dispatcher_keep_their_sender(app, conn):
    read = drain(conn, app)
    old = EventDispatcher(conn, hostname="old@h", app=app, buffer_group=["task"])
    old.send("task-received", uuid="a")
    new = EventDispatcher(conn, hostname="new@h", app=app, buffer_group=["task"])
    new.send("task-received", uuid="b")
    new.extend_buffer(old)
    new.flush()
    (message,) = read()
    assert [(e["uuid"], e["hostname"]) for e in message.payload] == [("b", "new@h"),
                                                                      ("a", "old@h")]


def test_failed_sends_are_buffered_then_flushed(app, conn):
    read = drain(conn, app)
    d = EventDispatcher(conn, app=app)
    good = d.producer
    d.producer = FailingProducer()
    d.send("worker-heartbeat")
    d.send("worker-heartbeat")
    assert d.buffered == 2 and read() == []
    d.flush()  # still failing: kept
    assert d.buffered == 2
    d.producer = good
    d.flush()
    assert len(read()) == 2 and d.buffered == 0


def test_outbound_buffer_is_bounded_and_drops_oldest(app, conn):
    read = drain(conn, app)
    d = EventDispatcher(conn, app=app, outbound_limit=3)
    good = d.producer
    d.producer = FailingProducer()
    for i in range(5):
        d.send("custom-tick", n=i)
    assert d.stats["dropped_overflow"] == 2
    d.producer = good
    d.flush()
    assert [m.payload["n"] for m in read()] == [2, 3, 4]


def test_no_buffering_reraises(app, conn):
    d = EventDispatcher(conn, app=app, buffer_while_offline=False)
    d.producer = FailingProducer()
    with pytest.raises(OperationalError):
        d.send("worker-heartbeat")


def test_poison_event_is_dropped_not_rebuffered(app, conn, caplog):
    read = drain(conn, app)
    d = EventDispatcher(conn, app=app)
    d.send("custom-bad", payload=object())
    assert d.stats["dropped_poison"] == 1 and d.buffered == 0
    d.flush()
    d.send("custom-good", n=1)
    assert [m.payload["type"] for m in read()] == ["custom-good"]
    assert "cannot be serialised" in caplog.text


def test_poison_event_inside_a_batch_does_not_block_the_group(app, conn):
    d = EventDispatcher(conn, app=app, buffer_group=["task"])
    d.send("task-received", uuid="a", args=object())
    d.flush()
    assert d.buffered == 0 and d.stats["dropped_poison"] == 1


def test_a_poison_event_is_dropped_alone_and_its_batch_goes(app, conn):
    read = drain(conn, app)
    d = EventDispatcher(conn, app=app, buffer_group=["task"])
    d.send("task-received", uuid="a")
    d.send("task-started", uuid="a", bad=object())
    d.send("task-succeeded", uuid="a", result="3")
    assert d.buffered == 2 and d.stats["dropped_poison"] == 1
    d.flush()
    (batch,) = read()
    assert [e["type"] for e in batch.payload] == ["task-received", "task-succeeded"]
    assert d.stats["sent"] == 2


def test_a_json_batch_carried_to_another_serializer_is_sent_as_events(app, conn):
    read = drain(conn, app, accept=("json", "pickle"))
    old = EventDispatcher(conn, app=app, buffer_group=["task"])
    old.send("task-received", uuid="a")
    new = EventDispatcher(conn, app=app, buffer_group=["task"], serializer="pickle")
    new.extend_buffer(old)
    new.flush()
    (batch,) = read()
    assert batch.content_type == "application/x-python-serialize"
    assert [e["uuid"] for e in batch.payload] == ["a"]


def test_a_failed_json_batch_carried_to_another_serializer_is_sent_as_events(app, conn):
    read = drain(conn, app, accept=("json", "pickle"))
    old = EventDispatcher(conn, app=app, buffer_group=["task"])
    good = old.producer
    old.send("task-received", uuid="a")
    old.send("task-started", uuid="a")
    old.producer = FailingProducer()
    old.flush()  # the batch waits in the outbound buffer, as its JSON texts
    assert old._outbound_buffer[0][1] == "task.multi"
    old.producer = good
    new = EventDispatcher(conn, app=app, buffer_group=["task"], serializer="pickle")
    new.extend_buffer(old)
    new.flush()
    (batch,) = read()
    assert batch.content_type == "application/x-python-serialize"
    assert [e["type"] for e in batch.payload] == ["task-received", "task-started"]


def test_failed_group_flush_becomes_one_outbound_multi(app, conn):
    read = drain(conn, app)
    d = EventDispatcher(conn, app=app, buffer_group=["task"])
    good = d.producer
    d.send("task-received", uuid="a")
    d.producer = FailingProducer()
    d.flush()
    assert d._outbound_buffer[0][1] == "task.multi"
    d.producer = good
    d.flush()
    (message,) = read()
    assert message.delivery_info["routing_key"] == "task.multi"


def test_extend_buffer_carries_group_buffers(app, conn):
    read = drain(conn, app)
    old = EventDispatcher(conn, app=app, buffer_group=["task"])
    old.send("task-received", uuid="a")
    old.producer = FailingProducer()
    old.send("worker-heartbeat")
    new = EventDispatcher(conn, app=app, buffer_group=["task"])
    new.extend_buffer(old)
    assert old.buffered == 0 and new.buffered == 2
    new.flush()
    keys = sorted(m.delivery_info["routing_key"] for m in read())
    assert keys == ["task.multi", "worker.heartbeat"]


def test_enable_disable_callbacks_and_close(app, conn):
    d = EventDispatcher(conn, app=app, enabled=False)
    seen = []
    d.on_enabled.add(lambda: seen.append("on"))
    d.on_disabled.add(lambda: seen.append("off"))
    d.enable()
    d.disable()
    d.disable()
    assert seen == ["on", "off"]
    assert d.producer is None and d.publisher is None
    with EventDispatcher(conn, app=app) as d2:
        assert d2.producer is not None
    assert d2.producer is None and d2._closed
    assert d2.send("worker-heartbeat") is None
    assert d2.stats["dropped_closed"] == 1


def test_publish_uses_callers_producer_even_when_disabled(app, conn):
    read = drain(conn, app)
    d = EventDispatcher(conn, app=app, enabled=False)
    from kombu import Producer

    d.publish("task-sent", {"uuid": "u"}, Producer(conn.default_channel))
    assert read()[0].delivery_info["routing_key"] == "task.sent"


def test_only_a_channel_gives_the_connection(app, conn):
    channel = conn.channel()
    d = EventDispatcher(channel=channel, app=app)
    assert d.connection is conn


def test_threads_share_one_dispatcher_safely(app, conn):
    read = drain(conn, app)
    d = EventDispatcher(conn, app=app, buffer_group=["task"], buffer_limit=7)

    def worker(n):
        for i in range(200):
            d.send("task-started", uuid=f"{n}-{i}")
            if i % 50 == 0:
                d.flush()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    d.flush()
    events = [e for m in read() for e in m.payload]
    assert len(events) == 800
    assert len({e["uuid"] for e in events}) == 800
    assert len({e["clock"] for e in events}) == 800


def test_sql_transport_is_disabled(app):
    class FakeTransport:
        driver_type = "sql"

    class FakeConn:
        transport = FakeTransport()

    assert EventDispatcher(FakeConn(), app=app).enabled is False


def test_redis_uses_fanout_and_others_topic():
    from tidings.transport import get_exchange

    assert get_exchange(Connection("redis://localhost/0")).type == "fanout"
    assert get_exchange(Connection("amqp://localhost//")).type == "topic"
    ex = get_exchange(Connection("memory://"), "custom")
    assert (ex.name, ex.durable, ex.auto_delete) == ("custom", True, False)


def _wait_for_messages(read, timeout=3.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = read()
        if got:
            return got, time.monotonic()
        time.sleep(0.01)
    return [], time.monotonic()


def test_adaptive_batching_sends_at_once_when_idle_and_batches_under_load(app, conn):
    import time

    read = drain(conn, app)
    d = EventDispatcher(conn, app=app, buffer_group=["task"], max_delay=0.3)
    d.send("task-received", uuid="a")  # nothing sent lately: at once, a batch of one
    (first,) = read()
    assert first.delivery_info["routing_key"] == "task.multi"
    assert [e["type"] for e in first.payload] == ["task-received"]
    buffered_at = time.monotonic()
    for type_ in ("task-started", "task-succeeded", "task-received"):
        d.send(type_, uuid="a")  # a batch was just sent: these wait for one another
    assert read() == [] and d.buffered == 3
    (batch,), arrived = _wait_for_messages(read)  # no further send: the timer sends them
    assert [e["type"] for e in batch.payload] == ["task-started", "task-succeeded",
                                                  "task-received"]
    assert 0.25 <= arrived - buffered_at < 2.0
    assert d.buffered == 0
    d.close()


def test_adaptive_batching_still_sends_full_batches_at_once(app, conn):
    read = drain(conn, app)
    d = EventDispatcher(conn, app=app, buffer_group=["task"], buffer_limit=4, max_delay=5.0)
    for i in range(9):
        d.send("task-started", uuid=str(i))
    # the first at once (idle), then two full batches of 4; nothing is waiting for 5 s
    assert [len(m.payload) for m in read()] == [1, 4, 4]
    d.close()


def test_closing_an_adaptive_dispatcher_ends_its_timer(app, conn):
    d = EventDispatcher(conn, app=app, buffer_group=["task"], max_delay=0.05)
    d.send("task-started", uuid="a")
    d.send("task-started", uuid="b")  # buffered: the timer thread is started
    timer = next(t for t in threading.enumerate() if t.name.startswith("events-batch-timer"))
    d.close()
    timer.join(2)
    assert not timer.is_alive()


def test_the_timer_of_a_busy_sender_wakes_up_rarely_and_still_sends_its_last_batch(
        app, conn):
    import time

    from tidings.events.dispatcher import TIMER_PATIENCE_MAX

    read = drain(conn, app)
    d = EventDispatcher(conn, app=app, buffer_group=["task"], buffer_limit=1000,
                        max_delay=0.005)
    turns = []
    timer_turn = d.timer_turn
    d.timer_turn = lambda: turns.append(time.monotonic()) or timer_turn()
    sent, deadline = 0, time.monotonic() + 0.6
    while time.monotonic() < deadline:  # a steady sender: it publishes its own batches
        d.send("task-started", uuid=str(sent))
        sent += 1
        time.sleep(0.001)
    last_sent = time.monotonic()
    turns_while_sending = len(turns)
    # the sender stopped: its last batch goes by the timer, within its patience
    while d.buffered and time.monotonic() < last_sent + 3:
        time.sleep(0.001)
    assert d.buffered == 0
    assert time.monotonic() - last_sent < TIMER_PATIENCE_MAX + 0.005 + 0.5
    batches = [len(m.payload) for m in read()]
    assert sum(batches) == sent
    # once per batch would be one wake-up every 5 ms; coming back later each time,
    # the timer looked at most every TIMER_PATIENCE_MAX (plus its first doublings)
    assert len(batches) > 40
    assert turns_while_sending <= 0.6 / TIMER_PATIENCE_MAX + 8, (turns_while_sending,
                                                                  len(batches))
    d.close()


def test_events_carried_to_an_adaptive_dispatcher_are_sent_by_its_timer(app, conn):
    read = drain(conn, app)
    old = EventDispatcher(conn, app=app, buffer_group=["task"])  # Celery's batching
    old.send("task-started", uuid="a")
    new = EventDispatcher(conn, app=app, buffer_group=["task"], max_delay=0.05)
    new.extend_buffer(old)
    (batch,), _ = _wait_for_messages(read)
    assert [e["uuid"] for e in batch.payload] == ["a"]
    new.close()


def test_a_busy_senders_delay_doubles_to_max_window_and_idling_brings_it_back(app, conn):
    import time

    read = drain(conn, app)
    d = EventDispatcher(conn, app=app, buffer_group=["task"], buffer_limit=1000,
                        max_delay=0.01, max_window=0.04, batch_timer=False)
    d.send("task-received", uuid="0")  # nothing sent lately: at once
    sent, windows = 1, []
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # a steady sender that never says it idles
        d.send("task-started", uuid=str(sent))
        sent += 1
        d.flush_due()
        windows.append(d.window)
        time.sleep(0.001)
    assert windows[0] == 0.01 and windows[-1] == 0.04
    assert sorted(set(windows)) == [0.01, 0.02, 0.04]  # doubled, never past the cap
    batches = [len(m.payload) for m in read()]
    assert batches[0] == 1 and max(batches) >= 2 * batches[1]  # longer waits, bigger batches
    d.flush_due(idle=True)  # the owner has no work waiting: back to the short delay
    assert d.window == 0.01
    d.send("task-started", uuid=str(sent))
    sent += 1
    d.flush_idle()  # about to wait for work: everything goes
    assert d.buffered == 0
    assert sum(batches) + sum(len(m.payload) for m in read()) == sent
    d.close()


def test_a_timer_driven_sender_keeps_its_delay(app, conn):
    import time

    d = EventDispatcher(conn, app=app, buffer_group=["task"], max_delay=0.005,
                        max_window=0.1)
    for i in range(300):
        d.send("task-started", uuid=str(i))
        time.sleep(0.001)
    assert d.window == 0.005  # no owner to say when it idles: the delay never grows
    d.close()


def test_without_max_window_the_delay_never_grows(app, conn):
    import time

    d = EventDispatcher(conn, app=app, buffer_group=["task"], max_delay=0.005,
                        batch_timer=False)
    for i in range(500):
        d.send("task-started", uuid=str(i))
        if i % 20 == 0:
            time.sleep(0.001)
        d.flush_due()
    assert d.window == 0.005
    d.close()
