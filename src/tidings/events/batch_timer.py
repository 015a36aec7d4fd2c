"""The thread that publishes an adaptive dispatcher's due batches (see :mod:`.dispatcher`)."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .dispatcher import EventDispatcher

__all__ = ["BatchTimer"]

logger = logging.getLogger(__name__)


class BatchTimer(threading.Thread):
    """Publishes a dispatcher's batches that are due when no send comes to do it.

    One thread per adaptive dispatcher, started with its first batch and
    ended by :meth:`EventDispatcher.close`.  It holds the dispatcher weakly,
    and never holds its own condition while publishing (so a send, which
    schedules under the dispatcher's mutex, cannot deadlock with it).
    """

    def __init__(self, dispatcher: EventDispatcher) -> None:
        super().__init__(name=f"events-batch-timer-{dispatcher.hostname}", daemon=True)
        self._dispatcher = weakref.ref(dispatcher)
        self._cond = threading.Condition()
        self._due: float | None = None
        self._stopped = False

    def schedule(self, due: float) -> None:
        """Come back at ``due``, unless already asked to come back: when, the
        dispatcher's :meth:`~EventDispatcher.timer_turn` decides."""
        with self._cond:
            if self._due is None:
                self._due = due
                self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (
                        self._due is None or self._due > time.monotonic()):
                    self._cond.wait(None if self._due is None
                                    else self._due - time.monotonic())
                if self._stopped:
                    return
                self._due = None
            dispatcher = self._dispatcher()
            if dispatcher is None:
                return
            try:
                due = dispatcher.timer_turn()
            except Exception:  # a failed publish is buffered by the dispatcher; go on
                logger.exception("Publishing a due batch of events failed")
                due = None
            del dispatcher
            if due is not None:
                with self._cond:
                    self._due = due
