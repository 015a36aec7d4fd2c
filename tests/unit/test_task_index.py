"""``tasks_by_type`` / ``tasks_by_worker``: how their stale entries are dropped
(``events/state/indexes.py``)."""

from __future__ import annotations

from tidings.events.state.indexes import INDEX_SLACK, TaskIndex


class Filed:
    """A task as an index sees it: an id and the key it is under."""

    def __init__(self, uuid: str, key: str) -> None:
        self.uuid = uuid
        self.key = key


class CountedTasks(dict):
    """The task map, counting the entries looked up in it."""

    lookups = 0

    def get(self, uuid, default=None):
        CountedTasks.lookups += 1
        return super().get(uuid, default)


def no_sort(tasks, limit, reverse):  # the index's reads by time are not tested here
    raise AssertionError("not read by time")


def test_tasks_leaving_oldest_first_are_dropped_by_a_walk_that_stops_past_them():
    """A bounded State evicts its oldest tasks: the walk that drops their entries
    stops once it has found them, where a pass over the whole list reads it all."""
    tasks = CountedTasks()
    index = TaskIndex(tasks, no_sort, lambda t: t.key)
    order = []
    CountedTasks.lookups = 0
    for n in range(6000):
        task = Filed(f"t{n:05}", "proj.add")
        tasks[task.uuid] = task
        index.add("proj.add", task.uuid)
        order.append(task)
        if len(tasks) > 1000:
            oldest = order.pop(0)
            del tasks[oldest.uuid]
            index.discard("proj.add")
    left = 5000
    assert CountedTasks.lookups <= 1.3 * left  # passes over whole lists: 2 per task
    assert index.ids("proj.add") == set(tasks)


def test_a_task_that_keeps_coming_back_does_not_grow_the_lists():
    """A task moved back and forth between two workers is filed again on each return:
    the lists stay within twice their tasks, and reads give each task once."""
    tasks: dict = {}
    index = TaskIndex(tasks, no_sort, lambda t: t.key)
    for n in range(300):
        key = f"w{n % 2}"
        tasks[f"t{n}"] = Filed(f"t{n}", key)
        index.add(key, f"t{n}")
    moving = tasks["t0"]
    for _ in range(5000):
        old, new = moving.key, ("w1" if moving.key == "w0" else "w0")
        moving.key = new
        index.move(old, new, moving.uuid)
        for key in ("w0", "w1"):
            count = len(index[key])
            assert len(index._ids[key]) <= 2 * (count + 1) + INDEX_SLACK + 1
    for key in ("w0", "w1"):
        assert index.ids(key) == {t.uuid for t in tasks.values() if t.key == key}
