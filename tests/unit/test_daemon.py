import os
import subprocess
import sys

import pytest

from tidings.daemon import DaemonError, Pidfile, parse_umask, pid_alive, read_pid


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_pidfile_written_atomically_and_released(tmp_path):
    path = tmp_path / "cam.pid"
    lock = Pidfile(path)
    lock.acquire()
    assert path.read_text() == f"{os.getpid()}\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    lock.release()
    assert not path.exists()


def test_stale_pidfile_is_replaced(tmp_path):
    path = tmp_path / "cam.pid"
    path.write_text(f"{dead_pid()}\n")
    Pidfile(path).acquire()
    assert read_pid(path) == os.getpid()


def test_garbage_pidfile_is_replaced(tmp_path):
    path = tmp_path / "cam.pid"
    path.write_text("not a pid")
    Pidfile(path).acquire()
    assert read_pid(path) == os.getpid()


def test_live_pidfile_refuses(tmp_path):
    path = tmp_path / "cam.pid"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        path.write_text(f"{other.pid}\n")
        with pytest.raises(DaemonError, match="already running"):
            Pidfile(path).acquire()
        assert read_pid(path) == other.pid
    finally:
        other.kill()
        other.wait()


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())


def test_umask_parsing():
    assert parse_umask("022") == 0o22
    assert parse_umask("0o077") == 0o77
    assert parse_umask("18") == 18
    assert parse_umask(None) is None
    with pytest.raises(DaemonError):
        parse_umask("rwx")
