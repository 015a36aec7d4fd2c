"""Replaying saved events: ``tidings events --replay FILE``.

Two line formats are understood, one JSON object per line:

* an event, as ``tidings events --dump --json`` writes it (already adjusted
  by a receiver: it has ``clock`` and ``local_received``);
* a recorded broker message with ``body`` (an event or a batch),
  ``routing_key`` and ``received_at``, as in the Celery corpus fixtures: the
  receiver's rules are applied to it with ``received_at`` as the receive time.

A line that is not valid is skipped and counted, never fatal.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..protocol.events import InvalidEvent, validate_event

logger = logging.getLogger("tidings.events.log")


class ReplayStats:
    def __init__(self) -> None:
        self.events = 0
        self.lines = 0
        self.errors: Counter[str] = Counter()

    @property
    def skipped(self) -> int:
        return sum(self.errors.values())

    def __str__(self) -> str:
        text = f"replayed {self.events} events from {self.lines} lines"
        if self.errors:
            causes = ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items()))
            text += f"; skipped {self.skipped} ({causes})"
        return text


def replay(source: str | Path | IO[str], handler: Callable[[dict[str, Any]], Any],
           receiver: Any = None, should_stop: Callable[[], bool] | None = None) -> ReplayStats:
    """Feed every event of ``source`` to ``handler``; returns what was done and skipped.

    ``receiver`` (an :class:`~tidings.events.EventReceiver`) applies the clock
    rules to recorded broker messages; without one they are taken as they are.
    """
    stats = ReplayStats()
    logged: set[str] = set()

    def skip(cause: str, detail: str) -> None:
        stats.errors[cause] += 1
        if cause not in logged:
            logged.add(cause)
            logger.warning("Replay skipped input (%s): %s", cause, detail)

    def feed(event: Any, received_at: float | None, adjust: bool) -> None:
        try:
            validate_event(event)
        except InvalidEvent as exc:
            skip(exc.cause, str(exc))
            return
        if adjust and receiver is not None:
            now = time.time if received_at is None else (lambda: received_at)
            receiver.event_from_message(event, now=now)
        else:
            event.setdefault("local_received", received_at or event.get("timestamp"))
        try:
            handler(event)
        except Exception as exc:
            skip("handler-error", f"handler raised {exc!r}")
            return
        stats.events += 1

    own = isinstance(source, str | Path)
    f: IO[str] = open(source, encoding="utf-8") if own else source  # noqa: SIM115
    try:
        for lineno, line in enumerate(f, 1):
            if should_stop is not None and should_stop():
                break
            line = line.strip()
            if not line:
                continue
            stats.lines += 1
            try:
                obj = json.loads(line)
            except ValueError as exc:
                skip("not-json", f"line {lineno}: {exc}")
                continue
            if isinstance(obj, dict) and "body" in obj and "routing_key" in obj:
                body = obj["body"]
                received_at = obj.get("received_at")
                for event in body if isinstance(body, list) else [body]:
                    feed(event, received_at, adjust=True)
            else:
                feed(obj, None, adjust=False)
    finally:
        if own:
            f.close()
    return stats
