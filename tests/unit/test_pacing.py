"""Read pacing: the wait a read takes adapts to the rate of the messages, on a fake clock."""

from __future__ import annotations

import pytest

from tidings.transport import pacing
from tidings.transport.pacing import BEHIND_BYTES, BUSY_RATE, MAX_WAIT, MIN_WAIT, ReadPacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.reads: list[float] = []  # when each read started (after its pace)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(pacing, "monotonic", fake.monotonic)
    monkeypatch.setattr(pacing, "sleep", fake.sleep)
    return fake


def reads(pacer: ReadPacer, clock: FakeClock, n: int, rate: float, work: float = 0.0002,
          nbytes: int = 400) -> None:
    """``n`` reads of a stream of ``rate`` messages a second, each handled in ``work``
    seconds: a read takes what arrived since the previous one."""
    for _ in range(n):
        before = clock.now
        pacer.pace()
        clock.reads.append(clock.now)
        clock.now += work
        messages = round(rate * (clock.now - before))
        pacer.took(messages, messages * nbytes)


def test_traffic_slower_than_a_read_per_wait_is_read_at_once(clock):
    pacer = ReadPacer()
    for _ in range(50):
        clock.now += 0.005  # a message every 5 ms
        pacer.pace()
        pacer.took(1, 400)
    assert clock.sleeps == []
    assert pacer.wait == MIN_WAIT


def apart(clock: FakeClock) -> float:
    """Seconds between the last two reads."""
    return clock.reads[-1] - clock.reads[-2]


def test_a_busy_stream_waits_the_most_and_a_slower_one_the_least_again(clock):
    pacer = ReadPacer()
    reads(pacer, clock, 2, rate=BUSY_RATE * 3)
    assert apart(clock) == pytest.approx(MIN_WAIT)  # at first, the least
    # handling a read counts in the wait: the pacer sleeps only the rest of it
    assert clock.sleeps[-1] == pytest.approx(MIN_WAIT - 0.0002)
    reads(pacer, clock, 40, rate=BUSY_RATE * 3)
    # a quarter of the wake-ups: each read takes about four times as many messages
    assert pacer.wait == MAX_WAIT and apart(clock) == pytest.approx(MAX_WAIT)
    assert pacer.rate == pytest.approx(BUSY_RATE * 3, rel=0.1)
    reads(pacer, clock, 40, rate=BUSY_RATE * 0.4)
    assert pacer.wait == MIN_WAIT and apart(clock) == pytest.approx(MIN_WAIT)


def test_a_read_handled_for_longer_than_the_wait_is_followed_at_once(clock):
    pacer = ReadPacer()
    reads(pacer, clock, 40, rate=BUSY_RATE * 3)
    sleeps = len(clock.sleeps)
    reads(pacer, clock, 10, rate=BUSY_RATE * 3, work=MAX_WAIT * 1.5)
    assert len(clock.sleeps) == sleeps + 1  # the first, after a short handling


def test_between_the_two_rates_the_wait_stays_as_it_was(clock):
    pacer = ReadPacer()
    reads(pacer, clock, 40, rate=BUSY_RATE * 0.75)
    assert pacer.wait == MIN_WAIT
    reads(pacer, clock, 40, rate=BUSY_RATE * 2)
    reads(pacer, clock, 40, rate=BUSY_RATE * 0.75)
    assert pacer.wait == MAX_WAIT


def test_a_clump_in_a_slow_stream_keeps_the_least_wait(clock):
    """1k messages a second with a clump of six: the delay of such a stream stays."""
    pacer = ReadPacer()
    for n in range(200):
        pacer.pace()
        clock.now += 0.0001
        pacer.took(6 if n == 100 else 1, 400)
        clock.now += 0.0009
        assert pacer.wait == MIN_WAIT, n


def test_a_reader_behind_reads_again_at_once(clock):
    pacer = ReadPacer()
    reads(pacer, clock, 40, rate=BUSY_RATE * 3)
    assert pacer.wait == MAX_WAIT
    pacer.pace()  # the first read of a burst waits: nothing says it is one yet
    pacer.took(200, BEHIND_BYTES)
    sleeps = len(clock.sleeps)
    for _ in range(10):  # every read fills its buffer: more is waiting
        pacer.pace()
        clock.now += 0.002
        pacer.took(200, BEHIND_BYTES)
    assert len(clock.sleeps) == sleeps
    pacer.pace()
    pacer.took(5, 2000)  # caught up: the next read waits again
    pacer.pace()
    assert len(clock.sleeps) == sleeps + 1
