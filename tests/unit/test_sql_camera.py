import time

import pytest

sqlalchemy = pytest.importorskip("sqlalchemy")

from tidings.cameras import SQLCamera, parse_duration  # noqa: E402
from tidings.events.state import State  # noqa: E402
from tidings.utils.timer import Timer  # noqa: E402


def ev(type_, uuid, clock, worker="w1@h", **fields):
    now = time.time()
    return {"hostname": worker, "clock": clock, "pid": 1, "utcoffset": 0.0, "uuid": uuid,
            **fields, "timestamp": now, "type": type_, "local_received": now}


def rows(engine, sql):
    with engine.connect() as conn:
        return conn.execute(sqlalchemy.text(sql)).fetchall()


def test_durations():
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("90") == 90
    assert parse_duration("30m") == 1800
    for bad in ("soon", "-1", "0"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_upserts_changed_tasks_and_workers(tmp_path):
    db = f"sqlite:///{tmp_path / 'cam.sqlite'}"
    state = State()
    state.event({"type": "worker-online", "hostname": "w1@h", "clock": 1, "freq": 2.0,
                 "timestamp": time.time(), "local_received": time.time(), "active": 0,
                 "processed": 0, "loadavg": [0.1, 0.2, 0.3]})
    for i in range(3):
        state.event(ev("task-received", f"t{i}", i + 2, name="proj.add", args="(1,)"))
    cam = SQLCamera(state, timer=Timer(), db=db)
    cam.shutter()
    assert rows(cam.engine, "select uuid, state, worker, name from tidings_tasks order by uuid") \
        == [(f"t{i}", "RECEIVED", "w1@h", "proj.add") for i in range(3)]
    assert cam.last_shot[1] == 3
    state.event(ev("task-succeeded", "t1", 10, result="2", runtime=0.1))
    cam.shutter()
    assert cam.last_shot[1] == 1  # only the changed task is written
    assert rows(cam.engine, "select state, result, runtime from tidings_tasks where uuid='t1'") \
        == [("SUCCESS", "2", 0.1)]
    assert rows(cam.engine, "select hostname, alive, loadavg from tidings_workers") == \
        [("w1@h", True, "[0.1, 0.2, 0.3]")]
    index_names = {r[0] for r in rows(cam.engine,
                                      "select name from sqlite_master where type='index'")}
    assert {"ix_tidings_tasks_state", "ix_tidings_tasks_name", "ix_tidings_tasks_worker",
            "ix_tidings_tasks_received"} <= index_names
    cam.cancel(final=False)


def test_cleanup_deletes_rows_older_than_retention(tmp_path):
    db = f"sqlite:///{tmp_path / 'cam.sqlite'}"
    state = State()
    state.event(ev("task-received", "old", 1, name="n"))
    cam = SQLCamera(state, timer=Timer(), db=db, retention="1")
    cam.shutter()
    time.sleep(1.2)
    state.event(ev("task-received", "new", 2, name="n"))
    cam.shutter()
    cam.on_cleanup()
    assert rows(cam.engine, "select uuid from tidings_tasks") == [("new",)]
    cam.cancel(final=False)


def test_tasks_survive_eviction_from_memory(tmp_path):
    db = f"sqlite:///{tmp_path / 'cam.sqlite'}"
    state = State(max_tasks_in_memory=5)
    cam = SQLCamera(state, timer=Timer(), db=db)
    for i in range(20):
        state.event(ev("task-received", f"t{i}", 2 * i, name="n"))
        state.event(ev("task-succeeded", f"t{i}", 2 * i + 1))
        cam.shutter()
    assert rows(cam.engine, "select count(*) from tidings_tasks") == [(20,)]
    cam.cancel(final=False)
