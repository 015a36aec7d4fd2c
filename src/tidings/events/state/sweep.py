"""The walk that finds stale entries at the start of a list: the time order's
(:mod:`.timeline`) and each index key's (:mod:`.indexes`).

Both leave an entry where it is when it goes stale, and drop stale entries
later in one go.  Those of evicted tasks, and of tasks that moved on since
the last such pass, are mostly among the oldest, at the start of the list;
the walk reads from there and stops once it has found nearly all the stale
entries its owner knows there are, rather than reading the whole list.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["SWEEP_CHUNK", "live_flags_from_start"]

#: Entries the walk reads at least before it counts what it has found (it reads
#: as many as it has still to find, if more: most of those are next).
SWEEP_CHUNK = 64


def live_flags_from_start(length: int, stale: int, leave: int,
                          flags_of: Callable[[int, int], list[bool]]) -> tuple[list[bool], int]:
    """Whether each of a list's first entries is live, read ``flags_of(start, stop)``
    a chunk at a time until all but ``leave`` of its ``stale`` stale entries are
    found (or its ``length`` entries are read); and how many were found."""
    flags: list[bool] = []
    found = 0
    while len(flags) < length and stale - found > leave:
        start = len(flags)
        chunk = flags_of(start, start + max(stale - found, SWEEP_CHUNK))
        found += len(chunk) - sum(chunk)
        flags += chunk
    return flags, found
