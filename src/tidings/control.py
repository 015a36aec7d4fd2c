"""Remote control, client side: broadcasting commands to workers over kombu's pidbox.

The mailbox is declared with Celery's names and settings
(``<control_exchange>.pidbox`` fanout, ``reply.<control_exchange>.pidbox``
direct), so the same commands reach Celery workers and Tidings workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kombu.pidbox import Mailbox

from .transport import control_mailbox

if TYPE_CHECKING:
    from .app import App

__all__ = ["Control", "broadcast"]


def broadcast(
    conf: Any,
    clock: Any,
    connection: Any,
    command: str,
    arguments: dict[str, Any] | None = None,
    destination: list[str] | None = None,
    reply: bool = False,
    timeout: float = 1.0,
    limit: int | None = None,
    callback: Any = None,
    channel: Any = None,
    pattern: str | None = None,
    matcher: str | None = None,
) -> list[dict[str, Any]] | None:
    """Send ``command`` to every worker (or ``destination``) over ``connection``.

    What the mailbox needs comes from the settings ``conf`` and the Lamport
    ``clock``, so a receiver can wake workers up without an app.
    """
    if destination is not None and not isinstance(destination, list | tuple):
        raise ValueError("destination must be a list of node names")
    if limit is None and destination:
        limit = len(destination)
    return control_mailbox(conf, clock)(connection)._broadcast(
        command, arguments, destination, reply, timeout, limit, callback,
        channel=channel, pattern=pattern, matcher=matcher,
    )


class Control:
    """``app.control``."""

    def __init__(self, app: App) -> None:
        self.app = app

    @property
    def mailbox(self) -> Mailbox:
        """Built from the current settings, so changing ``app.conf`` takes effect."""
        return control_mailbox(self.app.conf, self.app.clock)

    def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: list[str] | None = None,
        connection: Any = None,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
        callback: Any = None,
        channel: Any = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> list[dict[str, Any]] | None:
        """Send ``command`` to every worker (or ``destination``); collect replies if asked."""
        own = connection is None
        conn = connection or self.app.connection_for_write()
        try:
            return broadcast(self.app.conf, self.app.clock, conn, command, arguments,
                             destination, reply, timeout, limit, callback, channel=channel,
                             pattern=pattern, matcher=matcher)
        finally:
            if own:
                conn.close()
    def heartbeat(self, **kwargs: Any) -> Any:
        """Ask workers to send a ``worker-heartbeat`` now (used to wake monitors up)."""
        return self.broadcast("heartbeat", **kwargs)

    def ping(self, destination: list[str] | None = None, timeout: float = 1.0,
             **kwargs: Any) -> Any:
        return self.broadcast("ping", reply=True, destination=destination, timeout=timeout,
                              **kwargs)

    def enable_events(self, destination: list[str] | None = None, **kwargs: Any) -> Any:
        return self.broadcast("enable_events", destination=destination, **kwargs)

    def disable_events(self, destination: list[str] | None = None, **kwargs: Any) -> Any:
        return self.broadcast("disable_events", destination=destination, **kwargs)

    def revoke(self, task_id: str | list[str], destination: list[str] | None = None,
               terminate: bool = False, signal: str = "SIGTERM", **kwargs: Any) -> Any:
        return self.broadcast(
            "revoke", destination=destination,
            arguments={"task_id": task_id, "terminate": terminate, "signal": signal}, **kwargs,
        )
