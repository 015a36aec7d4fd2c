"""Remote control, client side: broadcasting commands to workers over kombu's pidbox.

The mailbox is declared with Celery's names and settings
(``<control_exchange>.pidbox`` fanout, ``reply.<control_exchange>.pidbox``
direct), so the same commands reach Celery workers and Tidings workers.
``app.control`` (:class:`Control`) and ``app.control.inspect()``
(:class:`Inspect`) have Celery's methods and return Celery's shapes: a list
of ``{node: reply}`` for control commands, one ``{node: reply}`` dict (or
None when nobody answered) for inspect commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kombu.pidbox import Mailbox

from .transport import control_mailbox

if TYPE_CHECKING:
    from .app import App

__all__ = ["Control", "Inspect", "broadcast"]


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


class Inspect:
    """``app.control.inspect(destination=None, timeout=1.0)``: read-only commands.

    Each method returns ``{node: reply}`` merged over the workers that
    answered within ``timeout``, or None if none did (as Celery's).
    """

    def __init__(self, control: Control, destination: list[str] | None = None,
                 timeout: float = 1.0, callback: Any = None, connection: Any = None,
                 limit: int | None = None, pattern: str | None = None,
                 matcher: str | None = None) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout
        self.callback = callback
        self.connection = connection
        self.limit = limit
        self.pattern = pattern
        self.matcher = matcher

    def _request(self, command: str, **arguments: Any) -> dict[str, Any] | None:
        replies = self.control.broadcast(
            command, arguments=arguments, destination=self.destination, reply=True,
            timeout=self.timeout, limit=self.limit, callback=self.callback,
            connection=self.connection, pattern=self.pattern, matcher=self.matcher)
        merged: dict[str, Any] = {}
        for reply in replies or ():
            if isinstance(reply, dict):
                merged.update(reply)
        return merged or None

    def ping(self) -> dict[str, Any] | None:
        return self._request("ping")

    def clock(self) -> dict[str, Any] | None:
        return self._request("clock")

    def stats(self) -> dict[str, Any] | None:
        return self._request("stats")

    def active(self, safe: bool = False) -> dict[str, Any] | None:
        return self._request("active", safe=safe)

    def reserved(self) -> dict[str, Any] | None:
        return self._request("reserved")

    def scheduled(self) -> dict[str, Any] | None:
        return self._request("scheduled")

    def revoked(self) -> dict[str, Any] | None:
        return self._request("revoked")

    def registered(self, *taskinfoitems: str) -> dict[str, Any] | None:
        return self._request("registered", taskinfoitems=list(taskinfoitems))

    registered_tasks = registered

    def active_queues(self) -> dict[str, Any] | None:
        return self._request("active_queues")

    def conf(self, with_defaults: bool = False) -> dict[str, Any] | None:
        return self._request("conf", with_defaults=with_defaults)

    def query_task(self, *ids: str) -> dict[str, Any] | None:
        wanted = list(ids[0]) if len(ids) == 1 and isinstance(ids[0], list | tuple) else list(ids)
        return self._request("query_task", ids=wanted)

    def report(self) -> dict[str, Any] | None:
        return self._request("report")

    def hello(self, from_node: str, revoked: list[str] | None = None) -> dict[str, Any] | None:
        return self._request("hello", from_node=from_node, revoked=revoked)


class Control:
    """``app.control``: broadcast commands; :meth:`inspect` for the read-only ones."""

    def __init__(self, app: App) -> None:
        self.app = app

    def inspect(self, destination: list[str] | None = None, timeout: float = 1.0,
                **kwargs: Any) -> Inspect:
        return Inspect(self, destination=destination, timeout=timeout, **kwargs)

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

    def terminate(self, task_id: str | list[str], destination: list[str] | None = None,
                  signal: str = "SIGTERM", **kwargs: Any) -> Any:
        return self.revoke(task_id, destination=destination, terminate=True, signal=signal,
                           **kwargs)

    def rate_limit(self, task_name: str, rate_limit: str | float | None,
                   destination: list[str] | None = None, **kwargs: Any) -> Any:
        """``rate_limit('proj.add', '10/s')``; ``None`` or ``0`` removes the limit."""
        return self.broadcast("rate_limit", destination=destination,
                              arguments={"task_name": task_name, "rate_limit": rate_limit},
                              **kwargs)

    def time_limit(self, task_name: str, soft: float | None = None, hard: float | None = None,
                   destination: list[str] | None = None, **kwargs: Any) -> Any:
        return self.broadcast("time_limit", destination=destination,
                              arguments={"task_name": task_name, "soft": soft, "hard": hard},
                              **kwargs)

    def shutdown(self, destination: list[str] | None = None, **kwargs: Any) -> Any:
        """Warm shutdown; workers do not reply (as Celery's)."""
        return self.broadcast("shutdown", destination=destination, **kwargs)

    def pool_grow(self, n: int = 1, destination: list[str] | None = None,
                  **kwargs: Any) -> Any:
        return self.broadcast("pool_grow", destination=destination, arguments={"n": n},
                              **kwargs)

    def pool_shrink(self, n: int = 1, destination: list[str] | None = None,
                    **kwargs: Any) -> Any:
        return self.broadcast("pool_shrink", destination=destination, arguments={"n": n},
                              **kwargs)

    def autoscale(self, max: int, min: int, destination: list[str] | None = None,
                  **kwargs: Any) -> Any:
        return self.broadcast("autoscale", destination=destination,
                              arguments={"max": max, "min": min}, **kwargs)

    def pool_restart(self, modules: list[str] | None = None, reload: bool = False,
                     destination: list[str] | None = None, **kwargs: Any) -> Any:
        return self.broadcast("pool_restart", destination=destination,
                              arguments={"modules": modules, "reload": reload}, **kwargs)

    def add_consumer(self, queue: str, exchange: str | None = None,
                     exchange_type: str = "direct", routing_key: str | None = None,
                     destination: list[str] | None = None, **kwargs: Any) -> Any:
        return self.broadcast("add_consumer", destination=destination, arguments={
            "queue": queue, "exchange": exchange, "exchange_type": exchange_type,
            "routing_key": routing_key}, **kwargs)

    def cancel_consumer(self, queue: str, destination: list[str] | None = None,
                        **kwargs: Any) -> Any:
        return self.broadcast("cancel_consumer", destination=destination,
                              arguments={"queue": queue}, **kwargs)
