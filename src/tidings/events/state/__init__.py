"""In-memory cluster state rebuilt from events (API of ``celery.events.state``).

A consumer written for Celery works by changing its import from
``celery.events.state`` to ``tidings.events.state``: the classes, methods,
attributes and the observable task states are the same.  What differs fixes
Celery's known weaknesses:

* A task event refreshes its worker's liveness with the *local receive time*,
  not the sender's timestamp (a worker with a skewed clock no longer looks
  alive for hours after it died).
* Event keys can never overwrite internals (``children``, ``worker``,
  ``cluster_state``, ``heartbeats``, methods, private names), also those a
  subclass of ``Task`` or ``Worker`` adds: such keys are ignored.
* An event older than the task's current state (it arrives late) fills in
  the task's data but never overwrites the newer event's metadata
  (``timestamp``, ``clock``, ``hostname``, ``pid``, ``type`` ...).  A
  ``task-rejected`` outranks ``RECEIVED``/``STARTED``, so a rejection shows.
* ``tasks_by_type`` and ``tasks_by_worker`` are kept up to date as a task's
  name and worker become known, not only when the task is created; a task is
  indexed under the worker that handles it (not under the client that sent
  it), and client-only tasks no longer break ``tasks_by_worker(host)``.
* ``Task.parent`` and ``Task.root`` are looked up on every access, so a parent
  that arrives late is found.
* When ``max_tasks_in_memory`` is reached, finished tasks are evicted first
  (oldest first); running tasks go only when nothing finished is left.
* Pickling keeps parent/child links; every index and buffer is bounded.
* Clock-drift warnings are remembered per State (Celery: per process).

The package is split by concept: :mod:`.task` and :mod:`.worker` (the
models), :mod:`.keys` (which event keys may set attributes), :mod:`.indexes`
(the containers), :mod:`.reducer` (how an event changes the state) and
:mod:`.cluster` (the :class:`State` and its read API).
"""

from .cluster import Changes, State
from .indexes import TaskIndex, TaskMap, WorkerMap
from .task import Task
from .worker import DriftWarnings, Worker, heartbeat_expires

__all__ = [
    "Changes",
    "DriftWarnings",
    "State",
    "Task",
    "TaskIndex",
    "TaskMap",
    "Worker",
    "WorkerMap",
    "heartbeat_expires",
]
