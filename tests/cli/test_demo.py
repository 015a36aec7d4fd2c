"""``tidings demo``: the README's main job."""

import os
import signal
import time

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


SIGNALS = [signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGKILL]


@pytest.fixture(scope="module")
def signalled_demos(tmp_path_factory):
    """A demo per signal, all running at once, each sent its signal once both its
    workers run tasks (a long one among them: a warm shutdown waits for it, and
    the demo kills a worker after 30 s): ``{sig: (demo, its processes, when the
    signal went)}``.

    Together, the four shutdowns take the time of one (about 40 s each).
    """
    demos = {}
    families: dict[int, set[int]] = {}
    sent_at: dict[int, float] = {}
    try:
        for sig in SIGNALS:
            tmp_path = tmp_path_factory.mktemp(f"demo-{sig.name}")
            env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
            env["TIDINGS_BROKER_DATA_DIR"] = str(tmp_path / "broker")
            env["PYTHONPATH"] = str(ROOT)
            demos[sig] = Running(["demo", "--dump"], env, tmp_path)
        for sig, demo in demos.items():
            assert wait_for(lambda d=demo: d.stdout.count("] started:") >= 2
                            and "task started: demo.render_report" in d.stdout, 90), \
                f"{sig.name}: {demo.stderr}\n{demo.stdout[:3000]}"
            # 2 workers, 2 prefork children each (a child being replaced after a
            # terminated task is briefly missing: wait until all are there)
            assert wait_for(lambda d=demo: len(descendants(d.proc.pid)) >= 6, 30), \
                descendants(demo.proc.pid)
            families[sig] = descendants(demo.proc.pid)
            demo.proc.send_signal(sig)
            sent_at[sig] = time.monotonic()
        yield {sig: (demo, families[sig], sent_at[sig]) for sig, demo in demos.items()}
    finally:
        for demo in demos.values():
            demo.stop(signal.SIGKILL)
        for pid in set().union(*families.values()):  # whatever survived a failed test
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_the_demos_workers_die_with_it(sig, signalled_demos):
    """However the demo ends, its workers and their pool children end too."""
    demo, family, sent_at = signalled_demos[sig]
    demo.proc.wait(max(0.1, sent_at + 90 - time.monotonic()))  # 90 s after its signal
    assert wait_for(lambda: not any(alive(p) for p in family), 40), \
        [p for p in family if alive(p)]
