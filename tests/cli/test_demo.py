"""``tidings demo``: the README's main job."""

import os
import signal

import pytest

from tests.cli.helpers import Running, wait_for
from tests.conftest import ROOT


def test_tidings_demo_shows_every_event_type(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["TIDINGS_BROKER_DATA_DIR"] = str(tmp_path / "broker")
    env["PYTHONPATH"] = str(ROOT)
    demo = Running(["demo", "--duration", "10"], env, tmp_path)
    code = demo.proc.wait(120)
    demo.stop()
    assert code == 0, demo.stderr
    text = demo.stdout
    for label in ("task sent:", "task received:", "task started:", "task succeeded:",
                  "task failed:", "task retried:", "task rejected:", "task revoked:",
                  "] started:", "] heartbeat:", "] shutdown:"):
        assert label in text, label
    assert "terminated=True" in text and "ValueError('card declined" in text
    assert "tasks by state" in demo.stderr


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGKILL],
                         ids=lambda s: s.name)
def test_the_demos_workers_die_with_it(sig, tmp_path):
    """However the demo ends, its workers and their pool children end too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["TIDINGS_BROKER_DATA_DIR"] = str(tmp_path / "broker")
    env["PYTHONPATH"] = str(ROOT)
    demo = Running(["demo", "--dump"], env, tmp_path)
    family: set[int] = set()
    try:
        # both workers online and running tasks (a long one among them: a warm
        # shutdown waits for it, and the demo kills a worker after 30 s)
        assert wait_for(lambda: demo.stdout.count("] started:") >= 2
                        and "task started: demo.render_report" in demo.stdout, 60), \
            demo.stderr
        # 2 workers, 2 prefork children each (a child being replaced after a
        # terminated task is briefly missing: wait until all are there)
        assert wait_for(lambda: len(descendants(demo.proc.pid)) >= 6, 30), \
            descendants(demo.proc.pid)
        family = descendants(demo.proc.pid)
        demo.proc.send_signal(sig)
        demo.proc.wait(90)
        assert wait_for(lambda: not any(alive(p) for p in family), 40), \
            [p for p in family if alive(p)]
    finally:
        demo.stop(signal.SIGKILL)
        for pid in family:  # whatever survived a failed test
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
