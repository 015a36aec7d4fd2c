"""The worker's one wait for a broker message or a finished job (``tidings.worker.outcomes``)."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from kombu import Connection

from tidings.transport import waitable_fd
from tidings.worker.outcomes import Outcomes

#: Longer than any of these waits should take: a wait that lasts it was not woken.
LONG_MS = 10_000


@pytest.fixture
def watched():
    """Outcomes watching one end of a socket pair (the other end plays the broker)."""
    ours, broker = socket.socketpair()
    outcomes = Outcomes()
    assert outcomes.watch(ours.fileno())
    yield outcomes, broker
    ours.close()
    broker.close()


def test_a_finished_job_ends_the_wait_for_the_broker(watched):
    outcomes, _ = watched
    threading.Timer(0.05, outcomes.put, (("job", "outcome"),)).start()
    start = time.monotonic()
    assert outcomes.wait(LONG_MS) == (False, [])  # woken by the outcome, not by a message
    assert time.monotonic() - start < LONG_MS / 1000 / 2
    assert outcomes.take() == [("job", "outcome")]
    assert outcomes.empty()


def test_a_message_ends_the_wait_and_says_so(watched):
    outcomes, broker = watched
    broker.send(b"\x01")
    assert outcomes.wait(LONG_MS) == (True, [])
    assert outcomes.empty()


def test_nothing_pending_the_wait_lasts_its_timeout(watched):
    outcomes, _ = watched
    start = time.monotonic()
    assert outcomes.wait(50) == (False, [])
    assert time.monotonic() - start >= 0.04


def test_wakeups_are_consumed_and_none_is_lost(watched):
    """Many outcomes (more wake-ups than the pipe holds) end one wait; the next
    wait blocks until the next outcome, which it does not miss."""
    outcomes, _ = watched
    putter = threading.Thread(target=lambda: [outcomes.put((n, None)) for n in range(70_000)])
    putter.start()  # past a pipe's 64 KiB of wake-ups: put never blocks nor raises
    putter.join()
    assert outcomes.wait(LONG_MS) == (False, [])
    assert outcomes.take() == [(n, None) for n in range(70_000)]  # in order
    assert outcomes.empty() and outcomes.take() == []
    start = time.monotonic()
    assert outcomes.wait(50) == (False, [])  # every wake-up was consumed: this one times out
    assert time.monotonic() - start >= 0.04
    threading.Thread(target=outcomes.put, args=(("late", None),)).start()
    assert outcomes.wait(LONG_MS) == (False, [])
    assert outcomes.take() == [("late", None)]


def test_the_waiting_thread_is_not_woken_by_its_own_outcomes(watched):
    """A prefork pool's outcomes are put by the waiting thread itself, which takes
    them before it waits again: no wake-up is written for them."""
    outcomes, _ = watched
    outcomes.put(("own", None))
    start = time.monotonic()
    assert outcomes.wait(50) == (False, [])
    assert time.monotonic() - start >= 0.04
    assert outcomes.take() == [("own", None)]


def test_a_pools_descriptors_are_waited_for_and_named(watched):
    outcomes, broker = watched
    quiet_r, quiet_w = os.pipe()
    ready_r, ready_w = os.pipe()
    try:
        threading.Timer(0.05, os.write, (ready_w, b"x")).start()
        assert outcomes.wait(LONG_MS, [quiet_r, ready_r]) == (False, [ready_r])
        broker.send(b"\x01")
        assert outcomes.wait(LONG_MS, [quiet_r, ready_r]) == (True, [ready_r])
    finally:
        for fd in (quiet_r, quiet_w, ready_r, ready_w):
            os.close(fd)


def test_rabbitmq_over_tcp_is_waited_for_on_its_socket(amqp_url):
    with Connection(amqp_url) as conn:
        conn.ensure_connection(max_retries=1)
        fd = waitable_fd(conn)
        assert fd == conn.connection.sock.fileno()


def test_redis_and_memory_are_not(redis_url):
    for url in (redis_url, "memory://"):
        with Connection(url) as conn:
            conn.ensure_connection(max_retries=1)
            assert waitable_fd(conn) is None


def test_a_buffered_rabbitmq_connection_is_not(amqp_url):
    """Bytes a buffered transport already read are not on the socket any more."""
    from tidings.transport import connection_for

    with connection_for(amqp_url, buffered_reads=True) as conn:
        conn.ensure_connection(max_retries=1)
        assert conn.connection.sock is not None
        assert waitable_fd(conn) is None
