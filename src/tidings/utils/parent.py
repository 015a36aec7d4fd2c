"""Processes that must not outlive the process that started them.

``tidings demo`` starts two workers, and a prefork worker starts children.
If the parent is killed (SIGKILL, a closed terminal), its children would
go on running with parent 1, consuming queues, forever.  On Linux the kernel
can send a child a signal when its parent dies (``PR_SET_PDEATHSIG``); this
module asks for it, and checks that the parent did not die before the
request was made.  Elsewhere :func:`die_with_parent` does nothing and says
so (the children then notice the parent's death only through their pipes).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Mapping

__all__ = ["PARENT_PID_ENV", "die_with_parent", "honour_parent_env"]

#: Set by a parent (the demo) to its pid: a ``tidings worker`` that sees it
#: gets SIGQUIT (a cold shutdown, as in Celery) when that process dies.
PARENT_PID_ENV = "TIDINGS_PARENT_PID"

_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM, parent: int | None = None) -> bool:
    """Get ``signum`` when the parent process dies; True if the kernel took the request.

    ``parent`` is the pid the caller expects as its parent; if the process
    has already been re-parented (the parent died first), ``signum`` is
    sent at once.
    """
    expected = parent if parent is not None else os.getppid()
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != expected:
        os.kill(os.getpid(), signum)
    return armed


def honour_parent_env(environ: Mapping[str, str] | None = None) -> bool:
    """Die with the process named by :data:`PARENT_PID_ENV`, if it is set."""
    value = (os.environ if environ is None else environ).get(PARENT_PID_ENV, "")
    if not value.strip().isdigit():
        return False
    return die_with_parent(signal.SIGQUIT, int(value))
