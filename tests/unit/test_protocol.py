import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.protocol import states
from tidings.protocol.events import (
    EVENT_TYPES,
    TASK_EVENT_TO_STATE,
    InvalidEvent,
    _check,
    build_event,
    group_from,
    humanize_type,
    multi_routing_key,
    routing_key_for,
    utcoffset,
    validate_event,
)


def test_every_celery_event_type_is_declared_once_with_its_group_and_state():
    assert set(EVENT_TYPES) == {
        "task-sent", "task-received", "task-started", "task-succeeded", "task-failed",
        "task-retried", "task-rejected", "task-revoked",
        "worker-online", "worker-heartbeat", "worker-offline",
    }
    assert TASK_EVENT_TO_STATE == {
        "sent": "PENDING", "received": "RECEIVED", "started": "STARTED",
        "succeeded": "SUCCESS", "failed": "FAILURE", "retried": "RETRY",
        "revoked": "REVOKED", "rejected": "REJECTED",
    }
    assert EVENT_TYPES["task-revoked"].fields == ("uuid", "terminated", "signum", "expired")
    assert EVENT_TYPES["worker-heartbeat"].group == "worker"


def test_fields_declared_match_the_recorded_celery_events(corpus_rabbitmq):
    envelope = {"hostname", "utcoffset", "pid", "clock", "timestamp", "type"}
    for message in corpus_rabbitmq:
        body = message["body"] if isinstance(message["body"], list) else [message["body"]]
        for event in body:
            declared = set(EVENT_TYPES[event["type"]].fields)
            specific = set(event) - envelope
            if event["type"] == "worker-heartbeat" and event["freq"] == 5:
                # the remote-control heartbeat carries only part of the fields
                assert specific <= declared
            else:
                assert specific == declared, event["type"]


def test_routing_keys_and_groups():
    assert routing_key_for("task-succeeded") == "task.succeeded"
    assert routing_key_for("custom-my-event") == "custom.my.event"
    assert multi_routing_key("task") == "task.multi"
    assert group_from("task-sent") == "task"
    assert group_from("custom-my-event") == "custom"
    assert group_from("foo") == "foo"


def test_human_types_follow_celery_dump_wording():
    assert humanize_type("worker-online") == "started"
    assert humanize_type("worker-offline") == "shutdown"
    assert humanize_type("worker-heartbeat") == "heartbeat"
    assert humanize_type("task-succeeded") == "task succeeded"


def test_envelope_key_order_is_celerys():
    event = build_event("task-succeeded", {"uuid": "u", "result": "4", "runtime": 0.1},
                        hostname="w@h", utcoffset=0.0, pid=7, clock=3, timestamp=12.5)
    assert list(event) == ["hostname", "utcoffset", "pid", "clock", "uuid", "result",
                           "runtime", "timestamp", "type"]
    assert event["type"] == "task-succeeded"


def test_caller_timestamp_is_kept_in_place():
    event = build_event("custom-x", {"timestamp": 5.0, "a": 1}, hostname="h", utcoffset=0.0,
                        pid=1, clock=1)
    assert event["timestamp"] == 5.0
    assert list(event)[-1] == "type"


def test_utcoffset_is_hours_west_of_utc(monkeypatch):
    import time

    from tidings.protocol import events

    monkeypatch.setattr(time, "timezone", -8 * 3600)
    monkeypatch.setattr(time, "daylight", 0)
    monkeypatch.setattr(events, "_offset_cache", [0.0, -1e9])
    assert utcoffset() == -8.0
    monkeypatch.setattr(time, "timezone", int(5.5 * 3600))
    assert utcoffset() == -8.0  # cached for a few seconds: it is read per event
    monkeypatch.setattr(events, "_offset_cache", [0.0, -1e9])
    assert utcoffset() == 5.5


def test_precedence_follows_celery_except_rejected():
    order = sorted(states.ALL_STATES, key=states.precedence)
    assert order == ["SUCCESS", "FAILURE", "REVOKED", "REJECTED", "STARTED", "RECEIVED",
                     "RETRY", "PENDING"]
    assert states.precedence("PROGRESS") == 2


@pytest.mark.parametrize(
    ("event", "cause"),
    [
        ("a string", "not-an-object"),
        (42, "not-an-object"),
        ({"hostname": "h"}, "missing-type"),
        ({"type": 5}, "bad-field-type"),
        ({"type": "worker-heartbeat", "clock": None}, "null-clock"),
        ({"type": "worker-heartbeat", "clock": "7"}, "bad-field-type"),
        ({"type": "worker-heartbeat", "timestamp": "yesterday"}, "bad-field-type"),
        ({"type": "worker-heartbeat", "active": "3"}, "bad-field-type"),
        ({"type": "worker-heartbeat", "hostname": ["h"]}, "bad-field-type"),
        ({"type": "task-started", "uuid": 12}, "bad-field-type"),
        ({"type": "task-started"}, "missing-field"),
        ({"type": "task-succeeded", "uuid": "u", "runtime": "fast"}, "bad-field-type"),
        ({"type": "task-received", "uuid": "u", "clock": True}, "bad-field-type"),
    ],
)
def test_invalid_events_name_their_cause(event, cause):
    with pytest.raises(InvalidEvent) as info:
        validate_event(event)
    assert info.value.cause == cause


def test_valid_events_pass(corpus_rabbitmq, corpus_redis):
    count = 0
    for message in corpus_rabbitmq + corpus_redis:
        body = json.loads(message["body_raw"])
        for event in body if isinstance(body, list) else [body]:
            validate_event(event)
            count += 1
    assert count == 107 + 62
    validate_event({"type": "task-sent", "uuid": "u", "clock": None})


_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(0, 2),
                    st.text(max_size=3), st.lists(st.integers(), max_size=2),
                    st.just({"a": 1}))
_types = st.sampled_from(["task-sent", "task-received", "task-succeeded", "worker-online",
                          "worker-heartbeat", "custom-thing"])
_text, _int, _number = st.text(max_size=3), st.integers(0, 9), st.floats(0, 2)
#: Each key's usual values (so that most events are valid and meet the cache), and
#: now and then anything at all.
_usual = {"type": _types, "hostname": _text, "uuid": _text, "name": _text,
          "clock": st.one_of(_int, st.none()), "pid": _int, "retries": _int,
          "active": _int, "timestamp": _number, "runtime": _number,
          "loadavg": st.lists(_number, max_size=3), "custom": _values, "args": _text}


@st.composite
def _events_of_few_layouts(draw):
    """Events over a handful of key layouts, so that most meet a layout seen before."""
    keys = st.sampled_from(sorted(_usual))
    layouts = draw(st.lists(st.lists(keys, unique=True, max_size=8), min_size=1, max_size=3))
    events = []
    for _ in range(draw(st.integers(1, 30))):
        event = {}
        for key in draw(st.sampled_from(layouts)):
            event[key] = draw(_values if draw(st.integers(0, 5)) == 0 else _usual[key])
        events.append(event)
    return events


def _outcome(check, event):
    try:
        check(event)
    except InvalidEvent as exc:
        return exc.cause
    return None


@settings(max_examples=300, deadline=None)
@given(_events_of_few_layouts())
def test_validation_remembered_by_layout_agrees_with_every_check(events):
    """The layout cache (valid class tuples per key layout) passes and refuses exactly
    what the field-by-field checks do, whatever came before."""
    for event in events:
        assert _outcome(validate_event, event) == _outcome(_check, event), event


def _stamp_one_by_one(events, clock, now):
    """The receive rule written with kombu's own clock operations, event by event."""
    for event in events:
        if event["type"] == "task-sent":
            event["clock"] = (clock.value or 1) - 1
            clock.adjust(event["clock"])
        elif event.get("clock") is None:
            event["clock"] = clock.forward()
        else:
            clock.adjust(event["clock"])
        event["local_received"] = now


_clocks = st.one_of(st.none(), st.integers(0, 2**70))


@settings(max_examples=300, deadline=None)
@given(start=st.integers(0, 2**70),
       batch=st.lists(st.tuples(st.sampled_from(["task-sent", "task-started", "worker-online"]),
                                st.one_of(st.just("absent"), _clocks)), max_size=12))
def test_a_batch_is_stamped_as_kombus_clock_would_one_event_at_a_time(start, batch):
    from tidings.protocol.clock import LamportClock, stamp_batch

    def events():
        out = []
        for type_, clock in batch:
            event = {"type": type_, "uuid": "u"}
            if clock != "absent" and (clock is not None or type_ == "task-sent"):
                event["clock"] = clock
            out.append(event)
        return out

    expected, got = events(), events()
    theirs, ours = LamportClock(start), LamportClock(start)
    _stamp_one_by_one(expected, theirs, 7.5)
    stamp_batch(got, ours, 7.5)
    assert got == expected
    assert ours.value == theirs.value
