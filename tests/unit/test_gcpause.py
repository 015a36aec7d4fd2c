import gc
import os
import threading

import pytest

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
