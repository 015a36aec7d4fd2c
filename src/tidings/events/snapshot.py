"""Snapshot cameras: photograph the cluster state at intervals (``tidings events -c``).

:class:`Polaroid` has Celery's API (``state``, ``freq``, ``cleanup_freq``,
``maxrate``, ``timer``, ``clear_after``, ``install()``, ``cancel()``,
``capture()``, ``shutter()``, ``cleanup()``, ``on_shutter(state)``,
``on_cleanup()``, ``shutter_signal``, ``cleanup_signal``), so a camera written
for Celery works by changing its import.  Differences from Celery:

* ``on_shutter`` receives a *snapshot*: a consistent copy of the state taken
  while ingest is paused for as long as it takes to copy the tasks that
  changed since the previous shot.  Ingest goes on while ``on_shutter`` runs
  (Celery holds the state lock for the whole of it).  The snapshot's
  ``changed_tasks`` holds the uuids changed (or dropped) since the last shot.
* The signals belong to each camera, not to the class.
* :meth:`Polaroid.cancel` takes a final snapshot (not limited by ``maxrate``).
* A camera that raises is logged and the next shot still happens.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from kombu.utils.limits import TokenBucket

from ..utils.rates import parse_rate
from ..utils.signals import Signal
from ..utils.timer import Entry, Timer
from .state import State

if TYPE_CHECKING:
    from ..app import App

logger = logging.getLogger("tidings.evcam")


class _Shadow:
    """What snapshot tasks resolve ``parent``/``children`` through."""

    def __init__(self) -> None:
        self.tasks: dict[str, Any] = {}


class Snapshotter:
    """Copies a live :class:`State` into a consistent snapshot, incrementally.

    Copies of tasks are kept between shots and only the tasks that changed
    since the previous shot are copied again (:meth:`State.copy_changes`), so
    ingest pauses for a time proportional to the changes, not to the size of
    the state.
    """

    def __init__(self, state: State) -> None:
        self.state = state
        state.track_changes()
        self._shadow = _Shadow()
        self._generation: int | None = None

    def take(self, clear_after: bool = False) -> State:
        state = self.state
        shadow = self._shadow
        changes = state.copy_changes(self._generation, cluster_state=shadow,
                                     clear_after=clear_after)
        self._generation = changes.generation
        if changes.reset:
            shadow.tasks = {}
        for uuid, copy in changes.tasks.items():
            if copy is None:
                shadow.tasks.pop(uuid, None)
            else:
                shadow.tasks[uuid] = copy
        if clear_after:
            shadow_tasks, shadow.tasks = shadow.tasks, {}
        else:
            shadow_tasks = dict(shadow.tasks)
        workers = changes.workers
        for task in shadow_tasks.values():
            worker = task.worker
            if worker is not None:
                task.worker = workers.get(worker.hostname, worker)
        snap = State(workers=workers, tasks=shadow_tasks,
                     max_tasks_in_memory=max(state.max_tasks_in_memory, len(shadow_tasks)),
                     max_workers_in_memory=state.max_workers_in_memory)
        snap.event_count, snap.task_count = changes.event_count, changes.task_count
        snap.changed_tasks = set(changes.tasks)  # type: ignore[attr-defined]
        return snap


class Polaroid:
    """Base class of snapshot cameras: override :meth:`on_shutter` (and :meth:`on_cleanup`)."""

    timer: Timer | None = None
    clear_after = False
    _tref: Entry | None = None
    _ctref: Entry | None = None

    def __init__(self, state: State, freq: float = 1.0, maxrate: str | float | None = None,
                 cleanup_freq: float = 3600.0, timer: Timer | None = None,
                 app: App | None = None) -> None:
        self.app = app
        self.state = state
        self.freq = freq
        self.cleanup_freq = cleanup_freq
        self.timer = timer or self.timer or Timer()
        self.logger = logger
        self.maxrate = maxrate and TokenBucket(parse_rate(maxrate))
        self.shutter_signal = Signal("shutter_signal", providing_args={"state"})
        self.cleanup_signal = Signal("cleanup_signal")
        self._snapshotter: Snapshotter | None = None
        self._shot_lock = threading.Lock()
        #: Shots taken, and shots whose ``on_shutter`` raised.
        self.shots = 0
        self.failed_shots = 0

    def install(self) -> None:
        self._tref = self.timer.call_repeatedly(self.freq, self.capture)
        self._ctref = self.timer.call_repeatedly(self.cleanup_freq, self.cleanup)

    def on_shutter(self, state: State) -> None:
        """Called with a snapshot of the state at each shot; override it."""

    def on_cleanup(self) -> None:
        """Called every ``cleanup_freq`` seconds; override it."""

    def cleanup(self) -> None:
        logger.debug("Cleanup: Running...")
        self.cleanup_signal.send(sender=self.state)
        try:
            self.on_cleanup()
        except Exception:
            logger.exception("Camera cleanup failed")

    def snapshot(self) -> State:
        """A consistent copy of the state (see the module documentation)."""
        if self._snapshotter is None:
            self._snapshotter = Snapshotter(self.state)
        return self._snapshotter.take(clear_after=self.clear_after)

    def shutter(self, force: bool = False) -> None:
        """Take a shot unless ``maxrate`` says it is too soon (``force`` ignores it)."""
        if not force and self.maxrate and not self.maxrate.can_consume():
            return
        with self._shot_lock:
            snap = self.snapshot()
            logger.debug("Shutter: %s", snap)
            self.shots += 1
            self.shutter_signal.send(sender=snap)
            try:
                self.on_shutter(snap)
            except Exception:
                self.failed_shots += 1
                logger.exception("Camera shot failed (the next one will still be taken)")

    def capture(self) -> None:
        self.shutter()

    def cancel(self, final: bool = True) -> None:
        """Stop the timers and take a last snapshot, so nothing seen goes unrecorded."""
        if self._tref is not None:
            self._tref.cancel()
            self._tref = None
            if final:
                self.shutter(force=True)
        if self._ctref is not None:
            self._ctref.cancel()
            self._ctref = None

    def __enter__(self) -> Polaroid:
        self.install()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.cancel()


def stop_camera(camera: Any) -> None:
    """Cancel ``camera`` (its last shot included) and stop its timer thread, if it has one.

    Works for any camera class, not only a :class:`Polaroid`: whatever has a
    ``timer`` with a ``stop()`` has it stopped.
    """
    camera.cancel()
    timer = getattr(camera, "timer", None)
    if timer is not None and hasattr(timer, "stop"):
        timer.stop()
