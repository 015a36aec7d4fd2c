"""The real ``tidings events`` command, as a subprocess, against real brokers."""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.helpers import (
    Running,
    cli_env,
    publish_cluster,
    run,
    wait_for,
)
from tests.conftest import (
    AMQP_URL,
    FIXTURES,
    ROOT,
    cleanup_broker,
    delete_queue,
    make_app,
    pg_schema,
    unique,
)

pytestmark = pytest.mark.broker

# One regular expression per event type: the shape of Celery's dump line.
SHAPES = {
    "worker-online": r"^\S+ \[[^\]]+\] started: active=0, clock=\d+, freq=2\.0, ",
    "task-received": r"^\S+ \[[^\]]+\] task received: proj\.add\(\S+\) args=\(\d+, 1\) "
                     r"kwargs=\{\} clock=\d+, eta=None, expires=None, local_received=",
    "task-started": r"^\S+ \[[^\]]+\] task started: proj\.add\(\S+\) args=\(\d+, 1\) "
                    r"kwargs=\{\} clock=\d+, local_received=[0-9.]+, pid=\d+, utcoffset=",
    "task-succeeded": r"^\S+ \[[^\]]+\] task succeeded: proj\.add\(\S+\) args=.* "
                      r"result=\d+, runtime=0\.01, utcoffset=",
    "task-failed": r"^\S+ \[[^\]]+\] task failed: proj\.add\(\S+\) .*exception=ValueError",
}


def dump_lines(running: Running) -> list[str]:
    return [line for line in running.stdout.splitlines() if line.strip()]


def test_dump_text(broker_app, tmp_path):
    cli = Running(["-b", broker_app.conf.broker_url, "events", "--dump"],
                  cli_env(broker_app), tmp_path)
    cli.wait_ready()
    publish_cluster(broker_app, tasks=3)
    assert wait_for(lambda: "heartbeat:" in cli.stdout)
    assert cli.stop() == 0
    text = cli.stdout
    for type_, shape in SHAPES.items():
        assert re.search(shape, text, re.M), (type_, text)
    assert "-> evdump: starting capture..." in cli.stderr


def test_dump_json_and_filters(broker_app, tmp_path):
    cli = Running(["-b", broker_app.conf.broker_url, "events", "--json", "--type", "task-*",
                   "--hostname", "w1@*", "--task-name", "proj.a*"],
                  cli_env(broker_app), tmp_path)
    cli.wait_ready()
    publish_cluster(broker_app, hostname="w1@cli", tasks=2, name="proj.add")
    publish_cluster(broker_app, hostname="w2@cli", tasks=2, name="proj.add")
    publish_cluster(broker_app, hostname="w1@cli", tasks=2, name="proj.mul")
    assert wait_for(lambda: len(dump_lines(cli)) >= 6)
    time.sleep(1.0)
    assert cli.stop() == 0
    events = [json.loads(line) for line in dump_lines(cli)]
    assert [(e["type"], e["uuid"]) for e in events] == [
        ("task-received", "w1@cli-proj.add-0"), ("task-started", "w1@cli-proj.add-0"),
        ("task-succeeded", "w1@cli-proj.add-0"), ("task-received", "w1@cli-proj.add-1"),
        ("task-started", "w1@cli-proj.add-1"), ("task-succeeded", "w1@cli-proj.add-1")]
    assert all("local_received" in e and "clock" in e for e in events)


def test_replay_prints_like_celery(tmp_path):
    out = run(["events", "--dump", "--replay", str(FIXTURES / "events-rabbitmq.jsonl")],
              cli_env(make_app("memory://")[0]))
    assert out.returncode == 0
    celery = (FIXTURES / "dump-output.txt").read_text().splitlines()[1:]
    mask = re.compile(r"local_received=[0-9.]+")
    assert [mask.sub("", x) for x in out.stdout.splitlines()] == [mask.sub("", x)
                                                                   for x in celery]
    assert "replayed 107 events" in out.stderr
    # a JSON dump replays too: dump -> file -> replay gives the same lines
    ndjson = tmp_path / "events.ndjson"
    again = run(["events", "--json", "--replay", str(FIXTURES / "events-rabbitmq.jsonl")],
                cli_env(make_app("memory://")[0]))
    ndjson.write_text(again.stdout)
    text = run(["events", "--dump", "--replay", str(ndjson)], cli_env(make_app("memory://")[0]))
    assert text.stdout == out.stdout


def camera_shots(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_custom_camera_by_dotted_path(broker_app, tmp_path):
    shots = tmp_path / "shots.jsonl"
    cli = Running(["-b", broker_app.conf.broker_url, "events", "-c",
                   "tests.cli.cameras.FileCamera", "-F", "0.2"],
                  cli_env(broker_app, TEST_CAMERA_OUT=str(shots)), tmp_path)
    cli.wait_ready()
    ids = publish_cluster(broker_app, tasks=3)
    assert wait_for(lambda: any(
        all(u in s["tasks"] for u in ids) for s in camera_shots(shots)), 20)
    assert cli.stop() == 0
    last = camera_shots(shots)[-1]
    assert last["tasks"][ids[0]] == ["proj.add", "SUCCESS"]
    assert last["tasks"][ids[2]] == ["proj.add", "FAILURE"]
    assert last["workers"] == ["w1@cli"]
    assert "Taking snapshots with tests.cli.cameras.FileCamera" in cli.stderr


def test_camera_maxrate_limits_shots(amqp_url, tmp_path):
    app, declared = make_app(amqp_url)
    try:
        shots = tmp_path / "shots.jsonl"
        cli = Running(["-b", amqp_url, "events", "-c", "tests.cli.cameras.FileCamera",
                       "--freq", "0.05", "--maxrate", "2/s"],
                      cli_env(app, TEST_CAMERA_OUT=str(shots)), tmp_path)
        cli.wait_ready()
        started = time.monotonic()
        time.sleep(3.0)
        assert cli.stop() == 0
        elapsed = time.monotonic() - started
        count = len(camera_shots(shots))
        # 60 timer ticks; the bucket allows one shot at once and then 2 per second,
        # plus the final snapshot at shutdown
        assert 3 <= count <= 1 + 2 * elapsed + 2, (count, elapsed)
    finally:
        cleanup_broker(amqp_url, declared)


def test_sql_camera_on_sqlite(broker_app, tmp_path):
    import sqlalchemy

    db = f"sqlite:///{tmp_path / 'cam.sqlite'}"
    cli = Running(["-b", broker_app.conf.broker_url, "events", "--camera",
                   "tidings.cameras.SQLCamera", "--db", db, "-F", "0.2"],
                  cli_env(broker_app), tmp_path)
    cli.wait_ready()
    ids = publish_cluster(broker_app, tasks=3)
    engine = sqlalchemy.create_engine(db)

    def states():
        try:
            with engine.connect() as conn:
                return dict(conn.execute(sqlalchemy.text(
                    "select uuid, state from tidings_tasks")).fetchall())
        except sqlalchemy.exc.OperationalError:
            return {}

    assert wait_for(lambda: len(states()) == 3, 20)
    assert cli.stop() == 0
    assert states() == {ids[0]: "SUCCESS", ids[1]: "SUCCESS", ids[2]: "FAILURE"}
    engine.dispose()


def test_sql_camera_on_postgresql(amqp_url, tmp_path):
    import sqlalchemy

    with pg_schema() as (engine, schema, db):
        app, declared = make_app(amqp_url)
        try:
            cli = Running(["-b", amqp_url, "events", "-c", "tidings.cameras.SQLCamera",
                           "-F", "0.2"], cli_env(app, TIDINGS_CAMERA_DB=db), tmp_path)
            cli.wait_ready()
            ids = publish_cluster(app, tasks=3)

            def states():
                try:
                    with engine.connect() as conn:
                        return dict(conn.execute(sqlalchemy.text(
                            f'select uuid, state from "{schema}".tidings_tasks')).fetchall())
                except sqlalchemy.exc.ProgrammingError:
                    return {}

            assert wait_for(lambda: len(states()) == 3, 20), cli.stderr
            assert cli.stop() == 0
            assert states() == {ids[0]: "SUCCESS", ids[1]: "SUCCESS", ids[2]: "FAILURE"}
            with engine.connect() as conn:
                indexes = {r[0] for r in conn.execute(sqlalchemy.text(
                    "select indexname from pg_indexes where schemaname = :s"), {"s": schema})}
            assert {"ix_tidings_tasks_state", "ix_tidings_tasks_name", "ix_tidings_tasks_worker",
                    "ix_tidings_tasks_received"} <= indexes
        finally:
            cleanup_broker(amqp_url, declared)


# -- daemon mode ------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return proc_status(pid).get("State", "").split()[0] != "Z"


def start_detached(app, tmp_path, extra=(), env_extra=None, name="cam"):
    pidfile = tmp_path / f"{name}.pid"
    logfile = tmp_path / f"{name}.log"
    shots = tmp_path / f"{name}-shots.jsonl"
    result = run(["-b", app.conf.broker_url, "events", "-c", "tests.cli.cameras.FileCamera",
                  "-F", "0.2", "--detach", "--pidfile", str(pidfile), "--logfile", str(logfile),
                  *extra], cli_env(app, TEST_CAMERA_OUT=str(shots), **(env_extra or {})),
                 cwd=tmp_path)
    return result, pidfile, logfile, shots


def test_detach_pidfile_logfile_and_sigterm(amqp_url, tmp_path):
    app, declared = make_app(amqp_url)
    try:
        result, pidfile, logfile, shots = start_detached(app, tmp_path)
        assert result.returncode == 0, result.stderr
        assert wait_for(lambda: pidfile.exists() and pidfile.read_text().strip().isdigit())
        pid = int(pidfile.read_text())
        assert wait_for(lambda: "receiving events" in logfile.read_text()), logfile.read_text()
        status = proc_status(pid)
        assert status["PPid"] == "1" or int(status["PPid"]) != os.getpid()  # double fork
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert cmdline.startswith("tidings events:cam")
        # a session of its own, of which it is not the leader (it cannot get a terminal)
        assert os.getsid(pid) not in (os.getsid(0), pid)
        ids = publish_cluster(app, tasks=2)
        assert wait_for(lambda: any(ids[0] in s["tasks"] for s in camera_shots(shots)))
        before = len(camera_shots(shots))
        os.kill(pid, signal.SIGTERM)
        assert wait_for(lambda: not alive(pid), 20)
        assert not pidfile.exists()
        assert len(camera_shots(shots)) > before  # the final snapshot
        assert "stopped after" in logfile.read_text()
    finally:
        cleanup_broker(amqp_url, declared)


def test_stale_pidfile_replaced_and_second_instance_refused(amqp_url, tmp_path):
    app, declared = make_app(amqp_url)
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        pidfile = tmp_path / "cam.pid"
        pidfile.write_text(f"{dead.pid}\n")
        result, pidfile, _, _ = start_detached(app, tmp_path)
        assert result.returncode == 0
        assert wait_for(lambda: pidfile.read_text().strip() not in ("", str(dead.pid)))
        pid = int(pidfile.read_text())
        assert alive(pid)
        second, _, _, _ = start_detached(app, tmp_path)
        assert second.returncode != 0
        assert f"names running process {pid}" in second.stderr
        assert "Traceback" not in second.stderr
        assert int(pidfile.read_text()) == pid
        os.kill(pid, signal.SIGTERM)
        assert wait_for(lambda: not alive(pid), 20)
    finally:
        cleanup_broker(amqp_url, declared)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_detach_drops_privileges(amqp_url, tmp_path):
    import shutil
    import tempfile

    user = pwd.getpwnam("nobody")
    app, declared = make_app(amqp_url)
    # pytest's own temporary folders are private to root: use one nobody can enter
    run_dir = Path(tempfile.mkdtemp(prefix="tidings-uid-", dir="/tmp"))
    os.chmod(run_dir, 0o777)
    try:
        result = run(["-b", amqp_url, "events", "-c", "tests.cli.cameras.FileCamera",
                      "--detach", "--pidfile", str(run_dir / "cam.pid"),
                      "--logfile", str(run_dir / "cam.log"), "--uid", "nobody",
                      "--gid", str(user.pw_gid), "--umask", "027",
                      "--workdir", str(run_dir)],
                     cli_env(app, TEST_CAMERA_OUT=str(run_dir / "shots.jsonl")), cwd=ROOT)
        assert result.returncode == 0, result.stderr
        pidfile = run_dir / "cam.pid"
        assert wait_for(lambda: pidfile.exists() and pidfile.read_text().strip().isdigit())
        pid = int(pidfile.read_text())
        assert wait_for(lambda: "receiving events" in (run_dir / "cam.log").read_text())
        status = proc_status(pid)
        assert status["Uid"].split()[:2] == [str(user.pw_uid)] * 2
        assert status["Gid"].split()[:2] == [str(user.pw_gid)] * 2
        assert os.stat(pidfile).st_uid == user.pw_uid
        assert Path(f"/proc/{pid}/cwd").resolve() == run_dir.resolve()
        assert status["Umask"] == "0027"
        ids = publish_cluster(app, tasks=1)
        assert wait_for(lambda: ids[0] in (run_dir / "shots.jsonl").read_text()
                        if (run_dir / "shots.jsonl").exists() else False)
        assert os.stat(run_dir / "shots.jsonl").st_mode & 0o777 == 0o640  # umask 027
        os.kill(pid, signal.SIGTERM)
        assert wait_for(lambda: not alive(pid), 20)
        assert not pidfile.exists()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        cleanup_broker(amqp_url, declared)


def test_sigint_stops_dump_cleanly_and_sets_title(amqp_url, tmp_path):
    app, declared = make_app(amqp_url)
    try:
        cli = Running(["-b", amqp_url, "events", "--dump"], cli_env(app), tmp_path)
        cli.wait_ready()
        cmdline = Path(f"/proc/{cli.proc.pid}/cmdline").read_bytes().replace(b"\0", b" ")
        assert cmdline.decode().startswith("tidings events:dump -b amqp://guest:***@")
        assert cli.stop(signal.SIGINT) == 0
    finally:
        cleanup_broker(amqp_url, declared)


# -- configuration from an app ----------------------------------------------------------------


def test_celery_app_supplies_broker_and_exchange(amqp_url, tmp_path):
    app, declared = make_app(amqp_url)
    (tmp_path / "celeryproj.py").write_text(
        "from celery import Celery\n"
        f"app = Celery('proj', broker={amqp_url!r})\n"
        f"app.conf.event_exchange = {app.conf.event_exchange!r}\n"
        f"app.conf.control_exchange = {app.conf.control_exchange!r}\n")
    env = {k: v for k, v in cli_env(app).items()
           if k not in ("TIDINGS_EVENT_EXCHANGE", "TIDINGS_CONTROL_EXCHANGE")}
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{ROOT}"
    try:
        cli = Running(["-A", "celeryproj", "events", "--dump"], env, tmp_path)
        cli.wait_ready()
        publish_cluster(app, tasks=1)
        assert wait_for(lambda: "task succeeded" in cli.stdout)
        assert cli.stop() == 0
    finally:
        cleanup_broker(amqp_url, declared)


def test_events_from_a_real_celery_worker(broker_url, tmp_path):
    app, declared = make_app(broker_url)
    queue = unique("tidings-test-q")
    env = cli_env(app, INTEROP_BROKER=broker_url, INTEROP_EVENT_EXCHANGE=app.conf.event_exchange,
                  INTEROP_CONTROL_EXCHANGE=app.conf.control_exchange, INTEROP_QUEUE=queue)
    cli = Running(["-b", broker_url, "events", "--json"], env, tmp_path)
    worker = None
    try:
        cli.wait_ready()
        with (tmp_path / "worker.log").open("w") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tests.interop.celery_app", "worker",
                 "-E", "-P", "solo", "-n", "cel@cli", "-Q", queue, "--without-gossip",
                 "--without-mingle", "-l", "INFO"], env=env, stdout=log,
                stderr=subprocess.STDOUT, cwd=ROOT)
        assert wait_for(lambda: '"worker-online"' in cli.stdout, 60)
        from tests.interop.test_celery_events import celery_client

        client = celery_client(env)
        result = client.send_task("interop.add", (20, 22))
        assert wait_for(lambda: '"task-succeeded"' in cli.stdout, 60)
        events = [json.loads(line) for line in cli.stdout.splitlines()]
        done = [e for e in events if e["type"] == "task-succeeded"]
        assert done[0]["uuid"] == result.id and done[0]["result"] == "42"
        assert any(e["type"] == "task-received" and e["name"] == "interop.add"
                   for e in events)
        assert all(e["hostname"] == "cel@cli" for e in events if e["type"] != "task-sent")
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        cli.stop()
        cleanup_broker(broker_url, declared)
        delete_queue(broker_url, queue)


# -- user errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message", "code"), [
    (["-A", "no_such_module_xyz", "events", "--dump"],
     "cannot import 'no_such_module_xyz'", 1),
    (["-A", "tests.cli.cameras:missing", "events", "--dump"],
     "has no attribute 'missing'", 1),
    (["-A", "tests.cli.cameras:FileCamera", "events", "--dump"],
     "not a Tidings App or Celery app", 1),
    (["-b", "amqp://guest:secret@127.0.0.1:1//", "events", "--dump"],
     "cannot connect to the broker at amqp://guest:***@127.0.0.1:1//", 69),
    (["-b", "amqp://guest:secret@127.0.0.1:1//", "events", "-c",
      "tests.cli.cameras.FileCamera"], "cannot connect to the broker", 69),
    (["-b", "amqp://guest:secret@127.0.0.1:1//", "-A", "tests.worker.proj", "worker", "-P",
      "solo"], "cannot connect to the broker at amqp://guest:***@127.0.0.1:1//", 69),
    (["-b", "amqp://guest:secret@127.0.0.1:1//", "control", "ping"],
     "cannot connect to the broker", 69),
    (["control", "revoke", "x", "--signal", "SIGNOPE"], "unknown signal 'SIGNOPE'", 2),
    (["worker", "-P", "gevent"], "Invalid value for '-P' / '--pool'", 2),
    (["events", "-c", "no.such.Camera"], "cannot load camera 'no.such.Camera'", 1),
    (["events", "-c", "tests.cli.cameras.NotACamera"], "is not a camera", 1),
    (["events", "-c", "tests.cli.cameras.FileCamera", "--maxrate", "ten"],
     "Invalid value for '-r' / '--maxrate'", 2),
    (["events", "-c", "tests.cli.cameras.FileCamera", "--freq", "0"],
     "must be positive", 2),
    (["events", "-c", "tests.cli.cameras.FileCamera", "--umask", "rwx"], "invalid umask", 2),
    (["events", "-c", "tests.cli.cameras.FileCamera", "--db", "sqlite://"],
     "--db is not an option of camera", 2),
    (["events", "-c", "tidings.cameras.SQLCamera", "--retention", "forever"],
     "invalid duration", 2),
    (["events", "--dump", "--detach"], "--detach applies only with --camera", 2),
    (["events"], "the live monitor needs a terminal; to print events to a file or a pipe, "
                 "use --dump", 2),
    (["events", "--dump", "--replay", "/no/such/file"], "does not exist", 2),
    (["-l", "loud", "events"], "Invalid value for '-l' / '--loglevel'", 2),
])
def test_user_errors_are_one_line(args, message, code, tmp_path):
    app, _ = make_app(AMQP_URL)
    # without waiting for a broker that is not up (the default waits: tests/faults)
    env = cli_env(app, TIDINGS_BROKER_DATA_DIR=str(tmp_path / "broker"),
                  TIDINGS_BROKER_CONNECTION_RETRY_ON_STARTUP="0")
    result = run(args, env, cwd=ROOT)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1


def test_tracebacks_only_with_debug(tmp_path):
    env = cli_env(make_app(AMQP_URL)[0])
    (tmp_path / "explodes.py").write_text("raise RuntimeError('boom at import')\n")
    env["PYTHONPATH"] = str(tmp_path)
    quiet = run(["-A", "explodes", "events", "--dump"], env)
    assert "boom at import" in quiet.stderr and "Traceback" not in quiet.stderr
    assert quiet.returncode == 1
    loud = run(["-l", "debug", "-A", "explodes", "events", "--dump"], env)
    assert "Traceback" in loud.stderr and "RuntimeError: boom at import" in loud.stderr
    assert loud.returncode == 1


def test_camera_reconnects_after_a_broker_outage(amqp_url, tmp_path):
    from tests.cli.proxy import Proxy

    app, declared = make_app(amqp_url)
    proxy = Proxy(5672)
    proxy.start()
    shots = tmp_path / "shots.jsonl"
    via_proxy = f"amqp://guest:guest@127.0.0.1:{proxy.port}//"
    cli = Running(["-b", via_proxy, "events", "-c", "tests.cli.cameras.FileCamera", "-F",
                   "0.2"], cli_env(app, TEST_CAMERA_OUT=str(shots)), tmp_path)
    try:
        cli.wait_ready()
        before = publish_cluster(app, hostname="w1@before", tasks=1)
        assert wait_for(lambda: any(before[0] in s["tasks"] for s in camera_shots(shots)))
        proxy.cut()
        assert wait_for(lambda: "lost" in cli.stderr, 20), cli.stderr
        time.sleep(1.5)
        assert cli.proc.poll() is None  # still running, trying again
        proxy.start()
        assert wait_for(lambda: cli.stderr.count("receiving events") >= 2, 40), cli.stderr
        after = publish_cluster(app, hostname="w1@after", tasks=1)
        assert wait_for(lambda: any(after[0] in s["tasks"] for s in camera_shots(shots)), 20)
        last = camera_shots(shots)[-1]
        assert before[0] in last["tasks"]  # the state survived the outage
        assert cli.stop() == 0
    finally:
        cli.stop()
        proxy.cut()
        cleanup_broker(amqp_url, declared)
