"""Event sources: one pipeline, one filter, one status for every mode."""

import json
import threading

from tests.conftest import FIXTURES
from tidings import App
from tidings.events.dumper import EventFilter
from tidings.events.ingest import EventPipeline
from tidings.events.log import replay
from tidings.events.source import BrokerSource, ReplaySource, open_source
from tidings.transport import Link


def test_replay_source_applies_the_filter_and_reports_when_done():
    app = App(broker="memory://")
    source = open_source(app, FIXTURES / "events-rabbitmq.jsonl",
                         EventFilter(types=["task-failed", "task-revoked"]))
    assert isinstance(source, ReplaySource) and not source.live
    seen, statuses = [], []
    source.run(seen.append, threading.Event(), on_status=statuses.append)
    assert {e["type"] for e in seen} == {"task-failed", "task-revoked"}
    assert source.event_count == 107 and not source.errors  # all read, some kept
    assert [s.link for s in statuses] == [Link.STOPPED] and source.status.ok
    assert "replayed 107 events" in source.summary()


def test_a_source_without_filter_delivers_what_a_plain_replay_does():
    app = App(broker="memory://")
    plain: list[dict] = []
    replay(FIXTURES / "events-rabbitmq.jsonl", plain.append, clock=App().clock)
    through_source: list[dict] = []
    open_source(app, FIXTURES / "events-rabbitmq.jsonl").run(through_source.append,
                                                              threading.Event())
    strip = [{k: v for k, v in e.items() if k != "local_received"} for e in plain]
    assert strip == [{k: v for k, v in e.items() if k != "local_received"}
                     for e in through_source]


def test_a_broker_source_is_live_and_named_without_password():
    app = App(broker="amqp://guest:secret@127.0.0.1:1//")
    source = open_source(app)
    assert isinstance(source, BrokerSource) and source.live
    assert source.label == "amqp://guest:***@127.0.0.1:1//"


def test_pipeline_counts_each_cause_and_keeps_the_good_elements_of_a_batch():
    got = []
    pipeline = EventPipeline(App().clock, lambda t, e: got.append(t))
    pipeline.feed([{"type": "worker-online", "hostname": "h", "timestamp": 1.0, "clock": 3},
                   "nonsense",
                   {"type": "task-started", "hostname": "h", "timestamp": 1.0, "clock": 4},
                   {"type": "task-started", "uuid": "u", "hostname": "h", "timestamp": 1.0,
                    "clock": 5}])
    assert got == ["worker-online", "task-started"]
    assert dict(pipeline.errors) == {"not-an-object": 1, "missing-field": 1}
    assert (pipeline.event_count, pipeline.handled) == (2, 2)
    ok, _ = pipeline.decode("{broken", "line 1")
    assert not ok and pipeline.errors["not-json"] == 1


def test_a_failing_handler_is_counted_and_the_next_event_still_arrives():
    calls = []

    def handler(type_, event):
        calls.append(event["clock"])
        if event["clock"] == 1:
            raise RuntimeError("boom")

    pipeline = EventPipeline(App().clock, handler)
    for clock in (1, 2):
        pipeline.feed(json.loads(json.dumps(
            {"type": "worker-heartbeat", "hostname": "h", "timestamp": 1.0, "clock": clock})))
    assert calls == [1, 2] and pipeline.errors == {"handler-error": 1}
    assert pipeline.event_count == 2 and pipeline.handled == 1


def test_a_batch_shares_one_receive_time_and_a_failing_handler_loses_only_its_event():
    seen = []

    def handler(type_, event):
        seen.append((event["clock"], event["local_received"]))
        if event["clock"] == 3:
            raise RuntimeError("boom")

    times = iter([10.0, 20.0])
    clock = App().clock
    pipeline = EventPipeline(clock, handler)
    batch = [{"type": "worker-heartbeat", "hostname": "h", "timestamp": 1.0, "clock": c}
             for c in (2, 3, 4)]
    pipeline.feed(batch, now=lambda: next(times))
    assert seen == [(2, 10.0), (3, 10.0), (4, 10.0)]  # now() asked once for the batch
    assert clock.value == 5
    assert pipeline.errors == {"handler-error": 1}
    assert (pipeline.event_count, pipeline.handled) == (3, 2)
