"""Cameras used by the CLI tests (loaded by dotted path by the real command)."""

import json
import os

from tidings.events.snapshot import Polaroid


class FileCamera(Polaroid):
    """Writes each shot (shot number and task states) as a JSON line to $TEST_CAMERA_OUT."""

    def on_shutter(self, state):
        line = {"shot": self.shots, "pid": os.getpid(),
                "tasks": {u: [t.name, t.state] for u, t in state.tasks.items()},
                "workers": sorted(state.workers)}
        with open(os.environ["TEST_CAMERA_OUT"], "a") as f:
            f.write(json.dumps(line) + "\n")


class NotACamera:
    pass
