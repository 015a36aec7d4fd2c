"""Durable ways to read events on RabbitMQ: ``--queue`` survives SIGKILL, ``--stream`` replays.

A monitor killed with SIGKILL mid-stream and started again with the same
``--queue`` applies every event at least once (duplicates are harmless: State
applies an event twice to the same result) and reports nothing lost; a
second reader of a ``--stream`` started after the stream was written, from
the first offset, rebuilds the same State as a reader that was there all
along.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
from kombu import Connection, Queue

from tests.cli.helpers import Running, cli_env, wait_for
from tests.conftest import cleanup_broker, make_app, unique
from tests.integration.test_loss import consuming
from tidings.events import EventDispatcher, State
from tidings.events.source import BrokerSource
from tidings.events.subscription import Subscription, parse_offset
from tidings.protocol.loss import DEAD_LETTER_SUFFIX

pytestmark = pytest.mark.broker


def publish(app, start: int, count: int, hostname: str = "w1@durable") -> list[str]:
    """``count`` tasks' received/started/succeeded events; returns the task ids."""
    ids = []
    with app.connection_for_write() as conn:
        d = EventDispatcher(conn, hostname=hostname, app=app, buffer_group=["task"])
        for i in range(start, start + count):
            uuid = f"task-{i}"
            ids.append(uuid)
            d.send("task-received", uuid=uuid, name="durable.add", args=f"({i},)",
                   kwargs="{}", root_id=uuid, parent_id=None, retries=0, eta=None,
                   expires=None)
            d.send("task-started", uuid=uuid)
            d.send("task-succeeded", uuid=uuid, result=str(i), runtime=0.01)
        d.flush()
    return ids


def delete_queues(url: str, *names: str) -> None:
    with Connection(url) as conn:
        for name in names:
            try:
                Queue(name, channel=conn.channel()).delete()
            except Exception:
                pass


def succeeded(out: str) -> set[str]:
    ids = set()
    for line in out.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("type") == "task-succeeded":
            ids.add(event["uuid"])
    return ids


def test_a_monitor_killed_mid_stream_continues_where_it_stopped(amqp_url, tmp_path):
    app, declared = make_app(amqp_url)
    name = unique("tidings-test-durable")
    env = cli_env(app, TIDINGS_BROKER_URL=amqp_url)
    args = ["events", "--json", "--queue", name]
    first = second = None
    try:
        first = Running(args, env, tmp_path, name="first")
        first.wait_ready()
        sent = publish(app, 0, 300)
        assert wait_for(lambda: len(succeeded(first.stdout)) > 0, 20)
        first.proc.send_signal(signal.SIGKILL)  # mid-stream: no goodbye, no ack for the rest
        first.proc.wait(10)
        sent += publish(app, 300, 300)  # while no monitor runs
        second = Running(args, env, tmp_path, name="second")
        second.wait_ready()
        sent += publish(app, 600, 100)
        assert wait_for(lambda: set(sent) <= succeeded(first.stdout) | succeeded(second.stdout),
                        30), len(set(sent) - succeeded(first.stdout) - succeeded(second.stdout))
        assert "receiving events from queue " + name in second.stderr
        assert second.stop() == 0
        assert "lost" not in second.stderr, second.stderr
        # replayed into one State, both outputs make the uninterrupted run's State
        together, alone = State(), State()
        for path in (first.out_path, second.out_path):
            for line in path.read_text().splitlines():
                try:
                    together.event(json.loads(line))
                except ValueError:
                    pass  # the line SIGKILL cut short
        for line in second.out_path.read_text().splitlines():
            alone.event(json.loads(line))
        assert {u: t.state for u, t in together.tasks.items()} == \
            {u: "SUCCESS" for u in sent}
    finally:
        for monitor in (first, second):  # one left running would declare its queue again
            if monitor is not None:
                monitor.stop(signal.SIGKILL)
        delete_queues(amqp_url, name, name + DEAD_LETTER_SUFFIX)
        cleanup_broker(amqp_url, declared)  # with the event exchange's dead-letter one


def read_stream(app, subscription: Subscription, until: int) -> tuple[State, BrokerSource]:
    """A State read from the stream until ``until`` tasks succeeded (or 30 s)."""
    state = State()
    source = BrokerSource(app, wakeup=False, subscription=subscription)
    with consuming(source, state.event):
        wait_for(lambda: sum(t.state == "SUCCESS" for t in state.tasks.values()) >= until, 30)
    return state, source


def connected(source: BrokerSource) -> bool:
    return source.status is not None and source.status.ok


def test_a_stream_read_from_first_rebuilds_the_same_state(amqp_url):
    app, declared = make_app(amqp_url)
    stream = unique("tidings-test-stream")
    try:
        # the first reader declares the stream and is there all along
        state = State()
        source = BrokerSource(app, wakeup=False, subscription=Subscription(stream=stream))
        with consuming(source, state.event):
            assert wait_for(lambda: connected(source), 20)
            ids = publish(app, 0, 500)
            assert wait_for(lambda: len(state.tasks) == 500 and all(
                t.state == "SUCCESS" for t in state.tasks.values()), 30)
        # a second reader, started afterwards, from the first offset
        later, later_source = read_stream(app, Subscription(stream=stream, offset="first"), 500)
        assert {u: (t.state, t.result) for u, t in later.tasks.items()} == \
            {u: (t.state, t.result) for u, t in state.tasks.items()}
        assert sorted(later.tasks) == sorted(ids)
        assert later_source.losses.total == 0
        # from a time: an hour ago is before all of it
        ago, _ = read_stream(app, Subscription(stream=stream, offset=parse_offset("-1h")), 500)
        assert sorted(ago.tasks) == sorted(ids)
        # from "next": only what comes after it joined
        nxt = State()
        nsource = BrokerSource(app, wakeup=False, subscription=Subscription(stream=stream))
        with consuming(nsource, nxt.event):
            assert wait_for(lambda: connected(nsource), 20)
            time.sleep(0.5)
            publish(app, 500, 10)
            assert wait_for(lambda: len(nxt.tasks) == 10, 20), len(nxt.tasks)
        assert sorted(nxt.tasks) == [f"task-{i}" for i in range(500, 510)]
    finally:
        delete_queues(amqp_url, stream)
        cleanup_broker(amqp_url, declared)
