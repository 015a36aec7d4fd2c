"""Fuzzing State: random interleavings and duplicates of real task lifecycles.

Properties: a task's final state is the one of highest precedence among its
events whatever the arrival order; applying events twice changes nothing;
the memory bounds hold; no event key reaches an internal attribute; the
indexes agree with ``tasks``.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.scale import scaled
from tests.fuzz.strategies import EXTRA_KEYS, plain
from tidings.events.state import State, Task, Worker
from tidings.protocol.events import EVENT_TYPES
from tidings.protocol.states import precedence

TERMINAL = ("task-succeeded", "task-failed", "task-revoked", "task-rejected")
FIELDS = ("state", "name", "args", "kwargs", "result", "exception", "retries", "root_id",
          "parent_id")


@st.composite
def lifecycle(draw, uuid: str, start_clock: int, retry: bool = False):
    """One task's events in the order a worker sends them (with a retry if asked)."""
    name = draw(st.sampled_from(["proj.add", "proj.mul", "proj.io"]))
    host = draw(st.sampled_from(["w1@h", "w2@h", "w3@h"]))
    types = ["task-sent", "task-received", "task-started"]
    if retry:
        types += ["task-retried", "task-received", "task-started"]
    types.append(draw(st.sampled_from(TERMINAL)))
    types = types[:draw(st.integers(min_value=1, max_value=len(types)))]
    events = []
    for i, type_ in enumerate(types):
        event = {"hostname": "client@h" if type_ == "task-sent" else host, "utcoffset": 0,
                 "pid": 1, "clock": start_clock + i, "uuid": uuid,
                 "timestamp": 1_700_000_000.0 + start_clock + i, "type": type_}
        if type_ in ("task-sent", "task-received"):
            event.update(name=name, args="(1, 2)", kwargs="{}", retries=types[:i].count(
                "task-retried"), root_id=uuid, parent_id=None, eta=None, expires=None)
        elif type_ == "task-succeeded":
            event.update(result="3", runtime=0.01)
        elif type_ in ("task-failed", "task-retried"):
            event.update(exception="ValueError('x')", traceback="Traceback ...")
        elif type_ == "task-revoked":
            event.update(terminated=False, signum=None, expired=False)
        elif type_ == "task-rejected":
            event.update(requeue=False)
        events.append(event)
    return events


@st.composite
def cluster_events(draw, retries: bool = False):
    n = draw(st.integers(min_value=1, max_value=12))
    return [draw(lifecycle(f"task-{i}", i * 10, retries and draw(st.booleans())))
            for i in range(n)]


def applied(events, **kwargs) -> State:
    state = State(**kwargs)
    for event in events:
        state.event(dict(event))
    return state


def fields(state: State) -> dict:
    return {uuid: {f: getattr(t, f) for f in FIELDS} for uuid, t in state.tasks.items()}


@scaled(1500)
@given(tasks=cluster_events(), data=st.data())
def test_final_state_does_not_depend_on_arrival_order_or_duplicates(tasks, data):
    in_order = [e for task in tasks for e in task]
    shuffled = data.draw(st.permutations(in_order))
    duplicates = data.draw(st.lists(st.sampled_from(in_order), max_size=10))
    mixed = shuffled + duplicates
    mixed = data.draw(st.permutations(mixed))
    a, b = applied(in_order), applied(mixed)
    for task in tasks:
        uuid = task[0]["uuid"]
        best = min((EVENT_TYPES[e["type"]].state for e in task), key=precedence)
        assert a.tasks[uuid].state == best
        assert b.tasks[uuid].state == best, [e["type"] for e in mixed if e["uuid"] == uuid]
        assert b.tasks[uuid].name == a.tasks[uuid].name
    assert fields(b) == fields(a)
    twice = applied(in_order + in_order)
    assert fields(twice) == fields(a)  # applying an event again changes nothing


@scaled(700)
@given(tasks=cluster_events(retries=True), data=st.data())
def test_retries_in_order_and_duplicates(tasks, data):
    """RETRY stands outside the precedence (Celery's rule: a retried task goes back to
    RECEIVED and STARTED), so with retries only the order a worker sends is checked,
    with duplicates of any of its events."""
    in_order = [e for task in tasks for e in task]
    a = applied(in_order)
    for task in tasks:
        assert a.tasks[task[0]["uuid"]].state == EVENT_TYPES[task[-1]["type"]].state
    replayed = [e for e in in_order for _ in range(data.draw(st.integers(1, 2)))]
    assert fields(applied(replayed)) == fields(a)


class _AlwaysFull(dict):
    """A setter cache that is always full: every event of a class given it goes key
    by key, the reference the generated setters must agree with."""

    def __len__(self) -> int:
        return 1 << 30

    def get(self, key, default=None):
        return default

    def __getitem__(self, key):
        raise KeyError(key)


class KeyByKey(Task):
    __slots__ = ()


KeyByKey._keys.setters = _AlwaysFull()
KeyByKey._keys.late = _AlwaysFull()
#: Keys events may carry beside their type's: custom ones, fields of other types,
#: and the fields most tasks leave at ``None`` (what a setter stores differently).
#: Not the clock, time or sender, whose classes the receiver checks before a State.
ODD_KEYS = ("x-custom", "queue", "eta", "expires", "exception", "traceback", "result",
            "runtime", "name", "retries", "root_id", "_keys", "event")


@scaled(300)
@given(tasks=cluster_events(retries=True), data=st.data())
def test_generated_setters_do_what_a_loop_over_the_keys_does(tasks, data):
    """In order and late (a state already passed, its merge rule), with odd keys and
    ``None`` values: the same fields, in slots and in ``__dict__``, either way."""
    events = []
    for event in (e for task in tasks for e in task):
        extra = data.draw(st.dictionaries(st.sampled_from(ODD_KEYS), plain, max_size=4))
        events.append({**event, **extra, "type": event["type"], "uuid": event["uuid"]})
    events = data.draw(st.permutations(events))
    generated, loop = State(), State()
    loop.Task = KeyByKey
    for event in events:
        generated.event(dict(event))
        loop.event(dict(event))
    assert set(generated.tasks) == set(loop.tasks)
    for uuid, task in generated.tasks.items():
        other = loop.tasks[uuid]
        assert task.as_dict() == other.as_dict(), uuid
        assert vars(task) == vars(other), uuid


@scaled(800)
@given(tasks=cluster_events(), max_tasks=st.integers(min_value=1, max_value=8),
       max_workers=st.integers(min_value=1, max_value=3))
def test_bounds_and_indexes(tasks, max_tasks, max_workers):
    state = State(max_tasks_in_memory=max_tasks, max_workers_in_memory=max_workers)
    for i, event in enumerate(e for task in tasks for e in task):
        state.event(dict(event))
        if i % 3 == 0:
            state.event({"hostname": f"w{i}@h", "utcoffset": 0, "pid": 2, "clock": i,
                         "freq": 2.0, "active": 0, "processed": i, "loadavg": [0, 0, 0],
                         "sw_ident": "x", "sw_ver": "1", "sw_sys": "y",
                         "timestamp": 1_700_000_000.0 + i, "type": "worker-heartbeat"})
        assert len(state.tasks) <= max_tasks
        assert len(state.workers) <= max_workers
    by_time = {uuid for uuid, _ in state.tasks_by_time()}
    assert by_time == set(state.tasks)
    assert [u for u, _ in state.tasks_by_time(limit=2)] == \
        [u for u, _ in state.tasks_by_time()][:2]
    for name in state.task_types():
        for uuid, task in state.tasks_by_type(name):
            assert state.tasks[uuid] is task and task.name == name
    for uuid, task in state.tasks.items():
        if task.name:
            assert uuid in {u for u, _ in state.tasks_by_type(task.name)}
        if task.worker is not None:
            assert uuid in {u for u, _ in state.tasks_by_worker(task.worker.hostname)}


@scaled(1500)
@given(type_=st.sampled_from(sorted(EVENT_TYPES)),
       extra=st.dictionaries(st.sampled_from(EXTRA_KEYS) | st.text(max_size=12), plain,
                             max_size=6))
def test_no_event_key_reaches_an_internal_attribute(type_, extra):
    state = State()
    event = {"hostname": "w@h", "utcoffset": 0, "pid": 1, "clock": 1, "uuid": "u",
             "timestamp": 1_700_000_000.0, "type": type_}
    for key, value in extra.items():
        event.setdefault(key, value)
    state.event(event)
    for obj, cls in ((state.tasks.get("u"), Task), (state.workers.get("w@h"), Worker)):
        if obj is None:
            continue
        assert type(obj) is cls
        for key in extra:
            if key.startswith("_") or not key.isidentifier():
                assert key not in getattr(obj, "__dict__", {}), key
            elif hasattr(cls, key) and callable(getattr(cls, key)):
                assert callable(getattr(obj, key)), key  # a method stays a method
    state.event({**event, "clock": 2})  # and the state still works
    assert isinstance(state.tasks, dict)
