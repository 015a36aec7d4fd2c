"""``--db``: history that survives a restart, for the terminal and the web monitor.

``--db URL`` (SQLite or PostgreSQL, any SQLAlchemy URL), or ``--db`` alone
for a SQLite file at a per-user path.  The monitor loads what the database
holds before it goes live and writes every second from then on
(:class:`tidings.cameras.History`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import click

from ..cameras import History, default_history_url
from .common import CommandError

__all__ = ["DEFAULT", "history"]

#: What ``--db`` without a URL stands for.
DEFAULT = "default"


@contextmanager
def history(state: Any, db: str | None, max_tasks: int | None = None):
    """Load ``db`` into ``state`` and write to it until the block ends (no ``db``: nothing)."""
    if not db:
        yield None
        return
    url = default_history_url() if db == DEFAULT else db
    try:
        keeper = History(state, url)
        tasks, workers = keeper.load(max_tasks)
    except Exception as exc:  # a wrong URL, a missing driver, a database that is down
        raise CommandError(f"--db {url}: {exc}") from None
    click.echo(f"-> history: {tasks} tasks and {workers} workers loaded from "
               f"{keeper.camera.engine.url.render_as_string(hide_password=True)}", err=True)
    keeper.start()
    try:
        yield keeper
    finally:
        keeper.stop()
