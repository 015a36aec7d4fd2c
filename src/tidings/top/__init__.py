"""The live terminal monitor."""

from __future__ import annotations

import threading
from typing import Any

from ..transport import redact_url


class Ingest:
    """Events from the broker into a State, in a thread of their own, reconnecting."""

    def __init__(self, app: Any, state: Any, event_filter: Any = None) -> None:
        self.app = app
        self.state = state
        self.stop = threading.Event()
        self.status: list[str] = []
        self.errors: dict[str, int] = {}
        self.receiver: Any = None
        self.filter = event_filter
        self.thread = threading.Thread(target=self._run, name="tidings-top-ingest",
                                       daemon=True)

    def start(self) -> Ingest:
        self.thread.start()
        return self

    def _feed(self, event: dict[str, Any]) -> None:
        if self.filter is None or self.filter(event):
            self.state.event(event)

    def _factory(self, *args: Any, **kwargs: Any) -> Any:
        from ..events.receiver import EventReceiver

        receiver = EventReceiver(*args, **kwargs)
        receiver.errors = _Shared(self.errors)
        self.receiver = receiver
        return receiver

    def _run(self) -> None:
        from ..events.receiver import consume_forever

        try:
            consume_forever(self.app, {"*": self._feed}, self.stop, on_status=self.status.append,
                            connect_retries=None, receiver_factory=self._factory)
        except Exception as exc:  # shown on screen; the monitor stays up
            self.status.append(f"receiver stopped: {exc!r}")

    def close(self) -> None:
        self.stop.set()
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(3)


def run_top(app: Any, max_tasks: int | None = None, refresh: float = 0.5,
            event_filter: Any = None) -> None:
    """Consume events into a State in a thread and show them until the user quits."""
    from .app import TopApp

    state = app.events.State(**({"max_tasks_in_memory": max_tasks} if max_tasks else {}))
    ingest = Ingest(app, state, event_filter).start()
    try:
        TopApp(state, app=app, broker_label=redact_url(app.conf.broker_url),
               receiver_errors=ingest.errors, refresh=refresh, status=ingest.status).run()
    finally:
        ingest.close()


class _Shared(dict):
    """A Counter-like dict shared with the screen (``receiver.errors[cause] += 1``)."""

    def __init__(self, target: dict[str, int]) -> None:
        super().__init__()
        self.target = target

    def __missing__(self, key: str) -> int:
        return 0

    def __setitem__(self, key: str, value: int) -> None:
        super().__setitem__(key, value)
        self.target[key] = value

    def update(self, other: Any = (), **kw: Any) -> None:  # type: ignore[override]
        for key, value in dict(other, **kw).items():
            self[key] = self.get(key, 0) + value
