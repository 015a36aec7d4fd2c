"""Node names: ``worker@host`` for workers, ``gen<pid>@host`` for other processes (Celery's)."""

from __future__ import annotations

import functools
import os
import socket

__all__ = ["anon_nodename", "gethostname", "nodename"]

#: The host's name, looked up once (as Celery does): a client names itself on every
#: task it sends, and the system call costs more than the rest of the name.
gethostname = functools.lru_cache(maxsize=1)(socket.gethostname)


def anon_nodename(hostname: str | None = None, prefix: str = "gen") -> str:
    """Node name of a process that is not a worker: ``gen<pid>@<host>`` (Celery's)."""
    return f"{prefix}{os.getpid()}@{hostname or gethostname()}"


def nodename(name: str | None, default: str = "tidings") -> str:
    """``-n`` value with ``%h`` (host), ``%n`` (short host), ``%d`` (domain) expanded."""
    host = gethostname()
    if not name:
        return f"{default}@{host}"
    short, _, domain = host.partition(".")
    name = name.replace("%h", host).replace("%n", short).replace("%d", domain)
    return name if "@" in name else f"{name}@{host}"
