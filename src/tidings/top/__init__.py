"""The live terminal monitor."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..events.source import EventSource, open_source

if TYPE_CHECKING:
    from ..events.state import State

__all__ = ["Ingest", "run_top"]

#: Seconds :meth:`Ingest.close` waits for the ingest thread.
INGEST_JOIN_TIMEOUT = 3.0


class Ingest:
    """Events from a source into a State, in a thread of their own.

    ``Ingest(app, state)`` reads the app's broker (waiting for it as long as
    it takes); pass ``source`` for anything else (``--replay``, a filter).
    The source's ``errors`` and ``status`` are what the screen shows.
    """

    def __init__(self, app: Any, state: State, source: EventSource | None = None) -> None:
        self.state = state
        self.source = source or open_source(app, connect_retries=None)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="tidings-top-ingest",
                                       daemon=True)

    def start(self) -> Ingest:
        self.thread.start()
        return self

    def _run(self) -> None:
        self.source.run_guarded(self.state.event, self.stop)  # a failure shows on screen

    def close(self) -> None:
        self.stop.set()
        self.thread.join(INGEST_JOIN_TIMEOUT)


def run_top(app: Any, source: EventSource | None = None, max_tasks: int | None = None,
            refresh: float = 0.5, state: State | None = None) -> None:
    """Consume events into a State in a thread and show them until the user quits.

    ``state``: one to start from (e.g. loaded from a history database).
    """
    from .app import TopApp

    if state is None:
        state = app.events.State(**({"max_tasks_in_memory": max_tasks} if max_tasks else {}))
    ingest = Ingest(app, state, source).start()
    try:
        TopApp(state, app=app if ingest.source.live else None, source=ingest.source,
               refresh=refresh).run()
    finally:
        ingest.close()
