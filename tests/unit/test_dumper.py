import io
import json
import re

from tests.conftest import FIXTURES
from tidings.events.dumper import Dumper, EventFilter
from tidings.events.log import replay


def test_replaying_the_corpus_prints_what_celery_printed(corpus_rabbitmq):
    out = io.StringIO()
    dumper = Dumper(out)
    stats = replay(FIXTURES / "events-rabbitmq.jsonl", dumper.on_event, clock=_clock())
    assert stats.events == 107 and stats.skipped == 0
    dumper.flush()  # a dump to a file or a pipe is written in batches of lines
    mine = out.getvalue().splitlines()
    celery = (FIXTURES / "dump-output.txt").read_text().splitlines()[1:]  # minus the banner
    mask = re.compile(r"local_received=[0-9.]+")
    assert len(mine) == len(celery) == 140
    for ours, theirs in zip(mine, celery):
        # only the receive time differs: it is the dumper's own clock
        assert mask.sub("local_received=?", ours) == mask.sub("local_received=?", theirs)


def _clock():
    from tidings import App

    return App(broker="memory://").clock


def test_celery_edge_cases_of_the_text_format():
    out = io.StringIO()
    d = Dumper(out)
    d.on_event({"type": "task-started", "uuid": "U", "hostname": "w1@h", "timestamp": 1.0})
    d.on_event({"type": "worker-offline", "hostname": "w1@h", "timestamp": 1700000002.5})
    d.on_event({"type": "custom-my-event", "hostname": "h", "timestamp": 0, "x": 1})
    d.on_event({"type": "task-failed"})  # incomplete: printed, never a KeyError
    d.flush()
    assert out.getvalue().splitlines() == [
        "w1@h [1970-01-01 00:00:01+00:00] task started  ",
        "w1@h [2023-11-14 22:13:22.500000+00:00] shutdown ",
        "h [1970-01-01 00:00:00+00:00] custom my event: x=1",
        "None [None] task failed  ",
    ]


def test_json_lines_and_filters():
    out = io.StringIO()
    d = Dumper(out, json_lines=True, event_filter=EventFilter(
        types=["task-*"], hostnames=["w1@*"], task_names=["proj.a*"]))
    events = [
        {"type": "task-received", "uuid": "1", "name": "proj.add", "hostname": "w1@h"},
        {"type": "task-succeeded", "uuid": "1", "hostname": "w1@h", "result": "3"},
        {"type": "task-received", "uuid": "2", "name": "proj.mul", "hostname": "w1@h"},
        {"type": "task-succeeded", "uuid": "2", "hostname": "w1@h"},
        {"type": "task-received", "uuid": "3", "name": "proj.add", "hostname": "w2@h"},
        {"type": "worker-heartbeat", "hostname": "w1@h"},
    ]
    for e in events:
        d.on_event(e)
    d.flush()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["type"], e["uuid"]) for e in lines] == [("task-received", "1"),
                                                       ("task-succeeded", "1")]


def test_output_is_buffered_unless_a_terminal():
    class Out(io.StringIO):
        flushes = 0

        def flush(self):
            self.flushes += 1

    out = Out()
    d = Dumper(out)
    assert not d.line_buffered
    for i in range(100):
        d.on_event({"type": "worker-heartbeat", "hostname": "h", "n": i})
    assert out.flushes == 0 and out.getvalue() == ""  # gathered, not yet written
    d.tick()  # a drain of the broker ended: the lines go out together, unflushed
    assert out.getvalue().count("\n") == 100 and out.flushes == 0
    d._last_flush -= 2
    d.tick()
    assert out.flushes == 1
    for i in range(1200):  # gathered lines are bounded: written every PENDING_LINES
        d.on_event({"type": "worker-heartbeat", "hostname": "h", "n": i})
    assert out.getvalue().count("\n") == 100 + 1024
    tty = Out()
    tty.isatty = lambda: True
    d = Dumper(tty)
    d.on_event({"type": "worker-heartbeat", "hostname": "h"})
    assert tty.flushes == 1


def test_replay_skips_bad_lines(tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join([
        json.dumps({"type": "worker-online", "hostname": "h", "timestamp": 1.0, "clock": 1}),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"type": "worker-heartbeat", "hostname": "h", "clock": None}),
        json.dumps({"type": "worker-offline", "hostname": "h", "timestamp": 3.0, "clock": 2}),
    ]) + "\n")
    seen = []
    stats = replay(path, seen.append)
    assert [e["type"] for e in seen] == ["worker-online", "worker-offline"]
    assert dict(stats.errors) == {"not-json": 1, "not-an-object": 1, "null-clock": 1}
    assert "skipped 3" in str(stats)


# -- the fast paths say what the straightforward code says -------------------------------

from datetime import datetime, timezone  # noqa: E402

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tidings.events.dumper import format_timestamp  # noqa: E402
from tidings.protocol.events import EVENT_TYPES, humanize_type  # noqa: E402

_TIMES = st.one_of(
    st.floats(min_value=0, max_value=253_402_300_799, allow_nan=False),
    st.integers(min_value=0, max_value=253_402_300_799),
    # fractions that round up to the next second, and exact half microseconds
    st.integers(min_value=0, max_value=2**34).map(lambda s: s + 0.9999996),
    st.integers(min_value=0, max_value=2**20).map(lambda s: s + 0.0000005),
    st.sampled_from([-1.0, 1e300, float("nan"), float("inf"), True, "soon", None, [1]]),
)


@given(_TIMES)
def test_timestamps_read_as_datetime_prints_them(ts):
    try:
        expected = str(datetime.fromtimestamp(ts, timezone.utc))
    except (TypeError, ValueError, OverflowError, OSError):
        expected = str(ts)
    assert format_timestamp(ts) == expected
    assert format_timestamp(ts) == expected  # and again, from the cache


def _reference(event, labels):
    """The dump line, written the plain way (copy, pop, sort as text)."""
    event = dict(event)
    timestamp = format_timestamp(event.pop("timestamp", None))
    type_ = str(event.pop("type", "")).lower()
    hostname = event.pop("hostname", None)
    label = None
    if type_.startswith("task-"):
        uuid = event.pop("uuid", None)
        if type_ in ("task-received", "task-sent"):
            label = (f"{event.pop('name', None)}({uuid}) "
                     f"args={event.pop('args', None)} kwargs={event.pop('kwargs', None)}")
            labels[uuid] = label
        else:
            label = labels.get(uuid, "")
    fields = ", ".join(f"{key}={event[key]}" for key in sorted(event, key=str))
    sep = ":" if fields else ""
    head = f"{hostname} [{timestamp}] {humanize_type(type_)}{sep}"
    return f"{head} {label} {fields}" if label is not None else f"{head} {fields}"


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                    st.lists(st.integers(), max_size=3))
_KEYS = st.sampled_from(["hostname", "timestamp", "uuid", "name", "args", "kwargs", "clock",
                         "result", "local_received", "Type", "a", "z", "", "{b}", "c}{",
                         "%s", "a%", 1, 2.5])
_EVENTS = st.builds(
    lambda type_, fields, ts, uuid: {**fields, "type": type_, "timestamp": ts, "uuid": uuid},
    st.one_of(st.sampled_from(sorted(EVENT_TYPES)), st.text(max_size=6)),
    st.dictionaries(_KEYS, _VALUES, max_size=6), _TIMES, st.sampled_from(["a", "b"]))


@given(st.lists(_EVENTS, max_size=6))
def test_dump_lines_are_the_plain_formatting(events):
    dumper, labels = Dumper(io.StringIO()), {}
    for event in events:
        assert dumper.format(event) == _reference(event, labels)


def test_a_receive_time_is_printed_as_it_is_now_whether_shared_or_not():
    dumper = Dumper(io.StringIO())
    shared = 1795600000.1234567
    first = {"hostname": "w", "timestamp": 1.0, "type": "worker-online", "local_received": shared}
    assert dumper.format(first).endswith(f"local_received={shared}")
    assert dumper.format(dict(first)).endswith(f"local_received={shared}")  # the same float
    changing = [1.5]
    odd = {**first, "local_received": changing}
    assert dumper.format(odd).endswith("local_received=[1.5]")
    changing.append(2)  # the same object, printed as it is now
    assert dumper.format(odd).endswith("local_received=[1.5, 2]")
    assert dumper.format({**first, "local_received": None}).endswith("local_received=None")
