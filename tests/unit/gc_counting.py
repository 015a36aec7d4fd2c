"""Counting the garbage collector's collections while a block runs."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["collections_counted"]


@contextlib.contextmanager
def collections_counted(threshold: int | None = 10) -> Iterator[list[int]]:
    """The collector on (with all three thresholds at ``threshold``; ``None``: as they
    are): yields the list of the generations of the collections that start
    (thresholds, state and callbacks restored)."""
    collections: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(info["generation"])

    thresholds, was = gc.get_threshold(), gc.isenabled()
    gc.enable()
    gc.callbacks.append(count)
    if threshold is not None:
        gc.set_threshold(threshold, threshold, threshold)
    try:
        yield collections
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*thresholds)
        (gc.enable if was else gc.disable)()
