import gc
import os
import threading

import pytest

from tests.unit.gc_counting import collections_counted
from tidings.utils.gcpause import PAUSE_ABOVE, collector_paused


@pytest.fixture(autouse=True)
def collector_restored():
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


def test_the_collector_is_off_for_a_large_read_and_back_on_after():
    gc.enable()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with collector_paused(PAUSE_ABOVE + 1):
        assert not gc.isenabled()
    with collector_paused(PAUSE_ABOVE):  # a small read: not worth a pause
        assert gc.isenabled()
    assert gc.isenabled()


def test_overlapping_reads_share_one_pause_and_the_last_one_ends_it():
    gc.enable()
    inside, release = threading.Event(), threading.Event()

    def other_read():
        with collector_paused():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other_read)
    thread.start()
    assert inside.wait(10)
    with collector_paused():
        pass
    assert not gc.isenabled()  # the other thread's read is still under way
    release.set()
    thread.join(10)
    assert gc.isenabled()


def test_a_collector_switched_off_before_stays_off():
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()


def test_a_child_forked_during_a_read_has_the_collector_on():
    gc.enable()
    read, write = os.pipe()
    with collector_paused():
        pid = os.fork()
        if pid == 0:  # the child: report, then out at once
            os.write(write, b"1" if gc.isenabled() else b"0")
            os._exit(0)
    os.close(write)
    assert os.waitpid(pid, 0)[1] == 0
    assert os.read(read, 1) == b"1"
    os.close(read)
    assert gc.isenabled()


def test_what_a_read_made_goes_to_the_oldest_generation_without_a_collection(monkeypatch):
    """The pause ends with no young collection left to run over what the read made."""
    from tidings.utils import gcpause

    monkeypatch.setattr(gcpause._pause, "frozen", False)
    with collections_counted(threshold=None) as collections:
        gc.collect()
        collections.clear()
        with collector_paused():
            made = [[n] for n in range(PAUSE_ABOVE * 5)]  # tracked objects, over the threshold
        assert gc.get_count()[0] < gc.get_threshold()[0]
        marker = made[-1]
        more = [[n] for n in range(gc.get_threshold()[0] // 2)]  # allocations after: no collection
        assert collections == []
        assert any(o is marker for o in gc.get_objects(generation=2))
        del made, more


def test_a_program_that_froze_objects_keeps_them_frozen(monkeypatch):
    from tidings.utils import gcpause

    monkeypatch.setattr(gcpause._pause, "frozen", False)
    gc.enable()
    gc.freeze()  # as a server does before forking its workers
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with collector_paused():
            made = [[n] for n in range(PAUSE_ABOVE * 5)]
        assert gc.get_freeze_count() == frozen
        assert gcpause._pause.frozen  # not asked again: the answer costs a walk of them all
        del made
    finally:
        gc.unfreeze()
