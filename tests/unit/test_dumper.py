import io
import json
import re

from tests.conftest import FIXTURES
from tidings.events.dumper import Dumper, EventFilter
from tidings.events.log import replay


def test_replaying_the_corpus_prints_what_celery_printed(corpus_rabbitmq):
    out = io.StringIO()
    stats = replay(FIXTURES / "events-rabbitmq.jsonl", Dumper(out).on_event,
                   clock=_clock())
    assert stats.events == 107 and stats.skipped == 0
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
    assert out.flushes == 0
    d._last_flush -= 2
    d.tick()
    assert out.flushes == 1
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
