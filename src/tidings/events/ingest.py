"""The ingest pipeline: from a decoded message body to a handler, counting what is skipped.

Every consumer of events (the live receiver, replay of a saved file, and
through them every ``tidings events`` mode and monitor) runs the same steps:

1. validate each event (a batch is validated element by element, so one
   bad element does not lose the rest);
2. apply the receive-side Lamport clock rule and stamp ``local_received``
   (:func:`~tidings.protocol.clock.stamp_batch`: the good events of one
   message at once, with one receive time, since they arrived together);
3. hand each event to the dispatch function, in order;
4. count whatever was skipped, by cause, and log each cause once.

Causes: ``not-json``, ``content-disallowed``, ``not-an-object``,
``missing-type``, ``missing-field``, ``null-clock``, ``bad-field-type``,
``handler-error``, ``wakeup-failed``.

Beside the skipped input, the pipeline holds the :class:`~tidings.events.loss.LossAccount`
of the events that never arrived: the receiver feeds it what the message
headers say, and the pipeline the counts workers report in their events.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..protocol.clock import stamp_batch, stamp_received
from ..protocol.events import (
    CLIENT_CLOCK_SKEW,
    LOCAL_RECEIVED,
    WORKER_GROUP,
    InvalidEvent,
    validate_event,
)
from ..protocol.loss import FINISHED_TYPES
from ..utils.jsoncodec import DECODE_ERRORS
from ..utils.jsoncodec import loads as json_loads
from .loss import LossAccount

__all__ = ["Dispatch", "EventPipeline", "format_causes"]

logger = logging.getLogger("tidings.events.receiver")

_WORKER_PREFIX = f"{WORKER_GROUP}-"

#: ``dispatch(type, event)``: what the pipeline hands each good event to.
Dispatch = Callable[[str, dict[str, Any]], Any]


def format_causes(errors: Counter[str]) -> str:
    """``"not-json: 2, null-clock: 1"``: skipped input by cause, for one line of text."""
    return ", ".join(f"{cause}: {count}" for cause, count in sorted(errors.items()))


class EventPipeline:
    """Validate, clock-stamp and dispatch events; count skipped input by cause.

    ``clock`` is a Lamport clock (kombu's ``LamportClock``); ``dispatch`` is
    called with ``(type, event)`` for each good event.  :attr:`errors` and
    the counts are cumulative over the pipeline's life (a receiver that
    reconnects keeps one pipeline).
    """

    def __init__(self, clock: Any, dispatch: Dispatch, *,
                 log: logging.Logger = logger) -> None:
        self.clock = clock
        self.dispatch = dispatch
        self.log = log
        #: Skipped input, by cause (see the module documentation).
        self.errors: Counter[str] = Counter()
        #: Events that passed validation and were handed to ``dispatch``.
        self.event_count = 0
        #: Of those, the ones ``dispatch`` took without raising.
        self.handled = 0
        #: Events that never arrived, by cause.
        self.losses = LossAccount()
        self._logged_causes: set[str] = set()

    # -- feeding -------------------------------------------------------------------------

    def feed(self, body: Any, now: Callable[[], float] = time.time) -> None:
        """One decoded message body: an event, or a batch (``<group>.multi``).

        The events of a batch arrived together: they share one receive time
        (``now()``, once) and are stamped together (:func:`stamp_batch`).
        """
        self._feed(body if isinstance(body, list) else (body,), now, True)

    def feed_one(self, event: Any, now: Callable[[], float] = time.time,
                 stamp: bool = True) -> None:
        """One event.  ``stamp=False`` for events a receiver already stamped (saved dumps)."""
        self._feed((event,), now, stamp)

    def _feed(self, events: list[Any] | tuple[Any, ...], now: Callable[[], float],
              stamp: bool) -> None:
        """Validate each event (one bad element does not lose the rest), stamp the
        good ones, then account for and dispatch each, in order."""
        good = []
        for event in events:
            try:
                validate_event(event)
            except InvalidEvent as exc:
                self.skip(exc.cause, str(exc))
                continue
            good.append(event)
        if not good:
            return
        if stamp:
            stamp_batch(good, self.clock, now())
        else:
            for event in good:
                event.setdefault(LOCAL_RECEIVED, event.get("timestamp"))
        losses, dispatch = self.losses, self.dispatch
        passed = handled = 0  # added to the counts at the end, even if a handler stops it
        try:
            for event in good:
                type_ = event["type"]
                if type_ in FINISHED_TYPES:
                    losses.task_finished(event.get("hostname"))
                elif type_.startswith(_WORKER_PREFIX):
                    losses.worker_event(event)
                passed += 1
                try:
                    dispatch(type_, event)
                except Exception as exc:
                    self.skip("handler-error", f"handler for {type_} raised {exc!r}",
                              exc_info=True)
                    continue
                handled += 1
        finally:
            self.event_count += passed
            self.handled += handled

    def decode(self, text: str | bytes, where: str = "input") -> tuple[bool, Any]:
        """Decode JSON text: ``(True, object)``, or ``(False, None)`` counted as ``not-json``."""
        try:
            return True, json_loads(text)
        except DECODE_ERRORS as exc:
            self.skip("not-json", f"{where}: {exc}")
            return False, None

    # -- the receive-side rules ----------------------------------------------------------

    def stamp(self, body: dict[str, Any], now: Callable[[], float] = time.time,
              client_clock_skew: int = CLIENT_CLOCK_SKEW) -> tuple[str, dict[str, Any]]:
        """The receive-side clock rule and ``local_received`` (see
        :func:`~tidings.protocol.clock.stamp_received`); returns ``(type, event)``."""
        return stamp_received(body, self.clock, now, client_clock_skew), body

    # -- skipped input -------------------------------------------------------------------

    @property
    def skipped(self) -> int:
        return sum(self.errors.values())

    def skip(self, cause: str, detail: str, exc_info: bool = False) -> None:
        """Count one skipped input under ``cause``; the first of each cause is logged."""
        self.errors[cause] += 1
        if cause not in self._logged_causes:
            self._logged_causes.add(cause)
            self.log.warning("Skipped event input (%s): %s; further ones are only counted",
                             cause, detail, exc_info=exc_info)
        else:
            self.log.debug("Skipped event input (%s): %s", cause, detail)
