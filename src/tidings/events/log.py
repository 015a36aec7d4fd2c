"""Replaying saved events: ``tidings events --replay FILE``.

Two line formats are understood, one JSON object per line:

* an event, as ``tidings events --dump --json`` writes it (already stamped
  by a receiver: it has ``clock`` and ``local_received``);
* a recorded broker message with ``body`` (an event or a batch),
  ``routing_key`` and ``received_at``, as in the Celery corpus fixtures: the
  receiver's rules are applied to it with ``received_at`` as the receive time.

Lines go through the same :class:`~tidings.events.ingest.EventPipeline` as
live messages: a line that is not valid is skipped and counted, never fatal.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..protocol.clock import LamportClock
from .ingest import EventPipeline, format_causes

__all__ = ["ReplayStats", "replay", "replay_into"]

logger = logging.getLogger("tidings.events.log")


class ReplayStats:
    """What a replay did: events handled, lines read, input skipped by cause."""

    def __init__(self, events: int = 0, lines: int = 0,
                 errors: Counter[str] | None = None) -> None:
        self.events = events
        self.lines = lines
        self.errors: Counter[str] = Counter() if errors is None else errors

    @property
    def skipped(self) -> int:
        return sum(self.errors.values())

    def __str__(self) -> str:
        text = f"replayed {self.events} events from {self.lines} lines"
        if self.errors:
            text += f"; skipped {self.skipped} ({format_causes(self.errors)})"
        return text


def replay(source: str | Path | IO[str], handler: Callable[[dict[str, Any]], Any],
           clock: Any = None, should_stop: Callable[[], bool] | None = None) -> ReplayStats:
    """Feed every event of ``source`` to ``handler``; returns what was done and skipped.

    ``clock`` (a Lamport clock, e.g. ``app.clock``) takes the receive-side
    clock rules of recorded broker messages; a fresh one by default.
    """
    pipeline = EventPipeline(clock if clock is not None else LamportClock(),
                             lambda type_, event: handler(event), log=logger)
    return replay_into(pipeline, source, should_stop)


def replay_into(pipeline: EventPipeline, source: str | Path | IO[str],
                should_stop: Callable[[], bool] | None = None) -> ReplayStats:
    """Feed the lines of ``source`` through ``pipeline``."""
    handled_before = pipeline.handled
    lines = 0
    own = isinstance(source, str | Path)
    f: IO[str] = open(source, encoding="utf-8") if own else source  # noqa: SIM115
    try:
        for lineno, line in enumerate(f, 1):
            if should_stop is not None and should_stop():
                break
            line = line.strip()
            if not line:
                continue
            lines += 1
            ok, obj = pipeline.decode(line, f"line {lineno}")
            if not ok:
                continue
            if isinstance(obj, dict) and "body" in obj and "routing_key" in obj:
                received_at = obj.get("received_at")
                now = time.time if received_at is None else (lambda at=received_at: at)
                pipeline.feed(obj["body"], now)
            else:
                pipeline.feed_one(obj, stamp=False)
    finally:
        if own:
            f.close()
    return ReplayStats(pipeline.handled - handled_before, lines, pipeline.errors)
