"""Ids of revoked tasks, as a worker remembers them."""

from __future__ import annotations

import time
from collections import OrderedDict

__all__ = ["REVOKES_MAX", "REVOKE_EXPIRES", "Revoked"]

#: Revoked ids remembered; the oldest is forgotten past this (Celery's bound).
REVOKES_MAX = 50_000
#: Seconds a revoked id is remembered (Celery's).
REVOKE_EXPIRES = 3 * 3600.0


class Revoked:
    """Ids of revoked tasks: bounded (oldest forgotten first) and expiring."""

    def __init__(self, maxlen: int = REVOKES_MAX, expires: float = REVOKE_EXPIRES) -> None:
        self.maxlen = maxlen
        self.expires = expires
        self._ids: OrderedDict[str, float] = OrderedDict()

    def add(self, task_id: str) -> None:
        self._ids[task_id] = time.monotonic()
        self._ids.move_to_end(task_id)
        while len(self._ids) > self.maxlen:
            self._ids.popitem(last=False)

    def __contains__(self, task_id: object) -> bool:
        added = self._ids.get(task_id)  # type: ignore[call-overload]
        if added is None:
            return False
        if time.monotonic() - added > self.expires:
            del self._ids[task_id]  # type: ignore[arg-type]
            return False
        return True

    def ids(self) -> list[str]:
        """The ids still remembered, oldest first (expired ones are dropped here)."""
        now = time.monotonic()
        while self._ids:
            task_id, added = next(iter(self._ids.items()))
            if now - added <= self.expires:
                break
            del self._ids[task_id]
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)
