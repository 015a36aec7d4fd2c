"""A client's ``task-sent`` events, batched on a connection of their own (opt-in).

With ``task_send_sent_event`` on, Celery publishes each ``task-sent`` right
after its task message, on the same channel: every ``apply_async`` pays for
a second publish (``bench/client.py``: Celery's clients run at 0.71
(RabbitMQ) and 0.64 (Redis) of their speed with the event on).  That is
also what a Tidings client does by default.  With
``task_sent_event_max_delay`` (ours, seconds) the events of a process go
through this instead: one dispatcher per app with adaptive batching (see
:mod:`tidings.events.dispatcher`).  An event that finds the client idle is
published at once, by the caller; under load, events wait at most that
delay and go as ``task.multi`` batches, which Celery's receivers read too.

* The dispatcher has a connection of its own, because its timer thread
  publishes the batches that are due while the caller's thread may be
  publishing a task on its connection.
* The price: a worker can report a fast task before its ``task-sent``
  arrives.  The State orders a task's states by precedence and clock, so
  monitors end up with the same task; but the metrics exporter labels the
  events it counts before a task's ``task-sent`` with the queue
  ``celery``, as celery-exporter does for a task it knows nothing of.
  Hence opt-in.
* A batch that could not be published stays in the dispatcher's bounded,
  counted buffer; the next task sent opens a new connection and publishes
  it first (Celery's client retries the event with the task's retry
  policy).  At interpreter exit, or :meth:`SentEvents.close`, what is
  buffered is published, and what cannot be is logged with its count.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

from ..protocol.events import TASK_GROUP, TASK_SENT
from ..utils.nodenames import anon_nodename
from .dispatcher import EventDispatcher

if TYPE_CHECKING:
    from ..app import App

__all__ = ["SENT_EVENT_BATCH", "SentEvents"]

logger = logging.getLogger("tidings.events.sent")

#: ``task-sent`` events per ``task.multi`` batch, at most.
SENT_EVENT_BATCH = 100


class SentEvents:
    """Publishes one app's ``task-sent`` events for every thread of this process, in
    batches that wait at most ``task_sent_event_max_delay`` seconds."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._dispatcher: EventDispatcher | None = None
        _live.add(self)

    def send(self, fields: dict[str, Any]) -> None:
        """Queue a ``task-sent`` event with ``fields`` (the task's, without the envelope)."""
        dispatcher = self._dispatcher
        if dispatcher is None or dispatcher.failed_sends:
            dispatcher = self._renew()
        dispatcher.send(TASK_SENT, **fields)

    @property
    def dispatcher(self) -> EventDispatcher | None:
        """The dispatcher in use (``None`` before the first event)."""
        return self._dispatcher

    def _renew(self) -> EventDispatcher:
        """A first dispatcher, or a new connection for one whose publishing failed:
        the new one takes over the unsent events and publishes them first."""
        with self._lock:
            old = self._dispatcher
            if old is not None and not old.failed_sends:
                return old  # another thread renewed it meanwhile
            new = EventDispatcher(
                self.app.connection_for_write(), hostname=anon_nodename(), app=self.app,
                buffer_group=[TASK_GROUP], buffer_limit=SENT_EVENT_BATCH,
                max_delay=self.app.conf.task_sent_event_max_delay)
            if old is not None:
                new.extend_buffer(old)
                _retire(old)
                new.flush()
            self._dispatcher = new
            return new

    def close(self) -> None:
        """Publish what is buffered and close the connection (the next event opens one)."""
        with self._lock:
            dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is None:
            return
        dispatcher.flush()
        unsent = dispatcher.buffered
        if unsent:
            logger.warning("%d task-sent event(s) could not be published and are lost",
                           unsent)
        _retire(dispatcher)

    def _forget(self) -> None:
        """In a forked child: the parent's dispatcher, connection and timer are not ours."""
        self._lock = threading.Lock()
        self._dispatcher = None


def _retire(dispatcher: EventDispatcher) -> None:
    dispatcher.close()
    try:
        if dispatcher.connection is not None:
            dispatcher.connection.release()
    except Exception as exc:  # a connection already lost: nothing more to close
        logger.debug("closing the task-sent connection failed: %r", exc)


#: Every SentEvents alive, for the exit and fork hooks (weakly: an app
#: dropped takes its own with it).
_live: weakref.WeakSet[SentEvents] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for sent in list(_live):
        try:
            sent.close()
        except Exception:  # one app's failure does not keep the others' events
            logger.exception("publishing the last task-sent events failed")


def _forget_all() -> None:
    for sent in list(_live):
        sent._forget()


os.register_at_fork(after_in_child=_forget_all)
