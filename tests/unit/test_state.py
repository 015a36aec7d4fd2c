import copy
import gc
import pickle
import time
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.gc_counting import collections_counted
from tidings.events.state import State, Task, Worker, heartbeat_expires


def ev(type_, hostname="w1@h", clock=1, ts=None, local=None, **fields):
    now = time.time()
    return {"hostname": hostname, "utcoffset": 0.0, "pid": 11, "clock": clock, **fields,
            "timestamp": now if ts is None else ts, "type": type_,
            "local_received": now if local is None else local}


def task_flow(state, uuid, name="proj.add", worker="w1@h", clock=1, final="succeeded",
              ts=1000.0, **extra):
    state.event(ev("task-received", worker, clock, ts, uuid=uuid, name=name, args="(1,)",
                   kwargs="{}", retries=0, **extra))
    state.event(ev("task-started", worker, clock + 1, ts + 1, uuid=uuid))
    fields = {"result": "2", "runtime": 0.5} if final == "succeeded" else {
        "exception": "KeyError('x')", "traceback": "Traceback..."}
    state.event(ev(f"task-{final}", worker, clock + 2, ts + 2, uuid=uuid, **fields))


# -- Celery-compatible behaviour ----------------------------------------------------------


def test_task_states_and_timestamps():
    s = State()
    task_flow(s, "a")
    t = s.tasks["a"]
    assert t.state == "SUCCESS" and t.ready
    assert (t.received, t.started, t.succeeded) == (1000.0, 1001.0, 1002.0)
    assert t.timestamp == 1002.0 and t.result == "2" and t.runtime == 0.5
    assert t.worker.hostname == "w1@h" and t.name == "proj.add"
    assert s.task_count == 1 and s.event_count == 3
    assert repr(t) == "<Task: proj.add(a) SUCCESS clock:3>"


def test_merge_keeps_later_state_and_fills_data():
    s = State()
    s.event(ev("task-failed", clock=5, ts=10.0, uuid="a", exception="E()", traceback="tb"))
    s.event(ev("task-started", clock=4, ts=9.0, uuid="a"))
    s.event(ev("task-received", clock=3, ts=8.0, uuid="a", name="n", args="(1,)",
               kwargs="{}", hostname_extra="x"))
    t = s.tasks["a"]
    assert t.state == "FAILURE"
    assert t.name == "n" and t.args == "(1,)"
    assert t.started == 9.0 and t.received == 8.0
    s.event(ev("task-retried", clock=6, ts=11.0, uuid="a", exception="R()", traceback="tb"))
    assert t.state == "RETRY"


def test_custom_task_state_and_unknown_group():
    s = State()
    s.event(ev("task-received", uuid="a", name="n"))
    s.event(ev("task-progress", uuid="a", done=3))
    assert s.tasks["a"].state == "PROGRESS" and s.tasks["a"].done == 3
    assert s.event(ev("foo-bar")) is None
    assert s.event_count == 3


def test_worker_online_heartbeat_offline():
    joined, left = [], []
    s = State(on_node_join=joined.append, on_node_leave=left.append)
    (w, created), subject = s.event(ev("worker-online", freq=2.0, active=0, processed=0,
                                       loadavg=[0.1, 0.2, 0.3], sw_ident="py-celery"))
    assert created and subject == "online" and joined == [w]
    assert w.alive and list(s.alive_workers()) == [w] and w.status_string == "ONLINE"
    assert w.id == "w1@h.11"
    assert repr(w) == "<Worker: w1@h (ONLINE clock:1)"
    s.event(ev("worker-offline", clock=2))
    assert left == [w] and "w1@h" not in s.workers and not w.alive


def test_offline_without_leave_callback_keeps_the_worker():
    s = State()
    s.event(ev("worker-online", freq=2.0))
    s.event(ev("worker-offline"))
    w = s.workers["w1@h"]
    assert w.heartbeats == [] and not w.alive


def test_unknown_worker_leaving_is_not_stored():
    left = []
    s = State(on_node_leave=left.append)
    (w, created), subject = s.event(ev("worker-offline", hostname="ghost@h"))
    assert (w.hostname, created, subject) == ("ghost@h", False, "offline")
    assert left == [w] and "ghost@h" not in s.workers


def test_worker_event_without_times_is_counted_and_ignored():
    s = State(callback=lambda st, e: seen.append(e["type"]))
    seen = []
    assert s.event({"type": "worker-online", "hostname": "h"}) is None
    assert seen == ["worker-online"] and s.event_count == 1


def test_heartbeat_expiry_and_window():
    assert heartbeat_expires(Decimal("344313.37"), freq=60, expire_window=200) == \
        pytest.approx(344433.37)
    s = State()
    s.event(ev("worker-heartbeat", freq=2.0, ts=time.time() - 400, local=time.time() - 400))
    assert not s.workers["w1@h"].alive
    s.event(ev("worker-heartbeat", freq=2.0))
    assert s.workers["w1@h"].alive


def test_heartbeats_keep_four_newest_sorted():
    w = Worker("h")
    for t in (10.0, 12.0, 11.0, 13.0, 14.0, 15.0):
        w.event("heartbeat", t, t)
    assert w.heartbeats == [12.0, 13.0, 14.0, 15.0]


class _Warned:
    def __init__(self):
        self.drifts = []

    def warn(self, hostname, drift, local_received, timestamp):
        self.drifts.append(drift)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 2 * 10**9), st.floats(0, 1, exclude_max=True),
       st.integers(-19, 18), st.floats(0, 1, exclude_max=True),
       st.sampled_from([0.0, 1e-7, -1e-7]))
def test_drift_is_celerys_whole_seconds_near_the_limit_too(seconds, fraction, whole, part,
                                                           nudge):
    """A worker warns exactly when Celery's ``abs(int(local) - int(sent))`` passes the
    limit (times close enough apart skip that arithmetic)."""
    from tidings.protocol.events import HEARTBEAT_DRIFT_MAX

    local = seconds + fraction
    sent = local - (whole + part) + nudge
    if not local or not sent:
        return
    w = Worker("h")
    w.drift_warnings = _Warned()
    w.event("heartbeat", sent, local)
    expected = abs(int(local) - int(sent))
    assert w.drift_warnings.drifts == ([expected] if expected > HEARTBEAT_DRIFT_MAX else [])


def test_drift_warning_once_per_host(caplog):
    w = Worker("drifty@h")
    w.event("heartbeat", 1000.0, 1040.0)
    w.event("heartbeat", 1001.0, 1041.0)
    assert caplog.text.count("Substantial drift") == 1


def test_get_or_create():
    s = State()
    t, created = s.get_or_create_task("x")
    assert created and s.get_or_create_task("x") == (t, False)
    w, created = s.get_or_create_worker("h", pid=30)
    assert created and w.pid == 30
    w2, created = s.get_or_create_worker("h", pid=40)
    assert w2 is w and not created and w.pid == 40


def test_tasks_by_time_follows_logical_clock():
    s = State()
    s.event(ev("task-received", clock=1, uuid="A", name="n"))
    s.event(ev("task-received", clock=3, uuid="B", name="n"))
    s.event(ev("task-received", clock=2, uuid="C", name="n"))
    assert [u for u, _ in s.tasks_by_time()] == ["B", "C", "A"]
    assert [u for u, _ in s.tasks_by_time(reverse=False)] == ["A", "C", "B"]
    assert [u for u, _ in s.tasks_by_time(limit=2)] == ["B", "C"]
    s.event(ev("task-started", clock=4, uuid="A"))
    assert [u for u, _ in s.tasks_by_time()] == ["A", "B", "C"]


def test_equal_clocks_of_two_senders_go_by_timestamp():
    """Celery compares equal clocks by sender name; the wall clock says more."""
    s = State()
    s.event(ev("task-received", hostname="a@h", clock=7, ts=2.0, uuid="late", name="n"))
    s.event(ev("task-received", hostname="z@h", clock=7, ts=1.0, uuid="early", name="n"))
    assert [u for u, _ in s.tasks_by_time()] == ["late", "early"]
    assert [u for u, _ in s.tasks_by_time(reverse=False)] == ["early", "late"]


def test_indexes_types_and_itertasks():
    s = State()
    for i in range(20):
        task_flow(s, f"t{i}", name=f"task{i % 2 + 1}", worker=f"w{i % 2}@h", clock=i * 3)
    assert s.task_types() == ["task1", "task2"]
    assert len(list(s.tasks_by_type("task1"))) == 10
    assert len(s.tasks_by_type["task2"]) == 10
    assert len(list(s.tasks_by_worker("w0@h"))) == 10
    assert len(s.tasks_by_worker["w1@h"]) == 10
    assert len(list(s.itertasks(limit=2))) == 2
    assert len(list(s.tasks_by_time())) == 20


def test_children_parent_root_in_any_order():
    s = State()
    s.event(ev("task-received", clock=5, uuid="child", name="c", parent_id="root",
               root_id="root"))
    child = s.tasks["child"]
    assert child.parent is None and child.root is None  # not seen yet
    s.event(ev("task-received", clock=6, uuid="root", name="r", root_id="root"))
    root = s.tasks["root"]
    assert child.parent is root and child.root is root  # fix: not cached as None
    assert root.children == {child}
    assert child.as_dict()["parent"] == "root" and root.as_dict()["children"] == ["child"]


def test_freeze_while_and_clear():
    s = State()
    task_flow(s, "done")
    s.event(ev("task-received", uuid="running", name="n"))
    assert s.freeze_while(lambda: s.event_count) == 4
    s.freeze_while(lambda: None, clear_after=True)
    assert s.event_count == 0 and s.task_count == 0
    assert list(s.tasks) == ["running"]  # clear() keeps unfinished tasks
    assert [u for u, _ in s.tasks_by_time()] == ["running"]
    s.clear(ready=False)
    assert len(s.tasks) == 0 and len(s.workers) == 0


def test_freeze_while_allows_reading_and_feeding_from_inside():
    s = State()
    s.freeze_while(lambda: s.event(ev("task-received", uuid="a", name="n")))
    assert "a" in s.tasks


def test_info_and_as_dict():
    s = State()
    task_flow(s, "a")
    t = s.tasks["a"]
    assert t.info() == {"args": "(1,)", "kwargs": "{}", "retries": 0, "result": "2",
                        "runtime": 0.5}
    assert t.info(fields=["result"], extra=["received"]) == {"result": "2",
                                                             "received": 1000.0}
    d = t.as_dict()
    assert list(d) == list(Task._fields) and d["worker"] is t.worker
    assert Task().state == "PENDING" and Task().clock == 0 and Task().name is None


def test_pickle_and_deepcopy_keep_links():
    s = State()
    task_flow(s, "root")
    task_flow(s, "kid", parent_id="root", root_id="root", clock=10)
    s.event(ev("worker-online", freq=2.0))
    s2 = pickle.loads(pickle.dumps(s))
    assert s2.tasks["root"].state == "SUCCESS"
    assert s2.tasks["kid"].parent is s2.tasks["root"]
    assert s2.tasks["root"].children == {s2.tasks["kid"]}
    assert s2.workers["w1@h"].freq == 2.0
    assert [u for u, _ in s2.tasks_by_time()] == [u for u, _ in s.tasks_by_time()]
    assert len(s2.tasks_by_type["proj.add"]) == 2
    s3 = copy.deepcopy(s)
    assert s3.tasks["kid"].root is s3.tasks["root"]
    w = pickle.loads(pickle.dumps(s.workers["w1@h"]))
    assert w.hostname == "w1@h" and w.heartbeats == s.workers["w1@h"].heartbeats


def test_iteration_is_safe_while_another_thread_feeds():
    import threading

    s = State(max_tasks_in_memory=500)
    stop = threading.Event()

    def feed():
        i = 0
        while not stop.is_set():
            s.event(ev("task-received", clock=i, uuid=f"t{i}", name="n"))
            i += 1

    t = threading.Thread(target=feed)
    t.start()
    try:
        for _ in range(300):
            for _uuid, task in s.tasks.items():
                assert task.uuid
            list(s.tasks_by_time(limit=10))
            list(s.alive_workers())
    finally:
        stop.set()
        t.join()


# -- fixes of Celery's known weaknesses (spec section 13) ---------------------------------


def test_fix_2_task_events_refresh_worker_with_local_time():
    s = State()
    now = time.time()
    # the sender's clock is an hour behind: its timestamp must not decide liveness
    s.event(ev("task-received", ts=now - 3600, local=now, uuid="a", name="n"))
    w = s.workers["w1@h"]
    assert w.heartbeats == [now]
    s2 = State()
    s2.event(ev("task-received", ts=now + 3600, local=now - 400, uuid="a", name="n"))
    # Celery would record now+3600 and report the worker alive for an hour
    assert s2.workers["w1@h"].heartbeats == [now - 400]


@pytest.mark.parametrize("key", ["children", "worker", "cluster_state", "event", "state",
                                 "_children", "_last", "last_key", "first_key", "info",
                                 "as_dict", "ready", "parent", "__class__", "__dict__"])
def test_fix_5_event_keys_cannot_overwrite_task_internals(key):
    s = State()
    s.event(ev("task-received", uuid="p", name="parent"))
    s.event(ev("task-received", uuid="a", name="n", parent_id="p", **{key: ["evil"]}))
    s.event(ev("task-succeeded", clock=3, uuid="a", result="1"))
    t = s.tasks["a"]
    assert type(t) is Task and t.state == "SUCCESS"
    assert t.worker.hostname == "w1@h" and t.cluster_state is s
    assert t.parent is s.tasks["p"] and s.tasks["p"].children == {t}
    assert callable(t.info) and t.ready is True


@pytest.mark.parametrize("key", ["heartbeats", "event", "alive", "id", "update", "_x"])
def test_fix_5_event_keys_cannot_overwrite_worker_internals(key):
    s = State()
    s.event(ev("worker-online", freq=2.0, **{key: "evil"}))
    w = s.workers["w1@h"]
    assert isinstance(w.heartbeats, list) and w.alive and w.id == "w1@h.11"
    assert callable(w.event) and callable(w.update)


def test_fix_6_late_event_does_not_overwrite_newer_metadata():
    s = State()
    s.event(ev("task-received", hostname="w1@h", clock=1, ts=100.0, uuid="a", name="n"))
    s.event(ev("task-succeeded", hostname="w1@h", clock=3, ts=102.0, uuid="a", result="1"))
    s.event(ev("task-started", hostname="w1@h", clock=2, ts=101.0, local=999.0, uuid="a"))
    t = s.tasks["a"]
    assert t.state == "SUCCESS" and t.started == 101.0
    assert (t.timestamp, t.clock, t.type) == (102.0, 3, "task-succeeded")
    assert t.local_received != 999.0
    s.event(ev("task-sent", hostname="client@h", clock=0, ts=99.0, uuid="a", queue="q",
               retries=0, routing_key="q", exchange=""))
    assert t.hostname == "w1@h" and t.routing_key == "q" and t.client == "client@h"
    assert t.timestamp == 102.0


def test_fix_6_rejected_after_received_shows():
    s = State()
    s.event(ev("task-received", clock=1, uuid="a", name="n"))
    s.event(ev("task-rejected", clock=2, uuid="a", requeue=False))
    assert s.tasks["a"].state == "REJECTED" and s.tasks["a"].requeue is False
    # ... but a failure reported together with the rejection stays the final word
    s.event(ev("task-received", clock=3, uuid="b", name="n"))
    s.event(ev("task-failed", clock=4, uuid="b", exception="Reject()"))
    s.event(ev("task-rejected", clock=5, uuid="b", requeue=False))
    assert s.tasks["b"].state == "FAILURE" and s.tasks["b"].rejected is not None


def test_fix_7_task_first_seen_without_name_is_indexed_when_name_arrives():
    s = State()
    s.event(ev("task-revoked", clock=5, uuid="a", terminated=False, signum=None,
               expired=True))
    assert len(s.tasks_by_type) == 0
    s.event(ev("task-received", clock=4, uuid="a", name="proj.add"))
    assert s.tasks_by_type["proj.add"] == {s.tasks["a"]}
    assert s.task_types() == ["proj.add"]


def test_fix_7_tasks_are_indexed_by_their_worker_not_the_client():
    s = State()
    s.event(ev("task-sent", hostname="gen1@client", clock=1, uuid="a", name="n"))
    assert len(s.tasks_by_worker) == 0
    assert list(s.tasks_by_worker("gen1@client")) == []  # no AttributeError
    s.event(ev("task-received", hostname="w2@h", clock=2, uuid="a", name="n"))
    assert s.tasks_by_worker["w2@h"] == {s.tasks["a"]}
    assert [u for u, _ in s.tasks_by_worker("w2@h")] == ["a"]
    s.event(ev("task-received", hostname="w3@h", clock=3, uuid="a", name="n"))  # requeued
    assert "w2@h" not in s.tasks_by_worker and s.tasks_by_worker["w3@h"] == {s.tasks["a"]}


def test_without_finished_tasks_the_first_seen_go_first_in_order():
    """The first-seen queue is made when first needed (from the task map's order),
    then kept up as tasks come."""
    s = State(max_tasks_in_memory=3)
    task_flow(s, "done", clock=1)  # finished: it goes first
    for i, uuid in enumerate("abcdefghi"):
        s.event(ev("task-started", clock=10 + i, uuid=uuid))
        assert len(s.tasks) <= 3
    assert list(s.tasks) == ["g", "h", "i"]
    assert s.evicted == {"ready": 1, "unready": 6}


def test_fix_8_parent_not_cached_and_evicted_parent_is_released():
    s = State(max_tasks_in_memory=2)
    s.event(ev("task-received", clock=1, uuid="kid", name="n", parent_id="p"))
    kid = s.tasks["kid"]
    assert kid.parent is None
    s.event(ev("task-received", clock=2, uuid="p", name="n"))
    assert kid.parent is s.tasks["p"]
    s.event(ev("task-succeeded", clock=3, uuid="p", result="1"))
    s.event(ev("task-received", clock=4, uuid="other", name="n"))  # evicts finished p
    assert "p" not in s.tasks and kid.parent is None


def test_fix_20_finished_tasks_are_evicted_before_running_ones():
    s = State(max_tasks_in_memory=10)
    for i in range(5):  # five long-running tasks, seen first
        s.event(ev("task-started", clock=i, uuid=f"run{i}"))
    for i in range(20):
        task_flow(s, f"done{i}", clock=100 + i * 3)
    assert len(s.tasks) == 10
    assert {f"run{i}" for i in range(5)} <= set(s.tasks)
    assert s.evicted["ready"] == 15 and s.evicted["unready"] == 0
    # when nothing finished is left, the oldest unfinished tasks go
    for i in range(12):
        s.event(ev("task-started", clock=500 + i, uuid=f"late{i}"))
    assert len(s.tasks) == 10 and "run0" not in s.tasks and "late11" in s.tasks


def test_bounds_hold_for_every_index():
    s = State(max_tasks_in_memory=100, max_workers_in_memory=5)
    for i in range(2000):
        s.event(ev("task-received", hostname=f"w{i % 50}@h", clock=i, uuid=f"t{i}",
                   name=f"name{i}", parent_id=f"missing{i}"))
        if i % 3 == 0:
            s.event(ev("task-succeeded", hostname=f"w{i % 50}@h", clock=i, uuid=f"t{i}"))
    assert len(s.tasks) == 100
    assert len(s.workers) <= 5
    assert len(s.tasks_by_type) <= 100
    assert len(s._tasks_to_resolve) <= 100
    assert len(s._order) <= 2 * 100 + 64 + 1 and len(s._ready) <= 2 * 100 + 64 + 1
    # stale entries (tasks gone or moved) are dropped as a key's list outgrows its tasks
    for index, key_of in ((s.tasks_by_worker, lambda t: t.worker and t.worker.hostname),
                          (s.tasks_by_type, lambda t: t.name)):
        assert sum(len(v) for v in index._ids.values()) <= 2 * 100 + 2 * len(index)
        assert {k: index[k] for k in index} == {
            key: {t for t in s.tasks.values() if key_of(t) == key}
            for key in {key_of(t) for t in s.tasks.values()}}


# -- subclassing (Celery's extension point, used by Flower) ---------------------------------


class CustomTask(Task):
    __slots__ = ()

    def summary(self):
        return f"{self.name}: {self.state}"

    @property
    def label(self):
        return self.name.upper() if self.name else ""


class CustomWorker(Worker):
    def describe(self):
        return self.hostname


class CustomState(State):
    Task = CustomTask
    Worker = CustomWorker


def test_a_state_subclass_gets_its_own_task_and_worker_classes():
    s = CustomState()
    task_flow(s, "a", worker="w9@h")
    s.event(ev("task-sent", hostname="client@h", uuid="b", name="n"))
    s.event(ev("worker-online", hostname="w8@h", freq=2.0))
    assert type(s.tasks["a"]) is CustomTask and type(s.tasks["b"]) is CustomTask
    assert s.tasks["a"].summary() == "proj.add: SUCCESS"
    # workers created by a task event and by a worker event alike
    assert type(s.workers["w9@h"]) is CustomWorker and type(s.workers["w8@h"]) is CustomWorker
    assert type(s.get_or_create_task("c")[0]) is CustomTask


def test_a_subclass_attributes_are_protected_from_event_keys():
    s = CustomState()
    s.event(ev("task-received", uuid="a", name="n", summary="evil", label="evil"))
    s.event(ev("worker-online", freq=2.0, describe="evil"))
    t = s.tasks["a"]
    assert t.summary() == "n: RECEIVED" and t.label == "N"
    assert s.workers["w1@h"].describe() == "w1@h"
    # the base classes are unaffected by the subclass's names
    plain = State()
    plain.event(ev("task-received", uuid="a", name="n", summary="kept"))
    assert plain.tasks["a"].summary == "kept"


class GuardedTask(Task):
    _protected = Task._protected | {"result"}


class ShapedTask(Task):
    """A class of its own: its shape cache starts empty whatever other tests sent."""


def test_events_of_one_shape_are_applied_alike_by_the_generated_setter(monkeypatch):
    """An event made only of protocol names is applied in one generated statement; any
    other name (one that folds to a protocol name in Python source, a name a subclass
    protects) is not, and is applied (or refused) key by key, as before."""
    from tidings.events.state import keys

    made = []  # the shapes code was generated for
    real = keys.slots_setter
    monkeypatch.setattr(keys, "slots_setter",
                        lambda names, *sparse: made.append(names) or real(names, *sparse))
    s = State()
    s.Task = ShapedTask
    shapes = ShapedTask._keys.setters
    s.event(ev("task-received", uuid="a", name="n", args="()"))
    s.event(ev("task-received", uuid="b", name="n", args="()"))
    assert shapes[tuple(ev("task-received", uuid="a", name="n", args="()"))] is not None
    assert s.tasks["b"].name == "n" and s.tasks["b"].args == "()" and s.tasks["b"].clock == 1
    # "\uff53tate" is "state" once Python source folds it (NFKC): never generated code
    s.event(ev("task-started", uuid="a", **{"\uff53tate": "EVIL"}))
    assert s.tasks["a"].state == "STARTED" and s.tasks["a"].__dict__["\uff53tate"] == "EVIL"
    assert shapes[tuple(ev("task-started", **{"uuid": 0, "\uff53tate": 0}))] is None
    guarded = State()
    guarded.Task = GuardedTask
    guarded.event(ev("task-succeeded", uuid="a", result="evil", runtime=1.0))
    assert guarded.tasks["a"].result is None and guarded.tasks["a"].runtime == 1.0
    assert len(made) == 1  # one shape of protocol names so far
    for n in range(keys.SHAPE_CACHE_MAX + 50):  # ever-new shapes: the cache stays bounded
        s.event(ev("task-started", uuid="a", **{f"custom{n}": n}))
    assert len(shapes) == keys.SHAPE_CACHE_MAX and s.tasks["a"].custom300 == 300
    # once full, a new shape of protocol names gets no code, and is applied all the same
    s.event({"type": "task-succeeded", "uuid": "b", "result": "3", "clock": 9,
             "hostname": "w1@h", "timestamp": 2.0, "local_received": 2.0})
    assert len(made) == 1 and s.tasks["b"].result == "3" and s.tasks["b"].state == "SUCCESS"


class PlainTask(Task):
    """Classes of their own: each starts with an empty shared key table (below)."""


class TaughtTask(Task):
    pass


def test_event_keys_never_make_later_tasks_bigger():
    """On CPython 3.11 the instance dicts of a class share a key table, and each new
    instance gets a value array as long as it.  A name stored in one of a class's
    first few dozen instances joins the table for good: custom keys in a
    monitor's first events made every later task bigger (by 25 * 8 bytes
    here), and so did an ``eta``, a failure's and a retry's fields.  Each is
    now stored in a plain dict (``put_extra``); copies and a pickle round trip
    keep them."""
    import gc
    import tracemalloc

    plain, taught = State(), State()
    plain.Task, taught.Task = PlainTask, TaughtTask
    taught.event(ev("task-received", clock=1, uuid="x", **{f"custom{i}": i for i in range(25)}))
    taught.event(ev("task-received", clock=2, uuid="e", eta="2026-12-06T10:00:00",
                    expires="2026-12-07T10:00:00"))
    task_flow(taught, "f", final="failed")
    task_flow(taught, "r", final="retried")
    copies = taught.copy_changes().tasks
    loaded = pickle.loads(pickle.dumps(taught))
    for uuid in ("x", "e", "f", "r"):
        task_flow(plain, uuid)
    plain.copy_changes()

    def bytes_per_task(s: State, n: int = 400) -> float:
        s.copy_changes()  # the changes noted since the last copy: none, each time
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(n):
                s.event(ev("task-received", clock=i, uuid=f"t{i}", name="n"))
            gc.collect()
            return (tracemalloc.get_traced_memory()[0] - before) / n
        finally:
            tracemalloc.stop()

    grown = bytes_per_task(taught) - bytes_per_task(plain)
    assert grown < 8, grown
    for tasks in (taught.tasks, copies, loaded.tasks):
        assert tasks["x"].custom24 == 24 and tasks["f"].exception == "KeyError('x')"
        assert tasks["r"].retried == 1002.0 and tasks["r"].traceback == "Traceback..."
        assert vars(tasks["x"]) == {f"custom{i}": i for i in range(25)}
        assert tasks["e"].expires == "2026-12-07T10:00:00"


class ExceptionSlotTask(Task):
    __slots__ = ("exception",)


def test_a_subclass_slot_for_a_rare_field_gets_the_field():
    """A field without a slot in Task goes to the instance dict, but one a subclass
    gives a slot of its own is set there (the slot would hide the dict's)."""
    s = State()
    s.Task = ExceptionSlotTask
    task_flow(s, "a", final="failed")
    task = s.tasks["a"]
    assert task.exception == "KeyError('x')" and "exception" not in vars(task)
    assert task.traceback == "Traceback..." and vars(task)["traceback"] == "Traceback..."


class SlottedTask(Task):
    __slots__ = ("seen_by",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen_by = "me"


class SlottedState(State):
    Task = SlottedTask


def test_a_pickled_state_keeps_every_field_custom_keys_and_subclasses():
    s = SlottedState()
    task_flow(s, "a", custom_field={"x": [1]})
    s.event(ev("task-sent", hostname="client@h", uuid="b", name="n", clock=9))
    s.tasks["b"].note = "set by a camera"
    s2 = pickle.loads(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL))
    for uuid in ("a", "b"):
        old, new = s.tasks[uuid], s2.tasks[uuid]
        assert type(new) is SlottedTask and new.seen_by == "me"
        assert new.as_dict() == old.as_dict() and new.info() == old.info()
        assert (new.first_key, new.last_key) == (old.first_key, old.last_key)
    assert s2.tasks["a"].custom_field == {"x": [1]} and s2.tasks["b"].note == "set by a camera"
    assert s2.tasks["b"].exception is None and s2.tasks["b"].client == "client@h"
    assert [u for u, _ in s2.tasks_by_time()] == ["b", "a"]


def test_drift_warnings_are_remembered_per_state(caplog):
    for _ in range(2):
        s = State()
        for clock in (1, 2):
            s.event(ev("worker-heartbeat", hostname="drifty@h", clock=clock, ts=1000.0,
                       local=1040.0, freq=2.0))
    assert caplog.text.count("Substantial drift") == 2  # once in each State


def test_hooks_see_every_applied_event_and_eviction():
    seen = []

    class Hooked(State):
        def on_task_event(self, task, subject, created):
            seen.append(("task", task.uuid, subject, created))

        def on_worker_event(self, worker, subject, created):
            seen.append(("worker", worker.hostname, subject, created))

        def on_task_evicted(self, task):
            seen.append(("evicted", task.uuid))

    s = Hooked(max_tasks_in_memory=1)
    s.event(ev("worker-online", freq=2.0))
    task_flow(s, "a")
    s.event(ev("task-received", clock=9, uuid="b", name="n"))
    assert seen == [("worker", "w1@h", "online", True),
                    ("task", "a", "received", True), ("task", "a", "started", False),
                    ("task", "a", "succeeded", False),
                    ("evicted", "a"), ("task", "b", "received", True)]


def test_read_api_gives_consistent_copies_of_changes():
    s = State()
    task_flow(s, "a")
    first = s.copy_changes()
    assert first.reset and set(first.tasks) == {"a"} and first.tasks["a"] is not s.tasks["a"]
    assert first.tasks["a"].state == "SUCCESS" and first.event_count == 3
    s.event(ev("task-received", clock=9, uuid="b", name="n"))
    second = s.copy_changes(first.generation)
    assert not second.reset and set(second.tasks) == {"b"}
    s.clear(ready=True)  # unfinished tasks stay, as in Celery
    third = s.copy_changes(second.generation)
    assert third.reset and set(third.tasks) == {"b"} and third.workers == {}
    assert s.read_tasks(s.task_list(), lambda t: (t.uuid, t.state)) == [("b", "RECEIVED")]


def test_a_task_keeps_one_copy_of_its_id_and_of_shared_texts():
    """Each decoded event brings its own copies of the id and the names; the State
    keeps one (memory per task: bench/state_ingest.py)."""
    import json

    s = State()
    events = [ev("task-sent", hostname="client@h", clock=1, uuid="a" * 36, root_id="a" * 36,
                 name="proj.add", queue="celery"),
              ev("task-received", clock=2, uuid="a" * 36, root_id="a" * 36, name="proj.add"),
              ev("task-started", clock=3, uuid="a" * 36),
              ev("task-succeeded", clock=4, uuid="a" * 36, result="3")]
    for e in events:
        s.event(json.loads(json.dumps(e)))  # fresh strings, as a receiver's decoding gives
    (key, task), = dict.items(s.tasks)
    assert task.uuid is key and task.root_id is key
    other = State()
    for e in events:
        other.event(json.loads(json.dumps(e)))
    assert other.tasks[key].name is task.name and other.tasks[key].queue is task.queue


def test_tasks_share_their_workers_name_across_its_heartbeats():
    """Each heartbeat brings its own copy of the worker's name; the worker keeps
    its first, so its tasks hold one copy however many heartbeats come between."""
    import json

    s = State()
    for n in range(3):
        s.event(json.loads(json.dumps(ev("worker-heartbeat", clock=2 * n, freq=2.0))))
        s.event(json.loads(json.dumps(ev("task-started", clock=2 * n + 1, uuid=f"t{n}"))))
    worker = s.workers["w1@h"]
    assert all(s.tasks[f"t{n}"].hostname is worker.hostname for n in range(3))


def test_pids_and_utc_offsets_are_shared_but_keep_their_type():
    import json

    s = State()
    for i, (pid, offset) in enumerate([(4242, 0.0), (4242, 0.0), (4242, 0)]):
        e = ev("task-received", clock=i, uuid=f"t{i}", name="n")
        e.update(pid=pid, utcoffset=offset)
        s.event(json.loads(json.dumps(e)))
    a, b, c = (s.tasks[f"t{i}"] for i in range(3))
    assert a.pid is b.pid and a.utcoffset is b.utcoffset
    assert type(c.utcoffset) is int and c.utcoffset == 0  # 0 is not turned into 0.0
    s.event(ev("task-started", uuid="t0", pid=[1], utcoffset={"x": 1}))  # unhashable: kept
    assert a.pid == [1] and a.utcoffset == {"x": 1}


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_reads_by_time_that_drop_what_they_pass_stay_exact(data):
    """Reads between events (limits and directions at random) each give what a full sort
    of the tasks' keys gives, though every read drops the stale entries it passed."""
    s = State(max_tasks_in_memory=data.draw(st.integers(3, 12)))
    uuids = [f"t{n}" for n in range(8)]
    subjects = ["sent", "received", "started", "succeeded", "failed"]
    for _ in range(data.draw(st.integers(1, 8))):
        for _ in range(data.draw(st.integers(0, 12))):
            s.event({"type": f"task-{data.draw(st.sampled_from(subjects))}",
                     "uuid": data.draw(st.sampled_from(uuids)),
                     "hostname": data.draw(st.sampled_from(["w1", "w2"])),
                     "clock": data.draw(st.integers(0, 40)), "timestamp": 1.0,
                     "local_received": 1.0})
        limit = data.draw(st.one_of(st.none(), st.integers(1, 9)))
        reverse = data.draw(st.booleans())
        tasks = list(s.tasks.values())
        attr = "last_key" if reverse else "first_key"
        expected = sorted(tasks, key=lambda t: (getattr(t, attr), t.uuid),
                          reverse=reverse)[:limit]
        assert [u for u, _ in s.tasks_by_time(limit=limit, reverse=reverse)] \
            == [t.uuid for t in expected]


@settings(max_examples=100, deadline=None)
@given(st.permutations([f"t{n:02}" for n in range(12)]), st.integers(0, 12),
       st.integers(1, 30))
def test_tasks_with_equal_time_keys_go_by_id(order, later, limit):
    """Equal time keys (one clock, one timestamp) are ordered by task id,
    whatever order they arrive in, after reads that drop stale entries, in the type
    index and in a State rebuilt from a pickle; a key holds no id."""
    s = State()
    for n, uuid in enumerate(order):
        s.event(ev("task-received", clock=5, ts=1.0, local=1.0, uuid=uuid, name="n"))
        if n == later:  # one task moves on: its old entry goes stale among the equal ones
            s.event(ev("task-started", clock=5, ts=2.0, local=2.0, uuid=order[0]))
            list(s.tasks_by_time(limit=1))
    moved = [order[0]] if later < len(order) else []
    rest = sorted(u for u in order if u not in moved)
    newest = moved + rest[::-1]
    assert [u for u, _ in s.tasks_by_time(limit=limit)] == newest[:limit]
    assert [u for u, _ in s.tasks_by_time()] == newest
    assert [u for u, _ in s.tasks_by_time(reverse=False)] == sorted(order)
    assert [u for u, _ in s.tasks_by_type("n", limit=limit)] == newest[:limit]
    s2 = pickle.loads(pickle.dumps(s))
    assert [u for u, _ in s2.tasks_by_time()] == newest
    assert s.tasks[order[-1]].last_key == (5, 1.0) == s.tasks[order[-1]].first_key


class _IdReadsCounted(Task):
    """A task that counts how often its id is read."""

    __slots__ = ("_id",)
    reads = 0

    @property
    def uuid(self):
        _IdReadsCounted.reads += 1
        return self._id

    @uuid.setter
    def uuid(self, value):
        self._id = value


class _IdReadsCountedState(State):
    Task = _IdReadsCounted


def test_many_tasks_with_one_time_key_cost_a_logarithm_each():
    """Events that all carry one clock and one timestamp (a sender that sends no clock,
    or one that means harm) must not make each new task walk all the others."""
    import random

    n = 3000
    rnd = random.Random(3)
    uuids = [f"{rnd.getrandbits(64):016x}-{i}" for i in range(n)]  # in random order
    s = _IdReadsCountedState(max_tasks_in_memory=n)
    _IdReadsCounted.reads = 0
    for uuid in uuids:
        s.event({"type": "task-received", "uuid": uuid, "hostname": "w1@h", "name": "n"})
    per_task = _IdReadsCounted.reads / n
    assert per_task < 40, per_task  # a walk among equal keys: about n / 4 = 750
    assert [u for u, _ in s.tasks_by_time()] == sorted(uuids, reverse=True)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 400), min_size=150, max_size=400))
def test_late_events_far_back_and_near_the_end_keep_time_order_exact(lateness):
    """A long time order (past the stretch at its end searched first for a late key):
    events arrive up to 400 clocks late, both within and beyond that stretch."""
    s = State(max_tasks_in_memory=1000)
    for n, late in enumerate(lateness):
        clock = 1000 + n - late
        s.event(ev("task-received", clock=clock, ts=1.0, local=1.0, uuid=f"t{n % 300}"))
    for reverse, attr in ((True, "last_key"), (False, "first_key")):
        expected = sorted(s.tasks.values(), key=lambda t: (getattr(t, attr), t.uuid),
                          reverse=reverse)
        assert [u for u, _ in s.tasks_by_time(reverse=reverse)] == [t.uuid for t in expected]


def test_tasks_removed_through_the_map_leave_time_order():
    """``del``/``pop``/``popitem``/``clear`` on ``State.tasks`` take the task out of
    ``tasks_by_time`` and the indexes too; a removed task keeps keys of the same value
    (a reader may still be sorting it)."""
    s = State()
    for i in range(6):
        s.event(ev("task-received", clock=i, uuid=f"t{i}", name="n"))
    held = s.tasks["t5"]
    key = held.last_key
    del s.tasks["t5"]
    assert s.tasks.pop("t4").uuid == "t4"
    assert s.tasks.pop("nope", None) is None
    assert [u for u, _ in s.tasks_by_time()] == ["t3", "t2", "t1", "t0"]
    assert [u for u, _ in s.tasks_by_time(reverse=False)] == ["t0", "t1", "t2", "t3"]
    assert held.last_key == key and held.last_key is not key
    uuid, _ = s.tasks.popitem()
    assert uuid not in [u for u, _ in s.tasks_by_time()]
    assert {t.uuid for t in s.tasks_by_type["n"]} == set(s.tasks) and len(s.tasks) == 3
    assert {t.uuid for t in s.tasks_by_worker["w1@h"]} == set(s.tasks)
    s.tasks.clear()
    assert list(s.tasks_by_time()) == [] and list(s.tasks_by_time(limit=2)) == []
    assert "n" not in s.tasks_by_type and len(s.tasks_by_worker) == 0


def test_evicted_tasks_held_by_stale_entries_stay_a_small_share():
    """A time-order entry holds its task; entries of evicted tasks are dropped before
    more than a quarter of the bound (plus a constant) of them is kept alive."""
    import gc
    import weakref

    bound = 400
    s = State(max_tasks_in_memory=bound)
    refs = []
    most = 0
    for i in range(2000):
        uuid = f"t{i}"
        s.event(ev("task-received", clock=i, uuid=uuid, name="n"))
        refs.append(weakref.ref(s.tasks[uuid]))
        if i % 40 == 0:
            gc.collect()
            most = max(most, sum(1 for r in refs if r() is not None))
    assert len(s.tasks) == bound
    # one entry per task in each time order: only evictions make entries stale
    assert most <= bound + bound // 4 + 64 + 1


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_task_indexes_match_a_scan_of_the_tasks(data):
    """Tasks renamed, moved between workers and evicted at random: ``tasks_by_type`` and
    ``tasks_by_worker`` (which leave stale entries behind and drop them later) always
    give what a scan of the tasks gives."""
    s = State(max_tasks_in_memory=data.draw(st.integers(2, 10)))
    subjects = ["sent", "received", "started", "succeeded", "failed"]
    for clock in range(data.draw(st.integers(1, 80))):
        subject = data.draw(st.sampled_from(subjects))
        fields = {"name": data.draw(st.sampled_from(["a", "b", "c"]))} \
            if subject in ("sent", "received") else {}
        s.event({"type": f"task-{subject}", "uuid": f"t{data.draw(st.integers(0, 12))}",
                 "hostname": data.draw(st.sampled_from(["w1", "w2", "w3"])),
                 "clock": clock, "timestamp": 1.0, "local_received": 1.0, **fields})
    tasks = list(s.tasks.values())
    for index, key_of in ((s.tasks_by_type, lambda t: t.name),
                          (s.tasks_by_worker, lambda t: t.worker and t.worker.hostname)):
        expected = {}
        for task in tasks:
            if key_of(task) is not None:
                expected.setdefault(key_of(task), set()).add(task)
        assert {k: index[k] for k in index} == expected
        assert sorted(index.keys()) == sorted(expected) and len(index) == len(expected)
        assert {k: index.ids(k) for k in index} == \
            {k: {t.uuid for t in v} for k, v in expected.items()}


class SparseTask(Task):
    """A class of its own: its shape cache starts empty whatever other tests sent."""


def test_fields_most_tasks_leave_at_none_take_no_dict_until_they_hold_a_value():
    """``eta``, ``expires`` and a failure's fields are not slots: the ``None`` that
    sent and received events carry stores nothing; a value is kept, read, copied,
    pickled and overwritten (even by ``None``) like any field's."""
    import pickle

    from tidings.events.state.task import SPARSE_FIELDS

    assert {"eta", "expires", "exception", "traceback", "failed"} == SPARSE_FIELDS
    assert not SPARSE_FIELDS & set(Task.__slots__)
    s = State()
    s.Task = SparseTask
    s.event(ev("task-received", clock=1, uuid="e", name="n", eta=None, expires=None))
    assert s.tasks["e"].__dict__ == {}  # applied by the generated setter
    s.event(ev("task-started", clock=2, uuid="a"))  # the received event comes late
    for clock, type_ in ((1, "task-received"), (0, "task-sent")):
        s.event(ev(type_, clock=clock, uuid="a", name="n", eta=None, expires=None))
    task_flow(s, "b", clock=5)
    s.event(ev("task-received", clock=9, uuid="b", eta=None, expires=None))
    assert s.tasks["a"].__dict__ == {} and s.tasks["b"].__dict__ == {}
    assert s.tasks["a"].eta is None and s.tasks["a"].as_dict()["expires"] is None
    s.event(ev("task-received", clock=10, uuid="c", eta="2026-12-06T10:00:00"))
    task_flow(s, "d", clock=11, final="failed")
    c, d = s.tasks["c"], s.tasks["d"]
    assert c.eta == "2026-12-06T10:00:00" and c.__dict__ == {"eta": c.eta}
    assert d.exception == "KeyError('x')" and d.failed == 1002.0 and d.traceback
    copies = s.copy_changes().tasks
    loaded = pickle.loads(pickle.dumps(s))
    for task in (c, d):
        assert copies[task.uuid].as_dict() == task.as_dict()
        assert loaded.tasks[task.uuid].as_dict() == task.as_dict()
    s.event(ev("task-received", clock=20, uuid="c", eta=None))  # a value, then None
    assert c.eta is None


def _has_dict(obj):
    """Whether ``obj`` holds an instance dict (looked at without reading ``__dict__``,
    which would make one)."""
    return any(type(r) is dict for r in gc.get_referents(obj))


def test_copies_and_pickles_leave_no_dict_on_a_task_or_worker_that_had_none():
    """Reading ``__dict__`` makes an empty one that the object keeps (64 bytes a task):
    copies and pickles look without leaving one, and copy the fields kept there."""
    s = State()
    task_flow(s, "a")
    s.event(ev("task-received", clock=9, uuid="b", name="n"))
    s.event(ev("task-revoked", clock=10, uuid="b", terminated=True))  # a rare field
    a, b, worker = s.tasks["a"], s.tasks["b"], s.workers["w1@h"]
    assert not _has_dict(a) and _has_dict(b) and not _has_dict(worker)
    copies = s.copy_changes()
    loaded = pickle.loads(pickle.dumps(s))
    assert (copy.copy(a).uuid, a.copy(None).uuid, worker.copy().hostname) == ("a", "a", "w1@h")
    assert not _has_dict(a) and not _has_dict(worker)
    for other in (copies.tasks["a"], loaded.tasks["a"], copies.workers["w1@h"],
                  loaded.workers["w1@h"]):
        assert not _has_dict(other)
    for task in (copies.tasks["b"], loaded.tasks["b"], b.copy(None)):
        assert task.terminated is True and task.as_dict() == b.as_dict()
    assert b.__dict__ == {"revoked": b.revoked, "terminated": True}


def test_fields_of_rare_states_read_copy_and_pickle_like_the_others():
    """Fields only rejected, revoked and retried tasks have are not slots: a task
    that gets one keeps it like any field (reads, as_dict, copy, pickle), and a
    task that never does reads Celery's default."""
    import pickle

    from tidings.events.state.task import RARE_FIELDS, Task

    assert {"revoked", "terminated", "signum", "expired", "requeue", "rejected",
            "retried"} == RARE_FIELDS
    assert not RARE_FIELDS & set(Task.__slots__)
    s = State()
    s.event(ev("task-received", clock=1, uuid="a", name="n"))
    s.event(ev("task-revoked", clock=2, uuid="a", terminated=True, signum=15,
               expired=False))
    s.event(ev("task-received", clock=3, uuid="b", name="n"))
    s.event(ev("task-rejected", clock=4, uuid="b", requeue=False))
    a, b = s.tasks["a"], s.tasks["b"]
    assert (a.state, a.terminated, a.signum, a.expired) == ("REVOKED", True, 15, False)
    assert a.revoked is not None and a.requeue is None and a.rejected is None
    assert (b.state, b.requeue, b.revoked) == ("REJECTED", False, None)
    assert b.rejected is not None
    copy = s.copy_changes().tasks["a"]
    loaded = pickle.loads(pickle.dumps(s))
    for task in (copy, loaded.tasks["a"]):
        assert (task.terminated, task.signum, task.revoked) == (True, 15, a.revoked)
        assert task.as_dict() == a.as_dict()
    assert loaded.tasks["b"].as_dict() == b.as_dict() and loaded.tasks["b"].requeue is False
    assert a.as_dict()["revoked"] == a.revoked and b.as_dict()["revoked"] is None


def test_reads_of_every_task_hold_the_collector_off_and_small_ones_do_not():
    """A pair or a copy per task is a new object the collector tracks: a read of
    many tasks sets off no collection while it makes them (one may follow)."""
    from tidings.events.state.task import Task as BaseTask
    from tidings.utils.gcpause import PAUSE_ABOVE

    seen = []

    class Seen(BaseTask):
        __slots__ = ()

        def copy(self, cluster_state):
            seen.append(gc.isenabled())
            return super().copy(cluster_state)

    s = State(max_tasks_in_memory=PAUSE_ABOVE * 3)
    s.Task = Seen
    for n in range(PAUSE_ABOVE * 2):
        s.event(ev("task-received", clock=n, uuid=f"t{n}", name="n"))
    with collections_counted() as collections:
        for read in (lambda: list(s.itertasks()), lambda: list(s.tasks_by_time()),
                     lambda: list(s.tasks_by_time(reverse=False)),
                     lambda: s.read_tasks(s.task_list(), Seen.as_dict),
                     lambda: s.read_tasks(iter(s.task_list()), Seen.as_dict)):
            gc.collect()
            collections.clear()
            assert len(read()) == PAUSE_ABOVE * 2
            assert len(collections) <= 1  # the collection after the read, at most
        changes = s.copy_changes()
        s.event(ev("task-started", clock=10**6, uuid="t1"))
        s.copy_changes(changes.generation)
        assert gc.isenabled()
        gc.collect()
        collections.clear()
        list(s.tasks_by_time(limit=PAUSE_ABOVE))  # a small read: the collector as it was
        assert len(collections) > 1
    assert seen == [False] * (PAUSE_ABOVE * 2) + [True]


def test_pickling_a_state_holds_the_collector_off_and_copies_stay_as_they_were():
    """A State is pickled whole with the collector held off, and loaded so;
    ``copy.copy`` still shares its tasks and ``copy.deepcopy`` still copies
    what a pickle cannot hold."""
    from tidings.utils.gcpause import PAUSE_ABOVE

    s = State(max_tasks_in_memory=PAUSE_ABOVE * 3)
    for n in range(PAUSE_ABOVE * 2):
        task_flow(s, f"t{n}", clock=n * 3)
    with collections_counted() as collections:
        gc.collect()
        collections.clear()
        data = pickle.dumps((s, "beside"), protocol=pickle.HIGHEST_PROTOCOL)
        assert len(collections) <= 1
        collections.clear()
        loaded, beside = pickle.loads(data)
        assert len(collections) <= 1
    assert beside == "beside" and loaded.tasks["t7"].as_dict() == s.tasks["t7"].as_dict()
    assert [u for u, _ in loaded.tasks_by_time()] == [u for u, _ in s.tasks_by_time()]
    assert copy.copy(s).tasks["t7"] is s.tasks["t7"]

    calls = []
    kept = State(callback=lambda state, event: calls.append(event["type"]))
    task_flow(kept, "a")
    twin = copy.deepcopy(kept)
    assert twin.tasks["a"] is not kept.tasks["a"] and twin.tasks["a"].state == "SUCCESS"
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(kept)  # a lambda does not pickle, as before
