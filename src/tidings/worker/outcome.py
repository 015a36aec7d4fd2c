"""What running one task came to: a small named type per outcome.

Pools return one of these for each job (a prefork child sends it back
pickled); the worker turns it into hooks, acknowledgements and retries.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Failed", "Outcome", "Rejected", "Retried", "Succeeded", "Terminated"]


class Succeeded(NamedTuple):
    result: str  # the return value's repr, bounded
    runtime: float


class Failed(NamedTuple):
    exception: str  # the exception's repr, bounded
    traceback: str | None
    runtime: float = 0.0


class Retried(NamedTuple):
    exception: str
    traceback: str
    countdown: float | None


class Rejected(NamedTuple):
    reason: str
    requeue: bool
    traceback: str


class Terminated(NamedTuple):
    signum: int | None


Outcome = Succeeded | Failed | Retried | Rejected | Terminated
