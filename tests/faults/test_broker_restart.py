"""Real broker restarts (RabbitMQ ``stop_app``/``start_app``, Redis shut down and started
again) under every consumer and a worker at once; and a broker that is unreachable for
the first 10 seconds.

Each component must not crash, must reconnect on its own within
:data:`~tests.faults.components.RECONNECT_BOUND` seconds of the broker's return (the
times are printed, ``pytest -s`` shows them), keep doing what it can while the broker
is away (the worker finishes the task it holds; the exporter keeps answering), and say
so.

These tests restart a shared broker: they are marked ``broker_restart`` so that
``-m "not broker_restart"`` leaves them out, and they bring the broker back even
when they fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import uuid
from contextlib import contextmanager

import pytest

from tests.cli.helpers import Running
from tests.cli.proxy import Proxy
from tests.faults.components import Components, send
from tests.worker.helpers import cluster, delete_queue, wait_for
from tidings.protocol.loss import DEAD_LETTER_SUFFIX

pytestmark = [pytest.mark.broker, pytest.mark.broker_restart]

#: Seconds the broker stays away.
OUTAGE = 5.0
REDIS_START = ("redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' "
               "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log")


def _ok(*cmd: str) -> bool:
    return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0


@contextmanager
def restartable(url: str):
    """``stop()``/``start()`` of the broker at ``url``; it is running again afterwards."""
    if url.startswith("amqp"):
        if not shutil.which("rabbitmqctl"):
            pytest.skip("rabbitmqctl not available")
        stop = lambda: _ok("rabbitmqctl", "-q", "stop_app")  # noqa: E731
        start = lambda: _ok("rabbitmqctl", "-q", "start_app")  # noqa: E731
        up = lambda: _ok("rabbitmq-diagnostics", "-q", "check_running")  # noqa: E731
    else:
        if not shutil.which("redis-server"):
            pytest.skip("redis-server not available")
        up = lambda: _ok("redis-cli", "-h", "127.0.0.1", "ping")  # noqa: E731

        def stop() -> bool:  # the client's exit status says nothing: the server is gone
            subprocess.run(["redis-cli", "-h", "127.0.0.1", "shutdown", "nosave"],
                           capture_output=True, timeout=60)
            return wait_for(lambda: not up(), 20)

        def start() -> bool:
            return subprocess.run(REDIS_START, shell=True, timeout=60).returncode == 0
    try:
        yield stop, start
    finally:
        if not up():
            start()
        assert wait_for(up, 60), "the broker did not come back"


@pytest.mark.parametrize("broker", ["amqp", "redis"])
def test_every_component_survives_a_broker_restart(broker, amqp_url, redis_url, tmp_path):
    url = amqp_url if broker == "amqp" else redis_url
    with restartable(url) as (stop, start), cluster(url, tmp_path) as c:
        comp = Components(c, tmp_path, url)
        try:
            first = send(c, 1, 1)
            assert wait_for(lambda: all(comp.everywhere(first).values()), 40), \
                comp.everywhere(first)
            assert wait_for(lambda: comp.succeeded() >= 1, 20)
            held = c.proj.sleep.delay(OUTAGE + 2).id
            assert wait_for(lambda: comp.dumped(held, "task-started"), 20)
            assert stop()
            down_at = time.monotonic()
            time.sleep(OUTAGE)
            # while the broker is away: nothing crashed, the exporter and the web monitor
            # still answer, the terminal monitor's state is still there
            assert comp.alive()
            assert comp.metrics() is not None
            assert comp.web_serves(first)
            assert comp.state.tasks[first].state == "SUCCESS"
            assert start()
            up_at = time.monotonic()
            seen: dict[str, float] = {}
            assert comp.back_in_service(up_at, seen), (seen, comp.diagnosis())
            # the task the worker held while the broker was away finished, and said so (to
            # the consumers that were back by then: the one event is not sent twice)
            assert wait_for(lambda: any(comp.everywhere(held).values()), 20), \
                comp.worker.log[-3000:]
            assert "lost" in comp.dump.stderr, comp.dump.stderr  # the outage was reported
            assert "tidings_reconnects_total" in (comp.metrics() or "")
            print(f"\n{broker}: broker away {up_at - down_at:.1f} s; back in service "
                  "after it returned: "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(seen.items())))
        finally:
            comp.close()


def test_a_broker_unreachable_for_the_first_ten_seconds(amqp_url, tmp_path):
    """Every consumer and the worker wait for a broker that is not there yet (Celery's
    ``broker_connection_retry_on_startup``), say so, and work once it is there."""
    proxy = Proxy(5672)  # not listening yet: connections are refused
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}//"
    with cluster(amqp_url, tmp_path) as c:
        comp = Components(c, tmp_path, url, name="late@test", wait=False)
        try:
            time.sleep(10)
            assert comp.alive(), (comp.worker.log, [r.stderr for r in comp.running])
            assert "Cannot connect to" in comp.dump.stderr and "retrying" in comp.dump.stderr
            assert "Cannot connect to" in comp.worker.log
            assert not comp.ingest.source.status.ok  # the monitor shows it has no broker
            proxy.start()
            up_at = time.monotonic()
            seen: dict[str, float] = {}
            assert comp.back_in_service(up_at, seen), (seen, comp.diagnosis(),
                                                       comp.worker.log[-2000:])
            print("\nunreachable for 10 s, then reachable: back in service after "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(seen.items())))
        finally:
            comp.close()
            proxy.cut()


def test_a_durable_queue_and_confirmed_events_lose_nothing_across_a_restart(amqp_url,
                                                                          tmp_path):
    """RabbitMQ restarted while tasks run: a worker with ``--events-confirm`` and a
    ``--queue`` reader; every task's outcome reaches the reader, none is counted lost.

    The client sends no ``task-sent``: its publishes are not confirmed, so one
    written as the broker goes down is lost, and the reader rightly counts it.
    """
    name = f"tidings-test-confirm-{uuid.uuid4().hex[:8]}"
    with restartable(amqp_url) as (stop, start), cluster(amqp_url, tmp_path) as c:
        c.proj.app.conf.task_send_sent_event = False  # the worker is the only sender
        env = dict(c.env, TIDINGS_BROKER_URL=amqp_url)
        worker = c.worker("-E", "--events-confirm", "-P", "threads", "-c", "2",
                          name="confirm@test", env=env)
        reader = Running(["events", "--json", "--queue", name], env, tmp_path, name="reader")
        try:
            reader.wait_ready()
            sent: list[str] = []
            done = threading.Event()

            def feed() -> None:
                for i in range(120):
                    sent.append(send(c, i, 1, deadline=60))
                    time.sleep(0.05)
                done.set()

            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
            assert wait_for(lambda: len(sent) >= 30, 30)
            assert stop()
            time.sleep(OUTAGE)
            assert start()
            assert done.wait(120), len(sent)
            outcome = lambda: {e["uuid"] for e in _events(reader.stdout)  # noqa: E731
                               if e.get("type") == "task-succeeded"}
            # every task the worker ran: the client's own publishes are not confirmed, so
            # a task sent as the broker went down may never have reached it
            ran = lambda: set(RAN.findall(worker.log)) & set(sent)  # noqa: E731
            assert wait_for(lambda: len(ran()) >= len(sent) - 5, 60), (len(ran()), len(sent))
            assert wait_for(lambda: ran() <= outcome(), 60), \
                (len(ran() - outcome()), reader.stderr[-2000:], worker.log[-2000:])
            assert "lost" in reader.stderr  # the outage was seen ...
            assert reader.stop() == 0
            assert "-> lost " not in reader.stderr, reader.stderr[-2000:]  # ... no event was
        finally:
            if reader.proc.poll() is None:
                reader.stop()
            delete_queue(amqp_url, name)
            delete_queue(amqp_url, name + DEAD_LETTER_SUFFIX)


#: A task the worker's log says succeeded.
RAN = re.compile(r"Task proj\.add\[([0-9a-f-]+)\] succeeded")


def _events(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            out.append(event)
    return out
