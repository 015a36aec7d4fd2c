"""The time order's passes that drop stale entries (``events/state/timeline.py``)."""

from __future__ import annotations

from tidings.events.state.timeline import STALE_EXTRA, STALE_SHARE, Timeline


class Counted:
    """A task as the timeline sees it, counting how often its key is read."""

    reads = 0

    def __init__(self, uuid: str) -> None:
        self.uuid = uuid
        self._key: tuple | None = None

    @property
    def last_key(self) -> tuple | None:
        Counted.reads += 1
        return self._key

    @last_key.setter
    def last_key(self, key: tuple) -> None:
        self._key = key


def file(timeline: Timeline, tasks: dict, task: Counted, clock: int) -> None:
    tasks.setdefault(task.uuid, task)
    key = (clock, 1.0)
    task.last_key = key
    timeline.add(key, task)


def newest_first(tasks: dict) -> list[str]:
    return [t.uuid for t in sorted(tasks.values(), key=lambda t: (t._key, t.uuid),
                                   reverse=True)]


def test_passes_read_the_entries_filed_since_the_last_pass_when_the_stale_ones_are_there():
    """Each task's four events come together: the passes read about one task per event,
    where passes over the whole list read five, and the list stays within its bound."""
    tasks: dict = {}
    timeline = Timeline(tasks)
    clock = 0
    for n in range(2000):
        clock += 1
        file(timeline, tasks, Counted(f"old{n:05}"), clock)
    Counted.reads = 0
    events = 0
    for n in range(3000):
        task = Counted(f"new{n:05}")
        for _ in range(4):
            clock += 1
            events += 1
            file(timeline, tasks, task, clock)
            assert len(timeline) <= len(tasks) * STALE_SHARE + STALE_EXTRA + 1
    assert Counted.reads <= 1.5 * events  # a pass over the whole list each time: 3.2
    assert [u for u, _ in timeline.take()] == newest_first(tasks)


def test_stale_entries_filed_before_the_last_pass_are_dropped_as_well():
    """Events for tasks filed long ago leave their stale entries before the last pass:
    a pass over the whole list drops them, and reads stay exact."""
    tasks: dict = {}
    timeline = Timeline(tasks)
    old = [Counted(f"old{n:05}") for n in range(1000)]
    clock = 0
    for task in old:
        clock += 1
        file(timeline, tasks, task, clock)
    for n in range(4000):
        clock += 1
        if n % 3:
            file(timeline, tasks, old[(n * 7) % len(old)], clock)  # an old task moves on
        else:
            file(timeline, tasks, Counted(f"new{n:05}"), clock)
        assert len(timeline) <= len(tasks) * STALE_SHARE + STALE_EXTRA + 1
        if n % 500 == 0:
            assert [u for u, _ in timeline.take(limit=50)] == newest_first(tasks)[:50]
    assert [u for u, _ in timeline.take()] == newest_first(tasks)


def test_entries_of_evicted_tasks_are_dropped_by_a_walk_from_the_oldest():
    """A bounded State evicts its oldest tasks: their stale entries are found from the
    start of the list, without a pass over all of it, and reads stay exact."""
    tasks: dict = {}
    timeline = Timeline(tasks)
    bound = 2000
    clock = 0
    order = []
    for n in range(bound):
        clock += 1
        order.append(Counted(f"t{n:05}"))
        file(timeline, tasks, order[-1], clock)
    Counted.reads = 0
    for n in range(bound, 4 * bound):
        task = Counted(f"t{n:05}")
        order.append(task)
        for _ in range(2):
            clock += 1
            file(timeline, tasks, task, clock)
        oldest = order.pop(0)
        del tasks[oldest.uuid]
        timeline.forget(oldest)
        assert len(timeline) <= len(tasks) * STALE_SHARE + STALE_EXTRA + 1
    filed = 2 * 3 * bound
    assert Counted.reads <= 2.5 * filed  # a pass over the whole list each time: 5 per entry
    assert [u for u, _ in timeline.take()] == newest_first(tasks)
