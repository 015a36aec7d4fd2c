"""The application object: configuration, clock and connections in one place."""

from __future__ import annotations

import os
import socket
from functools import cached_property
from typing import TYPE_CHECKING, Any

from kombu import Connection
from kombu.clocks import LamportClock

from .config import Settings
from .transport import connection_for, redact_url

if TYPE_CHECKING:
    from .events.dispatcher import EventDispatcher
    from .events.receiver import EventReceiver
    from .events.state import State


def anon_nodename(hostname: str | None = None, prefix: str = "gen") -> str:
    """Node name of a process that is not a worker: ``gen<pid>@<host>`` (Celery's)."""
    return f"{prefix}{os.getpid()}@{hostname or socket.gethostname()}"


class App:
    """A Tidings application.

    ``App(main=None, broker=None, **settings)``: ``settings`` use Celery's
    names (``event_exchange``, ``worker_send_task_events`` ...).  Values given
    here win over ``TIDINGS_*`` environment variables, which win over the
    defaults.  With no broker anywhere, the embedded broker is used.
    """

    def __init__(self, main: str | None = None, broker: str | None = None, **settings: Any):
        self.main = main
        explicit = dict(settings)
        if broker is not None:
            explicit["broker_url"] = broker
        self.conf = Settings(explicit)
        #: One Lamport clock per app, shared by every dispatcher and receiver.
        self.clock = LamportClock()

    def __repr__(self) -> str:
        return f"<App {self.main or '__main__'} broker={redact_url(self.conf.broker_url)}>"

    def connection_for_write(self, url: str | None = None, **kwargs: Any) -> Connection:
        """A new (lazy) connection for publishing."""
        return self._connection(url, **kwargs)

    def connection_for_read(self, url: str | None = None, **kwargs: Any) -> Connection:
        """A new (lazy) connection for consuming."""
        return self._connection(url, **kwargs)

    def _connection(self, url: str | None = None, **kwargs: Any) -> Connection:
        conf = self.conf
        return connection_for(
            url or conf.broker_url,
            data_dir=conf.broker_data_dir,
            transport_options=kwargs.pop("transport_options", None)
            or conf.broker_transport_options,
            connect_timeout=kwargs.pop("connect_timeout", conf.broker_connection_timeout),
        )

    @cached_property
    def events(self) -> AppEvents:
        return AppEvents(self)

    @cached_property
    def control(self) -> Any:
        from .control import Control

        return Control(self)


class AppEvents:
    """``app.events``: the event classes bound to this app (Celery's shape)."""

    def __init__(self, app: App) -> None:
        self.app = app

    def Dispatcher(self, connection: Connection | None = None, hostname: str | None = None,
                   enabled: bool = True, channel: Any = None, buffer_while_offline: bool = True,
                   app: App | None = None, serializer: str | None = None,
                   groups: Any = None, delivery_mode: int = 1, buffer_group: Any = None,
                   buffer_limit: int = 24, on_send_buffered: Any = None,
                   **kwargs: Any) -> EventDispatcher:
        from .events.dispatcher import EventDispatcher

        return EventDispatcher(
            connection, hostname=hostname, enabled=enabled, channel=channel,
            buffer_while_offline=buffer_while_offline, app=app or self.app,
            serializer=serializer, groups=groups, delivery_mode=delivery_mode,
            buffer_group=buffer_group, buffer_limit=buffer_limit,
            on_send_buffered=on_send_buffered, **kwargs,
        )

    def Receiver(self, channel: Any, handlers: dict | None = None, routing_key: str = "#",
                 node_id: str | None = None, app: App | None = None,
                 queue_prefix: str | None = None, accept: Any = None,
                 queue_ttl: float | None = None, queue_expires: float | None = None,
                 **kwargs: Any) -> EventReceiver:
        from .events.receiver import EventReceiver

        return EventReceiver(
            channel, handlers=handlers, routing_key=routing_key, node_id=node_id,
            app=app or self.app, queue_prefix=queue_prefix, accept=accept,
            queue_ttl=queue_ttl, queue_expires=queue_expires, **kwargs,
        )

    def State(self, *args: Any, **kwargs: Any) -> State:
        from .events.state import State

        return State(*args, **kwargs)


_default_app: App | None = None


def default_app() -> App:
    """The app used when a class is built without one (configured from the environment)."""
    global _default_app
    if _default_app is None:
        _default_app = App("default")
    return _default_app
