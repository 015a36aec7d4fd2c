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


def test_a_binding_table_another_process_just_created_reads_as_empty(embedded_app):
    """A process that binds the first queue of an exchange creates its table file
    and writes it once it holds the file's lock: until then the file is empty, and
    another process that reads it, binds to it or unbinds from it meanwhile must
    take it for a table without bindings (two workers starting at once crashed on
    it)."""
    with embedded_app.connection_for_write() as conn:
        channel = conn.default_channel
        channel.control_folder.mkdir(parents=True, exist_ok=True)
        (channel.control_folder / "fresh.exchange").write_bytes(b"")
        assert channel.get_table("fresh") == []
        channel.exchange_declare("fresh", "topic")
        channel.queue_declare("q1")
        channel.queue_bind("q1", "fresh", "a.#")
        assert [q.queue for q in channel.get_table("fresh")] == ["q1"]
        channel.exchange_declare("gone", "topic")
        channel.queue_declare("q2")
        channel.queue_bind("q2", "gone", "#")
        (channel.control_folder / "gone.exchange").write_bytes(b"")
        channel.queue_delete("q2")  # unbinds it from "gone"
        assert channel.get_table("gone") == []


BIND_AT_ONCE = textwrap.dedent("""
    import sys, time
    from tidings import App
    folder, exchange, queue, at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    app = App('bind', broker_data_dir=folder)
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        channel.exchange_declare(exchange, 'topic')
        channel.queue_declare(queue)
        time.sleep(max(0.0, at - time.time()))
        channel.queue_bind(queue, exchange, '#')
""")


def test_processes_binding_to_one_exchange_at_once_all_keep_their_binding(embedded_app):
    """Each of several processes that bind a queue to one new exchange at the same
    moment (two workers of the demo, their pidbox queues) finds its binding in the
    table afterwards: none is overwritten, none of them fails."""
    folder = embedded_app.conf.broker_data_dir
    control = os.path.join(folder, "control")
    for attempt in range(4):
        exchange = f"together{attempt}"
        at = time.time() + 1.5  # the processes are up by then, and bind at this instant
        procs = [subprocess.Popen([sys.executable, "-c", BIND_AT_ONCE, folder, exchange,
                                   f"q{n}", str(at)], stderr=subprocess.PIPE, text=True)
                 for n in range(6)]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
        table = json.loads(read(os.path.join(control, f"{exchange}.exchange")))
        assert sorted(q[2] for q in table) == [f"q{n}" for n in range(6)], attempt
