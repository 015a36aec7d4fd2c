"""The prefork pool's outcomes, read by the caller's thread (``fds`` and ``collect``).

A real pool of forked processes running ``tests.worker.proj``'s tasks; no
broker: this is what the worker's thread does between polls.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from multiprocessing.connection import wait

import pytest

from tests.worker import proj
from tidings.worker.outcome import Failed, Succeeded
from tidings.worker.pool import Job, PreforkPool

#: Longer than any job here takes to come back.
PATIENCE = 30.0


def job(job_id: str, name: str, *args: object) -> Job:
    return Job(job_id, name, list(args), {}, {"id": job_id, "retries": 0})


@pytest.fixture
def pool():
    done: list[tuple[Job, object, int]] = []
    p = PreforkPool(proj.app, 2, lambda j, outcome: done.append(
        (j, outcome, threading.get_ident())))
    p.start()
    p.done = done
    yield p
    p.kill()


def collect_until(pool: PreforkPool, count: int) -> None:
    """What the worker's thread does: wait for the pool's descriptors, collect."""
    deadline = time.monotonic() + PATIENCE
    while len(pool.done) < count and time.monotonic() < deadline:
        ready = wait(pool.fds(), timeout=0.1)
        pool.collect(ready)


def test_outcomes_come_only_through_collect_in_the_callers_thread(pool):
    pool.apply(job("a", "proj.add", 2, 3))
    pool.apply(job("b", "proj.fail", 7))
    time.sleep(0.5)  # both have finished; no thread of the pool's took the outcomes
    assert pool.done == []
    assert set(pool.active) == {"a", "b"}
    collect_until(pool, 2)
    outcomes = {j.id: outcome for j, outcome, _ in pool.done}
    assert outcomes["a"] == Succeeded("5", outcomes["a"].runtime)
    assert isinstance(outcomes["b"], Failed) and "intentional failure" in outcomes["b"][0]
    assert {thread for _, _, thread in pool.done} == {threading.get_ident()}
    assert pool.active == {} and pool.free == 2


def test_a_killed_process_is_replaced_when_collected(pool):
    pool.apply(job("slow", "proj.sleep", 30))
    pid = pool.active["slow"].pid
    before = set(pool.fds())
    os.kill(pid, signal.SIGKILL)
    collect_until(pool, 1)
    (j, outcome, _), = pool.done
    assert j.id == "slow" and isinstance(outcome, Failed)
    assert "exited" in outcome[0]
    assert pid not in pool.processes and len(pool.processes) == 2
    assert set(pool.fds()) != before
    pool.apply(job("after", "proj.add", 1, 1))  # the new process runs jobs
    collect_until(pool, 2)
    assert pool.done[1][1] == Succeeded("2", pool.done[1][1].runtime)


def test_stop_waits_for_running_jobs_and_reads_their_outcomes(pool):
    pool.apply(job("s", "proj.sleep", 0.3))
    pool.stop()
    assert [(j.id, type(outcome)) for j, outcome, _ in pool.done] == [("s", Succeeded)]
    assert pool.active == {}


def test_an_unreadable_outcome_fails_its_job_and_the_pool_goes_on(pool):
    """An outcome that cannot be unpickled (its bytes read) fails the job; the
    process is free for the next one."""
    pool.apply(job("odd", "proj.add", 1, 2))

    class Unreadable:
        def __init__(self, conn):
            self.conn = conn

        def recv(self):
            self.conn.recv()
            raise pickle.UnpicklingError("truncated")

        def __getattr__(self, name):
            return getattr(self.conn, name)

    child = next(c for c in pool._children if c.job is not None)
    child.conn = Unreadable(child.conn)
    collect_until(pool, 1)
    (j, outcome, _), = pool.done
    assert j.id == "odd" and isinstance(outcome, Failed) and "truncated" in outcome[0]
    child.conn = child.conn.conn
    pool.apply(job("next", "proj.add", 2, 2))
    collect_until(pool, 2)
    assert pool.done[1][1] == Succeeded("4", pool.done[1][1].runtime)
