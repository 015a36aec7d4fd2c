"""``tidings demo``: the README's main job."""

import os

from tests.cli.helpers import Running
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
