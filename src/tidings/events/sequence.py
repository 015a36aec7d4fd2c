"""Per-sender sequence numbers: what lets a receiver count the events it never got.

Every message a dispatcher publishes carries its sender's name and the
message's number in its headers (:mod:`tidings.protocol.loss`; the body is
Celery's).  The numbers belong to a node name in this process, not to one
dispatcher: a worker that replaces its dispatcher on reconnect goes on
counting, and a forked child starts a sender of its own.
"""

from __future__ import annotations

import os
import threading
import uuid

__all__ = ["Sequence", "sequence_for"]


class Sequence:
    """The sequence numbers of one sender: a node name in this process.

    ``next`` only moves past a message once the broker took it, under
    ``lock``, so a message that failed and is sent again later keeps the
    receiver's count exact.
    """

    __slots__ = ("lock", "next", "sender")

    def __init__(self, hostname: str) -> None:
        self.sender = f"{hostname}/{os.getpid()}/{uuid.uuid4().hex[:12]}"
        self.next = 0
        self.lock = threading.Lock()


_sequences: dict[str, Sequence] = {}
_sequences_lock = threading.Lock()


def sequence_for(hostname: str) -> Sequence:
    """The one :class:`Sequence` of ``hostname`` in this process."""
    with _sequences_lock:
        seq = _sequences.get(hostname)
        if seq is None:
            seq = _sequences[hostname] = Sequence(hostname)
        return seq


def _forget_sequences() -> None:  # a forked child is a sender of its own
    global _sequences_lock
    _sequences.clear()
    _sequences_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_sequences)
