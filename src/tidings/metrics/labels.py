"""Bounded label values: a runaway task name or hostname cannot take Prometheus down.

Every label value a metric is given from an event goes through a
:class:`LabelGuard`: the first ``limit`` distinct values of each label name
are kept, later ones are reported as ``other`` and counted, and every value
is cut to ``MAX_LABEL_LENGTH`` characters (event fields are
attacker-controlled input).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["DEFAULT_MAX_LABEL_VALUES", "MAX_LABEL_LENGTH", "OVERFLOW_VALUE", "LabelGuard"]

#: Distinct values kept per label name (``--max-label-values``).
DEFAULT_MAX_LABEL_VALUES = 1000
#: What a value past the bound is reported as.
OVERFLOW_VALUE = "other"
#: Characters kept of a label value.
MAX_LABEL_LENGTH = 200

_EMPTY: frozenset[str] = frozenset()


class LabelGuard:
    """Maps raw values to bounded label values, per label name.

    ``on_overflow(label)`` is called for each value that had to be reported
    as ``other``.  Values can be forgotten again (a purged worker), so the
    bound counts live values.
    """

    def __init__(self, limit: int = DEFAULT_MAX_LABEL_VALUES,
                 on_overflow: Callable[[str], Any] | None = None) -> None:
        if limit < 1:
            raise ValueError("the label value limit must be at least 1")
        self.limit = limit
        self.on_overflow = on_overflow
        self._seen: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def __call__(self, label: str, value: Any) -> str:
        text = value if type(value) is str else str(value)
        seen = self._seen.get(label)
        if seen is not None and text in seen:  # the common case: no lock, no copy
            return text
        if len(text) > MAX_LABEL_LENGTH:
            text = text[:MAX_LABEL_LENGTH]
        with self._lock:
            seen = self._seen.setdefault(label, set())
            if text in seen:
                return text
            if len(seen) < self.limit:
                seen.add(text)
                return text
        if self.on_overflow is not None:
            self.on_overflow(label)
        return OVERFLOW_VALUE

    def values(self, label: str) -> set[str]:
        """The live values of ``label`` (the guard's own set: read it, do not change it)."""
        return self._seen.get(label) or _EMPTY

    def forget(self, label: str, value: str) -> None:
        with self._lock:
            self._seen.get(label, set()).discard(value)

    def count(self, label: str) -> int:
        with self._lock:
            return len(self._seen.get(label, ()))
