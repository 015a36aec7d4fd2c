"""How one event changes a :class:`~tidings.events.state.State`: the reducer.

Each step of a task event is a small method, in the order they run:
find or create the task, note who reported it (the client, or the worker,
whose liveness it refreshes), widen the task's place in time, apply the
event's fields, re-file it in the indexes, link parent and children, and
keep within ``max_tasks_in_memory``.  Subclasses may override any step;
they run under the State's lock.
"""

from __future__ import annotations

import sys
from collections import deque
from typing import TYPE_CHECKING, Any

from ...protocol import states
from ...protocol.events import (
    EMPTY_ARGUMENTS,
    EVENT_TYPES,
    SHARED_TEXT_MAX,
    TASK_GROUP,
    TASK_SHARED_ARGUMENTS,
    TASK_SHARED_FIELDS,
    WORKER_GROUP,
)

if TYPE_CHECKING:
    from .cluster import State
    from .task import Task
    from .worker import Worker

__all__ = ["Reducer"]

READY_STATES = states.READY_STATES
_intern = sys.intern
#: Each known event type's protocol copy, with its group and subject: one lookup
#: instead of a split that makes two new strings (and hashes them) per event.
_TYPES = {name: (name, *name.partition("-")[::2]) for name in EVENT_TYPES}
#: One object per empty ``args``/``kwargs`` text.
_EMPTY = {text: text for text in EMPTY_ARGUMENTS}
#: Shared fields whose every short text is interned (``args``/``kwargs`` only when empty).
_SHARED_TEXT = tuple(sorted(TASK_SHARED_FIELDS - TASK_SHARED_ARGUMENTS))
#: Subjects whose events carry the shared fields (``task-sent``, ``task-received``).
_DESCRIBING = frozenset({"sent", "received"})


def _shared(value: Any) -> Any:
    """The one shared copy of a text many tasks have (others come back as they are)."""
    if value.__class__ is str and len(value) <= SHARED_TEXT_MAX:
        return _intern(value)
    return value


#: Numbers every event of a sender repeats (its pid, its UTC offset), and the one
#: shared object kept for each value (at most ``NUMBERS_MAX``; starts over when full).
_SENDER_NUMBERS = ("pid", "utcoffset")
_numbers: dict[int | float, int | float] = {}
NUMBERS_MAX = 4096


def _share_numbers(event: dict[str, Any]) -> None:
    """One object per pid and UTC offset value, not one per task (numbers are immutable:
    sharing them between States is harmless)."""
    for field in _SENDER_NUMBERS:
        value = event.get(field)
        cls = value.__class__
        if cls is int or cls is float:
            shared = _numbers.get(value)
            if shared is None:
                if len(_numbers) >= NUMBERS_MAX:
                    _numbers.clear()
                _numbers[value] = value
            elif shared.__class__ is cls:  # 0 and 0.0 are equal keys, not the same value
                event[field] = shared


#: Queues of task ids (first-seen order, ready order) hold ids of tasks
#: already gone; they are compacted when longer than this many times
#: ``max_tasks_in_memory`` (plus a small constant, so tiny states do not
#: compact on every eviction).
QUEUE_SLACK_FACTOR = 2
QUEUE_SLACK_EXTRA = 64


class Reducer:
    """The ingest half of :class:`~tidings.events.state.State` (see the module docs)."""

    def _event(self: State, event: dict[str, Any]) -> Any:
        self.event_count += 1
        if self.event_callback:
            self.event_callback(self, event)
        type_ = event.get("type")
        if not isinstance(type_, str):
            return None
        known = _TYPES.get(type_)
        if known is None:
            group, _, subject = type_.partition("-")
        else:  # the protocol's copy of a known name, not one per task
            type_, group, subject = known
            event["type"] = type_
        handler = self.handlers.get(group)
        if handler is not None:
            return handler(subject, event), subject
        if group == TASK_GROUP:
            result = self._task_event(subject, event)
        elif group == WORKER_GROUP:
            result = self._worker_event(subject, event)
        else:
            return None
        return None if result is None else (result, subject)

    # -- workers -------------------------------------------------------------------------

    def _new_worker(self: State, hostname: str) -> Worker:
        worker = self.Worker(hostname)
        worker.drift_warnings = self.drift_warnings
        return worker

    def _store_worker(self: State, hostname: str, worker: Worker) -> None:
        workers = self.workers
        if len(workers) >= self.max_workers_in_memory:
            # Prefer forgetting a worker that is gone; else the first seen.
            victim = next((h for h, w in dict.items(workers) if not w.alive), None)
            if victim is None:
                victim = next(iter(dict.keys(workers)))
            dict.__delitem__(workers, victim)
        dict.__setitem__(workers, hostname, worker)

    def _worker_event(self: State, subject: str, event: dict[str, Any]) -> Any:
        hostname = event.get("hostname")
        timestamp = event.get("timestamp")
        local_received = event.get("local_received")
        if hostname is None or timestamp is None or local_received is None:
            return None
        worker = dict.get(self.workers, hostname)
        created = worker is None
        if created:
            worker = self._new_worker(hostname)
            if subject == "offline":
                created = False  # a throw-away object: an unknown worker left
            else:
                self._store_worker(hostname, worker)
        else:
            # the worker keeps its copy of its name, which its tasks share, rather
            # than taking each heartbeat's (a copy per task between heartbeats)
            event["hostname"] = worker.hostname
        worker.event(subject, timestamp, local_received, event)
        if self.on_node_join and (created or subject == "online"):
            self.on_node_join(worker)
        if subject == "offline" and self.on_node_leave:
            self.on_node_leave(worker)
            dict.pop(self.workers, hostname, None)
        self.on_worker_event(worker, subject, created)
        return worker, created

    # -- tasks ---------------------------------------------------------------------------

    def _task_event(self: State, subject: str, event: dict[str, Any]) -> Any:
        uuid = event.get("uuid")
        if uuid is None:
            return None
        task, created = self._task_for(uuid)
        # the one copy of the id (the task map's key) in the task and its root id,
        # not a copy per event
        uuid = event["uuid"] = task.uuid
        old_name, old_worker = task.name, task.worker
        was_ready = task.state in READY_STATES
        self._note_origin(task, subject, event)
        key = (event.get("clock") or 0, event.get("timestamp") or 0.0)
        if task.place_in_time(key):
            self._newest.add(key, task)
        _share_numbers(event)
        if subject in _DESCRIBING:
            self._share_values(event, uuid)
            if subject == "received":
                self.task_count += 1
        if self._dirty is not None:
            self._dirty.add(uuid)
        task.event(subject, event.get("timestamp"), event.get("local_received"), event)
        self._reindex(task, old_name, old_worker)
        self._link_family(task, created)
        self._settle(task, was_ready)
        self.on_task_event(task, subject, created)
        return task, created

    def _task_for(self: State, uuid: str) -> tuple[Task, bool]:
        task = dict.get(self.tasks, uuid)
        if task is not None:
            return task, False
        task = self.Task(uuid, cluster_state=self)
        self._store_task(uuid, task)
        return task, True

    def _store_task(self: State, uuid: str, task: Task) -> None:
        dict.__setitem__(self.tasks, uuid, task)
        if self._order_kept:
            self._order.append(uuid)

    def _note_origin(self: State, task: Task, subject: str, event: dict[str, Any]) -> None:
        """Record who reported the event.

        ``task-sent`` comes from a client.  Any other task event proves its
        worker alive: the worker's heartbeat list gets *our* receive time
        (Celery swaps the arguments and records the sender's).
        """
        hostname = event.get("hostname")
        if subject == "sent":
            if hostname is not None:
                hostname = event["hostname"] = _shared(hostname)
            task.client = hostname
            return
        worker = dict.get(self.workers, hostname)
        if worker is None:
            worker = self._new_worker(hostname)
            self._store_worker(hostname, worker)
        else:
            event["hostname"] = worker.hostname  # the worker's copy, not one per task
        task.worker = worker
        local_received = event.get("local_received")
        if local_received:
            worker.event(None, event.get("timestamp"), local_received)

    def _share_values(self: State, event: dict[str, Any], uuid: str) -> None:
        """Replace values many tasks have in common by one shared copy of each.

        A decoded event brings its own copy of every string: a task name, a
        queue, ``{}``.  Interned, each is kept once however many tasks have
        it (interned strings still go when the last task holding one does).
        """
        for field in _SHARED_TEXT:  # a loop over a few names, no set built per event
            value = event.get(field)
            if value.__class__ is str and len(value) <= SHARED_TEXT_MAX:
                event[field] = _intern(value)
        for field in TASK_SHARED_ARGUMENTS:
            value = event.get(field)
            if value.__class__ is str:
                event[field] = _EMPTY.get(value, value)
        if event.get("root_id") == uuid:
            event["root_id"] = uuid

    def _reindex(self: State, task: Task, old_name: str | None,
                 old_worker: Worker | None) -> None:
        """Keep ``tasks_by_type``/``tasks_by_worker`` up to date as name and worker arrive."""
        name = task.name
        if name != old_name and name is not None:
            self.tasks_by_type.move(old_name, name, task.uuid)
        worker = task.worker
        if worker is not old_worker and worker is not None:
            self.tasks_by_worker.move(old_worker.hostname if old_worker is not None else None,
                                      worker.hostname, task.uuid)

    def _link_family(self: State, task: Task, created: bool) -> None:
        """Link the task to its parent, or remember it until the parent arrives."""
        uuid = task.uuid
        parent_id = task.parent_id
        if parent_id:
            parent = dict.get(self.tasks, parent_id)
            if parent is not None:
                parent.add_child(uuid)
            else:
                self._remember_orphan(parent_id, uuid)
        if created and self._tasks_to_resolve:
            orphans = self._tasks_to_resolve.pop(uuid, None)
            if orphans:
                for child in orphans:
                    task.add_child(child)

    def _remember_orphan(self: State, parent_id: str, uuid: str) -> None:
        pending = self._tasks_to_resolve
        children = pending.get(parent_id)
        if children is None:
            pending[parent_id] = {uuid}
            if len(pending) > self.max_tasks_in_memory:
                pending.popitem(last=False)
        else:
            children.add(uuid)

    def _settle(self: State, task: Task, was_ready: bool) -> None:
        """Queue a newly finished task for eviction; evict when over the bound."""
        if not was_ready and task.state in READY_STATES:
            self._ready.append(task.uuid)
        if len(self.tasks) > self.max_tasks_in_memory:
            self._evict(task)

    def _evict(self: State, keep: Task) -> None:
        """Drop tasks until within ``max_tasks_in_memory``: finished ones first."""
        tasks = self.tasks
        limit = self.max_tasks_in_memory
        ready_q, order_q = self._ready, self._order
        while len(tasks) > limit:
            victim = None
            while ready_q:
                uuid = ready_q.popleft()
                task = dict.get(tasks, uuid)
                if task is not None and task is not keep and task.state in READY_STATES:
                    victim = task
                    self.evicted["ready"] += 1
                    break
            if victim is None:
                if not self._order_kept:  # first needed now: the map's order is first seen
                    order_q = self._order = deque(dict.keys(tasks))
                    self._order_kept = True
                while order_q:
                    uuid = order_q.popleft()
                    task = dict.get(tasks, uuid)
                    if task is not None and task is not keep:
                        victim = task
                        self.evicted["unready"] += 1
                        break
                    if task is keep:
                        order_q.append(uuid)
                        if len(order_q) == 1:
                            break
            if victim is None:
                return
            self._forget(victim)
        slack = QUEUE_SLACK_FACTOR * limit + QUEUE_SLACK_EXTRA
        if len(order_q) > slack:
            self._order = deque(u for u in order_q if u in tasks)
        if len(ready_q) > slack:
            self._ready = deque(u for u in ready_q
                                if (t := dict.get(tasks, u)) is not None
                                and t.state in READY_STATES)

    def _unlink(self: State, task: Task) -> None:
        """``task`` is no longer in ``tasks``: time order and the indexes must not list
        it, and snapshot takers must learn it is gone."""
        self._newest.forget(task)
        if self._dirty is not None:
            self._dirty.add(task.uuid)
        if task.name is not None:
            self.tasks_by_type.discard(task.name)
        if task.worker is not None:
            self.tasks_by_worker.discard(task.worker.hostname)

    def _removed_from_map(self: State, task: Task) -> None:
        """A task removed through ``tasks`` itself (``del state.tasks[uuid]``)."""
        with self._mutex:
            self._unlink(task)

    def _forget(self: State, task: Task) -> None:
        dict.pop(self.tasks, task.uuid, None)
        self._unlink(task)
        self.on_task_evicted(task)
