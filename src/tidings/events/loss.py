"""Loss accounting: the events a receiver did not get, by cause.

Celery's receivers say nothing when events go missing (a queue's message TTL
expires them, a Redis PUB/SUB subscriber is cut off, a worker's buffer
overflows).  Every Tidings source keeps a :class:`LossAccount` beside its
pipeline and fills it from what the wire carries (see
:mod:`tidings.protocol.loss`):

* sequence numbers of Tidings senders: a jump is exactly the events lost
  between the two messages (``sequence-gap``); a late message that falls in
  a gap still open takes its events back off the count, a message seen
  before is a duplicate (a redelivery from a durable queue), not a loss;
* dead letters of the receiver's own RabbitMQ queue (``expired``,
  ``overflow``), exact for any sender;
* the count each Tidings worker reports in its heartbeats of events it
  dropped itself (``sender-dropped``);
* for senders without sequence numbers (Celery workers, on Redis above all),
  an estimate across each time the receiver was not connected
  (``disconnected``): the tasks a worker's heartbeats say it finished, less
  those the receiver saw finish.  The outages themselves are kept in
  :attr:`LossAccount.outages` with their durations.

``account.lost`` is a :class:`~collections.Counter` by cause; ``total`` is
their sum.  Every table here is bounded (see the constants).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, OrderedDict, deque
from typing import Any

from ..protocol.loss import (
    DROPPED_FIELD,
    ESTIMATED_CAUSES,
    EVENTS_PER_TASK,
    MAX_SEQUENCE,
    dead_letter_cause,
    read_sequence,
)

__all__ = ["MAX_OPEN_GAPS", "MAX_OUTAGES", "MAX_SENDERS", "LossAccount"]

#: Senders whose next sequence number is remembered (least recently heard
#: from forgotten first: a forgotten sender's next message starts afresh, so
#: at worst one gap of a sender silent for that long goes uncounted).
MAX_SENDERS = 10_000
#: Outages kept in :attr:`LossAccount.outages` (the most recent).
MAX_OUTAGES = 100

#: Gaps, over all senders, that a late message may still fill (a dead letter
#: arrives on a queue of its own, after the messages that came past it).  Past
#: this, the least recently heard-from sender is forgotten, its gaps final.
MAX_OPEN_GAPS = 100_000


class _Sender:
    """The next number expected from a sender and the ranges still missing
    (``starts[i]`` to ``ends[i]``, exclusive: sorted and disjoint)."""

    __slots__ = ("ends", "next", "starts")

    def __init__(self, next_: int) -> None:
        self.next = next_
        self.starts: list[int] = []
        self.ends: list[int] = []


class _Worker:
    """What a worker's last heartbeat said it had processed, and the tasks seen
    finishing since; ``away``: the receiver was disconnected since then."""

    __slots__ = ("away", "finished", "processed")

    def __init__(self, processed: int) -> None:
        self.processed = processed
        self.finished = 0
        self.away = False


class LossAccount:
    """Events lost, by cause (:data:`~tidings.protocol.loss.LOSS_CAUSES`)."""

    def __init__(self, max_senders: int = MAX_SENDERS,
                 max_open_gaps: int = MAX_OPEN_GAPS) -> None:
        self.lost: Counter[str] = Counter()
        #: Messages seen twice (redeliveries; not a loss).
        self.duplicates = 0
        self.max_senders = max_senders
        self.max_open_gaps = max_open_gaps
        self._senders: OrderedDict[str, _Sender] = OrderedDict()
        self._open_gaps = 0
        self._dropped: OrderedDict[tuple[str, Any], int] = OrderedDict()
        self._workers: OrderedDict[str, _Worker] = OrderedDict()
        self._numbered: OrderedDict[str, None] = OrderedDict()  # hosts with sequences
        #: ``(start, end)`` epoch seconds of the times the receiver was disconnected.
        self.outages: deque[tuple[float, float]] = deque(maxlen=MAX_OUTAGES)

    @property
    def total(self) -> int:
        return sum(self.lost.values())

    def __bool__(self) -> bool:
        return self.total > 0

    @property
    def senders(self) -> int:
        """Senders whose numbers are followed (at most ``max_senders``)."""
        return len(self._senders)

    @property
    def open_gaps(self) -> int:
        """Missing ranges a late message may still fill (at most ``max_open_gaps``)."""
        return self._open_gaps

    # -- sequence numbers ------------------------------------------------------------

    def sequence(self, sender: str, seq: int, count: int) -> None:
        """A message from ``sender`` whose first event is number ``seq``, ``count`` events."""
        count = max(count, 1)
        end = min(seq + count, MAX_SEQUENCE)
        state = self._senders.get(sender)
        if state is None:
            self._remember(self._numbered, sender.rsplit("/", 2)[0], None)
            self._senders[sender] = _Sender(end)
            while len(self._senders) > self.max_senders:
                self._forget_oldest()
            return
        self._senders.move_to_end(sender)
        if seq == state.next:
            state.next = end
        elif seq > state.next:
            self.lost["sequence-gap"] += seq - state.next
            state.starts.append(state.next)
            state.ends.append(seq)
            state.next = end
            self._open_gaps += 1
            while self._open_gaps > self.max_open_gaps:
                if len(self._senders) > 1:
                    self._forget_oldest()
                else:  # one sender holds them all: its oldest gaps become final
                    del state.starts[0], state.ends[0]
                    self._open_gaps -= 1
        elif not self._fill(state, seq, end):
            self.duplicates += 1

    def _forget_oldest(self) -> None:
        _, old = self._senders.popitem(last=False)
        self._open_gaps -= len(old.starts)

    def _fill(self, state: _Sender, start: int, end: int) -> bool:
        """Take ``[start, end)`` off the missing ranges it overlaps; False if none."""
        starts, ends = state.starts, state.ends
        i = bisect_right(ends, start)
        filled = 0
        while i < len(starts) and starts[i] < end:
            lo, hi = starts[i], ends[i]
            a, b = max(lo, start), min(hi, end)
            filled += b - a
            if lo < a and b < hi:  # the middle of a range: split it
                ends[i] = a
                starts.insert(i + 1, b)
                ends.insert(i + 1, hi)
                self._open_gaps += 1
                break
            if lo < a:
                ends[i] = a
                i += 1
            elif b < hi:
                starts[i] = b
                break
            else:
                del starts[i], ends[i]
                self._open_gaps -= 1
        self.lost["sequence-gap"] -= filled
        return filled > 0

    # -- dead letters and senders' own counts ---------------------------------------------

    def dead_letter(self, headers: Any, count: int) -> None:
        """A message the receiver's queue dead-lettered, holding ``count`` events.

        A Tidings sender's message keeps its sequence headers: its numbers are
        taken as accounted for (filling the gap its absence opened, or the one
        it will open), so the loss is counted once, under the broker's reason.
        """
        count = max(count, 1)
        sequence = read_sequence(headers)
        if sequence is not None:
            self.sequence(*sequence, count)
        self.lost[dead_letter_cause(headers)] += count

    def outage(self, start: float, end: float) -> None:
        """The receiver was not connected from ``start`` to ``end``."""
        self.outages.append((start, end))
        for worker in self._workers.values():
            worker.away = True

    def task_finished(self, hostname: Any) -> None:
        """A task event after which ``hostname`` counts the task as processed."""
        worker = self._workers.get(hostname)
        if worker is not None:
            worker.finished += 1

    def worker_event(self, event: dict[str, Any]) -> None:
        """Take what a worker event says: events its sender dropped, tasks it processed."""
        processed = event.get("processed")
        if isinstance(processed, int) and not isinstance(processed, bool):
            self._processed(event.get("hostname"), processed)
        dropped = event.get(DROPPED_FIELD)
        if not isinstance(dropped, int) or isinstance(dropped, bool) or dropped < 0:
            return
        key = (event.get("hostname"), event.get("pid"))
        before = self._dropped.get(key, 0)
        if dropped > before:
            self.lost["sender-dropped"] += dropped - before
        self._remember(self._dropped, key, max(dropped, before))

    def _processed(self, hostname: Any, processed: int) -> None:
        worker = self._workers.get(hostname)
        if worker is None or processed < worker.processed:  # new, or restarted
            self._remember(self._workers, hostname, _Worker(processed))
            return
        if worker.away and hostname not in self._numbered:
            missed = processed - worker.processed - worker.finished
            if missed > 0:
                self.lost["disconnected"] += missed * EVENTS_PER_TASK
        worker.processed, worker.finished, worker.away = processed, 0, False

    def _remember(self, table: OrderedDict, key: Any, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self.max_senders:
            table.popitem(last=False)

    # -- reading ----------------------------------------------------------------------

    def as_dict(self) -> dict[str, int]:
        """Causes with a count, for JSON (a cause never seen is left out)."""
        return {cause: n for cause, n in sorted(self.lost.items()) if n}

    def __str__(self) -> str:
        return ", ".join(f"{cause}: {n}" + (" (estimate)" if cause in ESTIMATED_CAUSES else "")
                         for cause, n in self.as_dict().items())
