"""``tidings web --db``: killed with SIGKILL and started again, the tasks from before are there.

On SQLite and on PostgreSQL (a schema of the test's own).  And the loading
itself (:class:`tidings.cameras.History`): what a State rebuilt from the
tables holds equals what the State that wrote them held.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.cli.helpers import cli_env, publish_cluster, wait_for
from tests.conftest import cleanup_broker, make_app, pg_schema
from tests.web.helpers import Web
from tidings.cameras import History
from tidings.events import State

pytestmark = pytest.mark.broker


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.sqlite'}"
        return
    with pg_schema() as (_, _, url):
        yield url


def test_the_web_monitor_keeps_its_history_across_sigkill(amqp_url, tmp_path, db_url):
    app, declared = make_app(amqp_url)
    env = cli_env(app, TIDINGS_BROKER_URL=amqp_url)
    try:
        first = Web(env, tmp_path, "--db", db_url, name="first")
        ids = publish_cluster(app, tasks=6)

        def tasks(web):
            status, _, body = web.get("/api/tasks")
            return {u: t["state"] for u, t in body.items()} if status == 200 else {}

        assert wait_for(lambda: len(tasks(first)) == 6, 20), first.running.stderr
        before = tasks(first)
        time.sleep(1.5)  # one write interval
        first.running.proc.send_signal(signal.SIGKILL)
        first.running.proc.wait(10)
        second = Web(env, tmp_path, "--db", db_url, name="second")
        try:
            assert "6 tasks and 1 workers loaded" in second.running.stderr, \
                second.running.stderr
            assert tasks(second) == before  # before any new event: from the database
            status, _, info = second.get(f"/api/task/info/{ids[2]}")
            assert status == 200 and info["state"] == "FAILURE" and info["exception"]
            status, _, listed = second.get("/api/tasks?limit=3")  # newest first: paged too
            assert status == 200 and len(listed) == 3 and set(listed) <= set(ids)
            more = publish_cluster(app, hostname="w2@cli", tasks=2)
            assert wait_for(lambda: set(more) <= set(tasks(second)), 20)
        finally:
            assert second.stop() == 0
    finally:
        cleanup_broker(amqp_url, declared)


def test_a_state_rebuilt_from_history_is_the_state_that_wrote_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    state = State()
    now = time.time()
    for i in range(20):
        uuid = f"t{i}"
        base = dict(uuid=uuid, hostname="w1@h", clock=i, pid=1, utcoffset=0)
        state.event(dict(base, type="task-received", name="proj.add", args=f"({i},)",
                         kwargs="{}", retries=0, timestamp=now + i, local_received=now + i))
        state.event(dict(base, type="task-started", timestamp=now + i + 0.1,
                         local_received=now + i + 0.1))
        if i % 4 == 3:
            state.event(dict(base, type="task-failed", exception="ValueError('x')",
                             traceback="Traceback ...", timestamp=now + i + 0.2,
                             local_received=now + i + 0.2))
        elif i % 4 != 2:  # i % 4 == 2 stays running
            state.event(dict(base, type="task-succeeded", result=str(i), runtime=0.1,
                             timestamp=now + i + 0.2, local_received=now + i + 0.2))
    state.event(dict(type="worker-heartbeat", hostname="w1@h", freq=2.0, active=1,
                     processed=15, timestamp=now + 21, local_received=now + 21, clock=99))
    writer = History(state, url)
    writer.start()
    writer.stop()  # the last shot writes everything
    rebuilt = State(max_tasks_in_memory=15)
    assert History(rebuilt, url).load() == (15, 1)
    fields = ("name", "state", "args", "result", "exception", "received", "started",
              "succeeded", "failed", "runtime")
    newest = [f"t{i}" for i in range(5, 20)]
    assert sorted(rebuilt.tasks) == sorted(newest)
    for uuid in newest:
        assert {f: getattr(rebuilt.tasks[uuid], f) for f in fields} == \
            {f: getattr(state.tasks[uuid], f) for f in fields}, uuid
    worker = rebuilt.workers["w1@h"]
    assert worker.processed == 15 and worker.active == 1
