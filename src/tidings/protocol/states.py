"""Task states and the order in which they supersede each other.

The names and the precedence are Celery's, so that a task observed by a
Tidings monitor reaches the same state a Celery monitor would show.  The one
deliberate difference is ``REJECTED``: Celery ranks it below ``RECEIVED``, so a
rejection reported after the receipt never shows.  Here it outranks the
in-flight states and stays below the final ones.
"""

from __future__ import annotations

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
REJECTED = "REJECTED"
RETRY = "RETRY"

ALL_STATES = frozenset({PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, REVOKED, REJECTED, RETRY})
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, REJECTED, RETRY})
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})

#: The states in the order a task lives through them, for display (counts,
#: legends); the final ones last.
LIFECYCLE_ORDER = (PENDING, RECEIVED, STARTED, RETRY, SUCCESS, FAILURE, REVOKED, REJECTED)

#: Lower rank = logically later.  A state not listed here (a custom state such
#: as ``PROGRESS``) ranks as :data:`UNKNOWN_RANK`, between FAILURE and REVOKED,
#: as in Celery.
PRECEDENCE_RANK: dict[str, float] = {
    SUCCESS: 0,
    FAILURE: 1,
    REVOKED: 3,
    REJECTED: 3.5,
    STARTED: 4,
    RECEIVED: 5,
    RETRY: 7,
    PENDING: 8,
}
UNKNOWN_RANK = 2


def precedence(state: str | None) -> float:
    """Rank of ``state``: the lower, the later in a task's life."""
    return PRECEDENCE_RANK.get(state, UNKNOWN_RANK)  # type: ignore[arg-type]
