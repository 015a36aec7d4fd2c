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
  buffered is published (on a new connection if the dispatcher's own is
  gone), and what cannot be is logged with its count.
* An app dropped with events waiting publishes them too: when the
  collector takes its :class:`SentEvents`, the dispatcher is closed from a
  thread of its own (the collector may run in a thread that holds the
  dispatcher's lock), which keeps the dispatcher until it is done.
* A send and a close never interleave: a send holds the slot's lock while
  it hands the event to the dispatcher, so an event is either in the
  batch a close publishes or goes to the dispatcher opened after it,
  never to one already retired.
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


class _Slot:
    """The dispatcher in use and its lock: what closing needs, also once the
    :class:`SentEvents` that held them is being collected."""

    __slots__ = ("dispatcher", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.dispatcher: EventDispatcher | None = None


class SentEvents:
    """Publishes one app's ``task-sent`` events for every thread of this process, in
    batches that wait at most ``task_sent_event_max_delay`` seconds."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._slot = _Slot()
        _live.add(self)

    def __del__(self) -> None:
        # An app collected with events waiting: they are published all the same.  (Not
        # weakref.finalize: its callback would hold the dispatcher, which holds the app.)
        try:
            _close_when_collected(self._slot)
        except Exception:  # late in interpreter shutdown: the exit hook closed it already
            pass

    def send(self, fields: dict[str, Any]) -> None:
        """Queue a ``task-sent`` event with ``fields`` (the task's, without the envelope)."""
        slot = self._slot
        with slot.lock:  # never into a dispatcher that a close is retiring
            dispatcher = slot.dispatcher
            if dispatcher is None or dispatcher.failed_sends:
                dispatcher = self._renew()
            dispatcher.send_fields(TASK_SENT, fields)

    @property
    def dispatcher(self) -> EventDispatcher | None:
        """The dispatcher in use (``None`` before the first event)."""
        return self._slot.dispatcher

    def _renew(self) -> EventDispatcher:
        """A first dispatcher, or a new connection for one whose publishing failed:
        the new one takes over the unsent events and publishes them first.
        Called with the slot's lock held."""
        slot = self._slot
        slot.dispatcher = new = _successor(self.app, slot.dispatcher)
        return new

    def close(self) -> None:
        """Publish what is buffered and close the connection (the next event opens one)."""
        _close_slot(self._slot)

    def _forget(self) -> None:
        """In a forked child: the parent's dispatcher, connection and timer are not ours."""
        self._slot.lock = threading.Lock()
        self._slot.dispatcher = None


def _successor(app: App, old: EventDispatcher | None) -> EventDispatcher:
    """A dispatcher on a new connection, which takes over ``old``'s unsent events and
    publishes them first (``old`` is retired)."""
    new = EventDispatcher(
        app.connection_for_write(), hostname=anon_nodename(), app=app,
        buffer_group=[TASK_GROUP], buffer_limit=SENT_EVENT_BATCH,
        max_delay=app.conf.task_sent_event_max_delay)
    if old is not None:
        new.extend_buffer(old)
        _retire(old)
        new.flush()
    return new


def _close_slot(slot: _Slot) -> None:
    with slot.lock:  # a send under way finishes first: its event is in the flush
        dispatcher, slot.dispatcher = slot.dispatcher, None
    if dispatcher is None:
        return
    dispatcher.flush()
    if dispatcher.buffered:
        # Its connection is gone (the broker went away, or the collector closed the
        # socket of an app it is collecting): once more, on a new connection.
        dispatcher = _successor(dispatcher.app, dispatcher)
    unsent = dispatcher.buffered
    if unsent:
        logger.warning("%d task-sent event(s) could not be published and are lost", unsent)
    _retire(dispatcher)


def _close_when_collected(slot: _Slot) -> None:
    """For a collected :class:`SentEvents`: its last events are published from another
    thread, since the collector may have run in one holding a lock that publishing
    takes."""
    if slot.dispatcher is None:
        return
    try:
        threading.Thread(target=_close_slot, args=(slot,), name="task-sent-close").start()
    except RuntimeError:  # no new threads at interpreter shutdown: close here
        _close_slot(slot)
    except Exception:  # never raise out of a collection
        logger.exception("publishing a dropped app's task-sent events failed")


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
