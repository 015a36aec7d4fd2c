import threading
import time

import pytest

from tidings.events.snapshot import Polaroid
from tidings.events.state import State
from tidings.utils.rates import parse_rate
from tidings.utils.timer import Timer


def ev(type_, uuid, clock, **fields):
    now = time.time()
    return {"hostname": "w1@h", "clock": clock, "pid": 1, "utcoffset": 0.0, "uuid": uuid,
            **fields, "timestamp": now, "type": type_, "local_received": now}


class Recorder(Polaroid):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def on_shutter(self, state):
        self.seen.append({u: t.state for u, t in state.tasks.items()})


def test_parse_rate():
    assert parse_rate("10/m") == pytest.approx(10 / 60)
    assert parse_rate("100/s") == 100.0
    assert parse_rate("2/h") == pytest.approx(2 / 3600)
    assert parse_rate("5") == 5.0
    assert parse_rate(None) is None
    for bad in ("x/s", "10/d", "-1/s", "0"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_snapshot_is_a_consistent_copy():
    state = State()
    state.event(ev("task-received", "a", 1, name="n"))
    cam = Recorder(state, timer=Timer())
    cam.shutter()
    state.event(ev("task-succeeded", "a", 2))
    assert cam.seen == [{"a": "RECEIVED"}]
    cam.shutter()
    assert cam.seen[-1] == {"a": "SUCCESS"}


def test_only_changed_tasks_are_reported_and_copied():
    state = State()
    for i in range(5):
        state.event(ev("task-received", f"t{i}", i, name="n"))
    got = []

    class Changes(Polaroid):
        def on_shutter(self, snap):
            got.append(sorted(snap.changed_tasks))

    cam = Changes(state, timer=Timer())
    cam.shutter()
    state.event(ev("task-started", "t3", 10))
    cam.shutter()
    cam.shutter()
    assert got == [[f"t{i}" for i in range(5)], ["t3"], []]


def test_on_shutter_does_not_block_ingest():
    state = State()
    state.event(ev("task-received", "a", 1, name="n"))
    inside = threading.Event()
    release = threading.Event()

    class Slow(Polaroid):
        def on_shutter(self, snap):
            inside.set()
            release.wait(10)

    cam = Slow(state, timer=Timer())
    shot = threading.Thread(target=cam.shutter)
    shot.start()
    assert inside.wait(5)
    start = time.monotonic()
    for i in range(100):
        state.event(ev("task-received", f"b{i}", i + 2, name="n"))
    assert time.monotonic() - start < 1.0  # Celery would block here until release
    release.set()
    shot.join(5)
    assert len(state.tasks) == 101


def test_signals_are_per_camera():
    a, b = Polaroid(State(), timer=Timer()), Polaroid(State(), timer=Timer())
    calls = []
    a.shutter_signal.connect(lambda signal, sender: calls.append(("a", sender)))
    b.shutter()
    assert calls == []
    a.shutter()
    assert len(calls) == 1
    cleaned = []
    a.cleanup_signal.connect(lambda **kw: cleaned.append(kw["sender"]))
    a.cleanup()
    assert cleaned == [a.state]


def test_maxrate_limits_shots_but_not_the_final_one():
    cam = Recorder(State(), maxrate="1/h", timer=Timer())
    for _ in range(90):
        cam.shutter()
    assert cam.shots == 1
    cam._tref = cam.timer.call_repeatedly(100, cam.capture)
    cam.cancel()
    assert cam.shots == 2  # the final snapshot ignores the rate limit


def test_a_failing_camera_keeps_shooting():
    class Broken(Polaroid):
        def on_shutter(self, state):
            raise RuntimeError("disk full")

    cam = Broken(State(), freq=0.05)
    cam.install()
    time.sleep(0.4)
    cam.cancel(final=False)
    cam.timer.stop()
    assert cam.failed_shots >= 3 and cam.failed_shots == cam.shots


def test_install_and_cancel_with_timer():
    cam = Recorder(State(), freq=0.05)
    with cam:
        time.sleep(0.3)
    shots = cam.shots
    assert shots >= 3
    time.sleep(0.2)
    assert cam.shots == shots  # nothing after cancel
    cam.timer.stop()


def test_clear_after_empties_the_state():
    state = State()
    state.event(ev("task-received", "a", 1, name="n"))

    class Clearing(Recorder):
        clear_after = True

    cam = Clearing(state, timer=Timer())
    cam.shutter()
    assert cam.seen == [{"a": "RECEIVED"}] and len(state.tasks) == 1  # unfinished kept
    state.event(ev("task-succeeded", "a", 2))
    cam.shutter()
    assert cam.seen[-1] == {"a": "SUCCESS"} and len(state.tasks) == 0
