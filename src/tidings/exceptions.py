"""Exceptions a task can meet: time limits.

When billiard (Celery's pool library) is installed, these subclass its
classes, which are the ones ``celery.exceptions`` exports: a task written for
Celery that catches ``celery.exceptions.SoftTimeLimitExceeded`` keeps
working when a Tidings worker runs it.  Without billiard they are plain
exceptions.
"""

from __future__ import annotations

__all__ = ["SoftTimeLimitExceeded", "TimeLimitExceeded"]

try:  # Celery's classes, when Celery is installed beside us
    from billiard.exceptions import SoftTimeLimitExceeded as _SoftBase
    from billiard.exceptions import TimeLimitExceeded as _HardBase
except ImportError:  # pragma: no cover - billiard comes with Celery
    _SoftBase = Exception  # type: ignore[assignment,misc]
    _HardBase = Exception  # type: ignore[assignment,misc]


class SoftTimeLimitExceeded(_SoftBase):  # type: ignore[valid-type,misc]
    """Raised inside a task when its soft time limit is reached: clean up and return."""


class TimeLimitExceeded(_HardBase):  # type: ignore[valid-type,misc]
    """A task ran past its hard time limit and its process was killed.

    The argument is the limit in seconds; the task's failure event reports
    ``TimeLimitExceeded(<seconds>)`` as Celery's does.
    """
