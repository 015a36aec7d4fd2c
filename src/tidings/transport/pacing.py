"""Reads paced for a consumer faster than its senders: several messages per wake-up.

A consumer that keeps up with its senders wakes up for every message, and
pays per wake-up for the poll, the read and the Python around them (on
RabbitMQ, ``bench/receive.py``'s receiver went from about 80 to about 65 µs
of CPU per one-event message with pacing alone).  A read that comes less
than the pacer's wait after the previous one first waits until it is that
far from it, so that the messages of that moment arrive and are read
together.  A monitor does not see a few milliseconds; traffic slower than
one message per wait is read at once.  (Celery's receivers read each
message as it comes.)

The wait adapts to the traffic, as the dispatcher's batching does on the
sending side: it is :data:`MIN_WAIT` while the messages come at less than
:data:`BUSY_RATE` a second, and :data:`MAX_WAIT` once they come faster,
until the rate falls below half of that.  The rate is that of the last
several reads (a moving average of the messages each read took and of the
time between reads), so a clump of messages in a slow stream does not
lengthen the wait: the 1k events/s of ``bench/publish.py``'s delay measure
keep the millisecond, and their delay, while a receiver under a stream of
thousands of one-event messages a second wakes up a quarter as often.

A read that brought :data:`BEHIND_BYTES` or more says the consumer is
behind: more is already waiting, so the next read does not wait at all
(with a wait of 4 ms and 64 KiB reads, waiting would cap a consumer that is
behind at 16 MB/s).
"""

from __future__ import annotations

from time import monotonic, sleep

__all__ = ["BEHIND_BYTES", "BUSY_RATE", "MAX_WAIT", "MIN_WAIT", "SMOOTHING", "ReadPacer"]

#: Seconds between the starts of two reads, at least: the least wait, where it
#: starts and where slow traffic keeps it.
MIN_WAIT = 0.001
#: The most: what a busy stream's events may wait before they are read.
MAX_WAIT = 0.004
#: Messages a second from which the wait is the most (and below half of which
#: it is the least again).
BUSY_RATE = 2_500
#: Weight of each read in the moving averages of the rate (about the last 8 reads).
SMOOTHING = 0.125
#: Bytes read from which the consumer is behind (half of the 64 KiB
#: that both transports ask of the socket per read).
BEHIND_BYTES = 32_768


class ReadPacer:
    """Paces the reads of one connection (see the module documentation).

    The connection calls :meth:`pace` before a read that would wait for the
    socket, and :meth:`took` with what that read brought before the next.
    """

    __slots__ = ("_last", "_messages", "_reported", "_seconds", "_wait")

    def __init__(self) -> None:
        self._last = float("-inf")  # monotonic time of the last read
        self._wait = MIN_WAIT
        # moving averages of the messages a read took and of the seconds between
        # reports, and the time of the last report
        self._messages = 0.0
        self._seconds = MIN_WAIT
        self._reported = monotonic()

    @property
    def wait(self) -> float:
        """Seconds that reads are apart at least, now."""
        return self._wait

    @property
    def rate(self) -> float:
        """Messages a second, over the last several reads."""
        return self._messages / self._seconds if self._seconds > 0 else 0.0

    def pace(self) -> None:
        """Called before a read that would wait for the socket: the reads are at
        least the wait apart (what the previous one took to handle counts)."""
        now = monotonic()
        wait = self._last + self._wait - now
        if wait > 0:
            sleep(wait)
            now += wait
        self._last = now

    def took(self, messages: int, nbytes: int) -> None:
        """The read after the last :meth:`pace` brought ``messages`` in ``nbytes``:
        adapt the wait."""
        now = monotonic()
        self._messages += (messages - self._messages) * SMOOTHING
        self._seconds += (now - self._reported - self._seconds) * SMOOTHING
        self._reported = now
        rate = self.rate
        if rate >= BUSY_RATE:
            self._wait = MAX_WAIT
        elif rate * 2 < BUSY_RATE:
            self._wait = MIN_WAIT
        if nbytes >= BEHIND_BYTES:  # behind: more is waiting, read it at once
            self._last = float("-inf")
