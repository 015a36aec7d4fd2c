"""The cyclic garbage collector held off while a read builds one object per task.

Reading every task of a State (``itertasks()``, ``tasks_by_time()``, a
camera's first copy, a pickle) makes one new object per task or more: a
``(uuid, task)`` pair, a copy, what a pickle keeps of it.  The collector
tracks each of them: it runs a young collection every 700, an older one
every ten of those, and a full collection of every object alive once the
objects kept since the last one outnumber a quarter of those it tracks.
A process that holds one State and little else (a monitor) tracks about
1.25 objects per task, so every read of all its tasks would set off a
full collection, which costs more than the read: ``itertasks()`` over
100k tasks takes 146 ms with the collector running, where making the
pairs takes 5.

:func:`collector_paused` turns the collector off for the length of such a
read and back on after it, if it was on.  Reads running at once in
several threads share one pause; the last to finish ends it.  A program
that switches the collector off itself while such a read runs finds it on
again afterwards.

What the read made would still meet the young collection that the next
allocation sets off, while the caller holds it: 22 ms over the 100k pairs
of ``tasks_by_time()`` (whose walk takes 25), each pair's task visited at
a cache miss.  So the pause ends by moving every object of the young
generations to the oldest one (``gc.freeze()`` then ``gc.unfreeze()``: two
list splices, no object visited), which also sets the count of new
objects back to zero.  Nothing is lost: objects freed by their reference
counts go as before; cyclic garbage that was young at that moment waits
for the next full collection.  Not in a program that froze objects itself
(``gc.freeze()`` before forking workers, say): ``gc.unfreeze()`` would
release them, so there what the read made goes through a young
collection, as it would without the pause.
"""

from __future__ import annotations

import gc
import os
import threading
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType

__all__ = ["PAUSE_ABOVE", "collector_paused"]

#: Reads that make more new objects than this pause the collector; fewer
#: meet at most one young collection (one comes every 700), which costs
#: less than the pause itself.
PAUSE_ABOVE = 1000


class _Pause:
    """The one pause of this process (a context manager; re-entrant across threads)."""

    __slots__ = ("depth", "frozen", "lock", "resume")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0  # reads under way
        self.resume = False  # whether the collector was on when the first began
        #: Whether the program was once seen to have frozen objects (``gc.freeze()``):
        #: from then on what a read made is left to the young collections (see
        #: :func:`_promote_young`).  Asking costs a walk of the frozen objects.
        self.frozen = False

    def __enter__(self) -> None:
        with self.lock:
            if not self.depth:
                self.resume = gc.isenabled()
                gc.disable()
            self.depth += 1

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self.lock:
            self.depth -= 1
            if not self.depth and self.resume:
                if gc.get_count()[0] > gc.get_threshold()[0] and not self.frozen:
                    self.frozen = gc.get_freeze_count() > 0
                    if not self.frozen:
                        _promote_young()
                gc.enable()

    def forget(self) -> None:
        """In a forked child: no read of the parent's is under way here."""
        self.lock = threading.Lock()
        if self.depth:
            self.depth = 0
            if self.resume:
                gc.enable()


def _promote_young() -> None:
    """Every object of the young generations goes to the oldest, without a collection.

    ``gc.freeze()`` moves every tracked object to the permanent generation
    and sets the count of objects made since the last collection to zero;
    ``gc.unfreeze()`` moves them all to the oldest generation.  Both splice
    lists: no object is visited.  Only when nothing is frozen
    (:meth:`_Pause.__exit__` checks), or the program's own frozen objects
    would be released.
    """
    gc.freeze()
    gc.unfreeze()


_pause = _Pause()
os.register_at_fork(after_in_child=_pause.forget)


_no_pause: AbstractContextManager[None] = nullcontext()


def collector_paused(count: int | None = None) -> AbstractContextManager[None]:
    """``with collector_paused(n): ...``: the collector off for a block that makes
    ``n`` new objects (``None``: as many as there are tasks), if they are
    more than :data:`PAUSE_ABOVE`."""
    return _pause if count is None or count > PAUSE_ABOVE else _no_pause
