"""Node names: ``worker@host`` for workers, ``gen<pid>@host`` for other processes (Celery's)."""

from __future__ import annotations

import os
import socket

__all__ = ["anon_nodename", "nodename"]


def anon_nodename(hostname: str | None = None, prefix: str = "gen") -> str:
    """Node name of a process that is not a worker: ``gen<pid>@<host>`` (Celery's)."""
    return f"{prefix}{os.getpid()}@{hostname or socket.gethostname()}"


def nodename(name: str | None, default: str = "tidings") -> str:
    """``-n`` value with ``%h`` (host), ``%n`` (short host), ``%d`` (domain) expanded."""
    host = socket.gethostname()
    if not name:
        return f"{default}@{host}"
    short, _, domain = host.partition(".")
    name = name.replace("%h", host).replace("%n", short).replace("%d", domain)
    return name if "@" in name else f"{name}@{host}"
