"""What travels on the wire so that a receiver can count the events it did not get.

None of this is Celery's; all of it is invisible to Celery's tools, which
read only the message body and ignore unknown headers and heartbeat fields:

* **Sequence headers.**  A Tidings dispatcher stamps every message it
  publishes with :data:`SENDER_HEADER` (who: node name, process id and a
  random per-process token, so a restarted worker is a new sender) and
  :data:`SEQUENCE_HEADER` (the sequence number of the message's first event;
  a ``<group>.multi`` message carries ``len(body)`` events).  A receiver that
  sees a sender's numbers jump knows exactly how many events went missing
  between the two, on any broker.
* **Dropped-by-sender count.**  A Tidings worker's heartbeats carry
  :data:`DROPPED_FIELD`: the events its dispatcher dropped itself since it
  started (outbound buffer full while the broker was away, or not
  serialisable).  Those never got a sequence number, so they are counted
  from here.
* **Dead letters (RabbitMQ).**  A receiver's queue dead-letters what it
  drops (message TTL, length limit) to an exchange named after the event
  exchange with :data:`DEAD_LETTER_SUFFIX`; the broker's ``x-death`` header
  says why (:data:`DEAD_LETTER_CAUSES`).

Causes of loss, as every frontend names them (:data:`LOSS_CAUSES`).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEAD_LETTER_CAUSES",
    "DEAD_LETTER_SUFFIX",
    "DROPPED_FIELD",
    "ESTIMATED_CAUSES",
    "EVENTS_PER_TASK",
    "FINISHED_TYPES",
    "LOSS_CAUSES",
    "MAX_SENDER_LEN",
    "MAX_SEQUENCE",
    "SENDER_HEADER",
    "SEQUENCE_HEADER",
    "dead_letter_cause",
    "read_sequence",
]

SENDER_HEADER = "tidings-sender"
SEQUENCE_HEADER = "tidings-seq"
#: A sender id longer than this, or a sequence number outside [0, MAX_SEQUENCE],
#: is not a sequence header (headers are input like any other).
MAX_SENDER_LEN = 300
MAX_SEQUENCE = 2**63 - 1

DROPPED_FIELD = "tidings_dropped"

DEAD_LETTER_SUFFIX = ".dead"

#: Why events were lost: ``sequence-gap`` (numbers skipped: the broker or the
#: network lost them, exact, Tidings senders), ``expired`` and ``overflow``
#: (dead-lettered by RabbitMQ: exact, any sender), ``sender-dropped`` (the
#: sender's own count, from its heartbeats), ``disconnected`` (an *estimate*,
#: for senders without sequence numbers: the tasks a worker's heartbeats say it
#: finished across a time the receiver was not connected, less those it saw
#: finish, times :data:`EVENTS_PER_TASK`).
LOSS_CAUSES = ("sequence-gap", "expired", "overflow", "sender-dropped", "disconnected")
#: Causes whose count is an estimate, not a count.
ESTIMATED_CAUSES = frozenset({"disconnected"})

#: Task events after which a worker counts a task in its heartbeats' ``processed``.
FINISHED_TYPES = frozenset({"task-succeeded", "task-failed", "task-retried",
                            "task-rejected", "task-revoked"})
#: Events a task makes at a worker (received, started, its outcome).
EVENTS_PER_TASK = 3

#: RabbitMQ's ``x-death`` reasons -> our causes (``rejected`` does not happen:
#: receivers never reject; ``delivery_limit`` is for quorum queues).
DEAD_LETTER_CAUSES = {"expired": "expired", "maxlen": "overflow",
                      "delivery_limit": "overflow", "rejected": "overflow"}


def read_sequence(headers: Any) -> tuple[str, int] | None:
    """``(sender, first sequence number)`` from a message's headers, or None.

    None for a message without them (a Celery sender) and for malformed
    ones, which are not worth a cause of their own: the events in the body
    are still applied, only the gap check is skipped.
    """
    if not isinstance(headers, dict):
        return None
    sender, seq = headers.get(SENDER_HEADER), headers.get(SEQUENCE_HEADER)
    if (not isinstance(sender, str) or not sender or len(sender) > MAX_SENDER_LEN
            or not isinstance(seq, int) or isinstance(seq, bool)
            or not 0 <= seq <= MAX_SEQUENCE):
        return None
    return sender, seq


def dead_letter_cause(headers: Any) -> str:
    """Our cause for a dead-lettered message, from its ``x-death`` header."""
    deaths = headers.get("x-death") if isinstance(headers, dict) else None
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        reason = deaths[0].get("reason")
        if isinstance(reason, bytes):
            reason = reason.decode("ascii", "replace")
        if isinstance(reason, str):
            return DEAD_LETTER_CAUSES.get(reason, "overflow")
    return "overflow"
