"""The embedded (filesystem) broker: fan-out across processes, TTL, expiry, cleanup."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

from tests.cli.helpers import wait_for
from tidings import App
from tidings.events import EventDispatcher, EventReceiver

PUBLISH = textwrap.dedent("""
    import sys
    from tidings import App
    app = App('pub', broker_data_dir=sys.argv[1])
    with app.connection_for_write() as conn:
        d = app.events.Dispatcher(conn, hostname='remote@h', buffer_group=['task'])
        for i in range(int(sys.argv[2])):
            d.send('task-received', uuid=f't{i}', name='n')
        d.flush()
""")

LISTEN_FOREVER = textwrap.dedent("""
    import sys
    from tidings import App
    app = App('sub', broker_data_dir=sys.argv[1], event_queue_expires=float(sys.argv[2]))
    recv = app.events.Receiver(app.connection_for_read(), node_id='doomed')
    print('ready', flush=True)
    recv.capture(wakeup=False)
""")


def run_py(code, *args, **kwargs):
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True,
                          timeout=60, **kwargs)


def listening(app, handlers, **kwargs):
    recv = EventReceiver(app.connection_for_read(), handlers=handlers, app=app, **kwargs)
    with app.connection_for_read() as conn:
        recv.queue(conn.default_channel).declare()
    thread = threading.Thread(target=lambda: _capture(recv), daemon=True)
    thread.start()
    return recv, thread


def _capture(recv):
    try:
        recv.capture(wakeup=False)
    except Exception:  # pragma: no cover - reported by the assertions
        pass


def read(path):
    with open(path) as f:
        return f.read()




def test_fan_out_to_several_receivers_across_processes(embedded_app, tmp_path):
    folder = embedded_app.conf.broker_data_dir
    first, second = [], []
    r1, t1 = listening(embedded_app, {"*": first.append})
    r2, t2 = listening(embedded_app, {"*": second.append})
    run_py(PUBLISH, folder, 50)
    assert wait_for(lambda: len(first) == 50 and len(second) == 50)
    assert [e["uuid"] for e in first] == [f"t{i}" for i in range(50)]  # in order
    assert [e["uuid"] for e in second] == [f"t{i}" for i in range(50)]
    r1.should_stop = r2.should_stop = True
    t1.join(5)
    t2.join(5)


def test_clean_stop_deletes_queue_binding_and_messages(embedded_app):
    recv, thread = listening(embedded_app, {"*": lambda e: None}, node_id="tidy")
    control = os.path.join(embedded_app.conf.broker_data_dir, "control")
    table = os.path.join(control, f"{embedded_app.conf.event_exchange}.exchange")
    assert wait_for(lambda: os.path.exists(table) and "celeryev.tidy" in read(table))
    recv.should_stop = True
    thread.join(5)
    assert "celeryev.tidy" not in read(table)
    assert not os.path.exists(os.path.join(control, "celeryev.tidy.queue"))


def test_messages_older_than_the_ttl_are_dropped(embedded_app):
    got = []
    recv = EventReceiver(embedded_app.connection_for_read(), app=embedded_app, queue_ttl=0.3,
                         handlers={"*": got.append})
    with embedded_app.connection_for_read() as conn:
        recv.queue(conn.default_channel).declare()
    with embedded_app.connection_for_write() as conn:
        d = EventDispatcher(conn, app=embedded_app)
        d.send("worker-heartbeat", n=1)
        time.sleep(0.6)
        d.send("worker-heartbeat", n=2)
    recv.capture(limit=3, wakeup=False)
    assert [e["n"] for e in got] == [2]
    data = os.path.join(embedded_app.conf.broker_data_dir, "data")
    assert os.listdir(data) == []


def test_queue_of_a_dead_receiver_expires(embedded_app):
    folder = embedded_app.conf.broker_data_dir
    proc = subprocess.Popen([sys.executable, "-c", LISTEN_FOREVER, folder, "2.0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        control = os.path.join(folder, "control")
        table = os.path.join(control, f"{embedded_app.conf.event_exchange}.exchange")
        assert wait_for(lambda: os.path.exists(table) and "doomed" in read(table))
        run_py(PUBLISH, folder, 5)
        data = os.path.join(folder, "data")
        assert wait_for(lambda: os.listdir(data) == [])  # a live receiver consumes
        os.kill(proc.pid, signal.SIGKILL)  # dies without cleaning up
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    run_py(PUBLISH, folder, 5)
    assert len(os.listdir(data)) == 1  # not yet expired: the batch waits for it
    time.sleep(2.5)
    run_py(PUBLISH, folder, 5)  # the next publish finds the queue expired
    assert "doomed" not in json.dumps(json.loads(read(table)))
    assert os.listdir(data) == []
    assert not os.path.exists(os.path.join(control, "celeryev.doomed.queue"))


def test_default_folder_is_per_user(monkeypatch, tmp_path):
    from tidings.transport import default_data_dir, embedded_folder

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "tidings" / "broker"
    assert str(embedded_folder("filesystem:///srv/bus", None)) == "/srv/bus"
    assert embedded_folder(None, "/x") == embedded_folder("filesystem://", "/x")
    conn = App(broker_data_dir=str(tmp_path / "b")).connection_for_read()
    assert conn.transport.driver_type == "filesystem"
    assert (tmp_path / "b" / "data").is_dir()
