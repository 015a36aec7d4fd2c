"""The application object: configuration, clock and connections in one place."""

from __future__ import annotations

import importlib
import os
import sys
from functools import cached_property
from typing import Any

from kombu import Connection
from kombu.clocks import LamportClock

from .config import Settings, default_settings
from .control import Control
from .events.dispatcher import EventDispatcher
from .events.receiver import EventReceiver
from .events.state import State
from .protocol.clock import default_clock
from .protocol.events import BUFFER_LIMIT, DELIVERY_MODE
from .task import Publisher, send_task, task_decorator
from .transport import connection_from_settings, redact_url
from .utils.nodenames import anon_nodename

__all__ = ["App", "AppEvents", "AppLoadError", "anon_nodename", "app_from_celery",
           "default_app", "is_celery_app", "load_app"]


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
        #: Registered tasks by name.
        self.tasks: dict[str, Any] = {}

    def task(self, *args: Any, **options: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(name=..., bind=True)``.

        Options: ``name``, ``bind``, ``max_retries``, ``default_retry_delay``,
        ``acks_late``, ``ignore_result``, ``queue``.
        """
        return task_decorator(self, *args, **options)

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any
                  ) -> Any:
        """Publish a task by name (it need not be registered here)."""
        return send_task(self, name, args, kwargs, **options)

    @cached_property
    def publisher(self) -> Publisher:
        return Publisher(self)

    def __repr__(self) -> str:
        return f"<App {self.main or '__main__'} broker={redact_url(self.conf.broker_url)}>"

    def connection_for_write(self, url: str | None = None, **kwargs: Any) -> Connection:
        """A new (lazy) connection for publishing."""
        return self._connection(url, **kwargs)

    def connection_for_read(self, url: str | None = None, **kwargs: Any) -> Connection:
        """A new (lazy) connection for consuming with ``drain_events``.

        On RabbitMQ it reads the socket in large chunks (see
        :mod:`tidings.transport.buffered`): not for kombu's event loop.  On
        Redis a receiver takes its PUB/SUB messages as decoded envelopes (see
        :mod:`tidings.transport.redis_read`).
        """
        kwargs.setdefault("buffered_reads", True)
        return self._connection(url, **kwargs)

    def _connection(self, url: str | None = None, **kwargs: Any) -> Connection:
        return connection_from_settings(self.conf, url, **kwargs)

    @cached_property
    def events(self) -> AppEvents:
        return AppEvents(self)

    @cached_property
    def control(self) -> Control:
        return Control(self)


class AppEvents:
    """``app.events``: the event classes bound to this app (Celery's shape)."""

    def __init__(self, app: App) -> None:
        self.app = app

    def Dispatcher(self, connection: Connection | None = None, hostname: str | None = None,
                   enabled: bool = True, channel: Any = None, buffer_while_offline: bool = True,
                   app: App | None = None, serializer: str | None = None,
                   groups: Any = None, delivery_mode: int = DELIVERY_MODE,
                   buffer_group: Any = None, buffer_limit: int = BUFFER_LIMIT,
                   on_send_buffered: Any = None, **kwargs: Any) -> EventDispatcher:
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
        return EventReceiver(
            channel, handlers=handlers, routing_key=routing_key, node_id=node_id,
            app=app or self.app, queue_prefix=queue_prefix, accept=accept,
            queue_ttl=queue_ttl, queue_expires=queue_expires, **kwargs,
        )

    def State(self, *args: Any, **kwargs: Any) -> State:
        return State(*args, **kwargs)


_default_app: App | None = None


def default_app() -> App:
    """The app of code that names none: configured from the environment.

    It shares its settings and Lamport clock with the dispatchers and
    receivers made without an app.
    """
    global _default_app
    if _default_app is None:
        app = App("default")
        app.conf = default_settings()
        app.clock = default_clock()
        _default_app = app
    return _default_app


class AppLoadError(ImportError):
    """``-A`` named something that is not an app; the message says what went wrong."""


#: Settings a Celery app's configuration supplies when Tidings watches its cluster.
CELERY_SHARED_SETTINGS = (
    "event_exchange", "event_queue_prefix", "event_queue_ttl", "event_queue_expires",
    "event_queue_exclusive", "event_queue_durable", "event_serializer",
    "worker_send_task_events", "task_send_sent_event", "accept_content", "task_serializer",
    "control_exchange", "control_queue_ttl", "control_queue_expires",
    "control_queue_exclusive", "control_queue_durable", "broker_transport_options",
    "broker_connection_timeout",
)


def is_celery_app(obj: Any) -> bool:
    """Duck-typed, so that Celery is never imported by Tidings itself."""
    return (type(obj).__module__.split(".")[0] == "celery" and hasattr(obj, "conf")
            and hasattr(obj, "connection_for_read"))


def app_from_celery(celery_app: Any) -> App:
    """A Tidings App that talks to the same broker and exchanges as ``celery_app``."""
    conf = celery_app.conf
    settings: dict[str, Any] = {}
    for name in CELERY_SHARED_SETTINGS:
        value = conf.get(name)
        if value is not None:
            settings[name] = list(value) if name == "accept_content" else value
    broker = conf.get("broker_url") or conf.get("broker_read_url")
    if not broker:
        broker = celery_app.connection_for_read().as_uri(include_password=True)
    return App(getattr(celery_app, "main", None), broker=broker, **settings)


def load_app(spec: str) -> App:
    """``module`` or ``module:attribute`` -> a Tidings App (a Celery app is converted).

    With only a module, its ``app`` or ``celery`` attribute is used, else the
    one App (or Celery app) it defines.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise AppLoadError(f"invalid app {spec!r}: expected module or module:attribute")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppLoadError(f"cannot import {module_name!r}: no module named {exc.name!r}"
                               ) from None
        raise AppLoadError(f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise AppLoadError(f"importing {module_name!r} failed: {exc!r}") from exc
    if attribute:
        obj: Any = module
        for part in attribute.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise AppLoadError(f"module {module_name!r} has no attribute {attribute!r}"
                                   ) from None
    else:
        candidates = [getattr(module, n) for n in ("app", "celery") if hasattr(module, n)]
        candidates = [c for c in candidates if isinstance(c, App) or is_celery_app(c)]
        if not candidates:
            candidates = [v for v in vars(module).values()
                          if isinstance(v, App) or is_celery_app(v)]
        if not candidates:
            raise AppLoadError(f"module {module_name!r} defines no Tidings or Celery app "
                               f"(name it: -A {module_name}:attribute)")
        obj = candidates[0]
    if isinstance(obj, App):
        return obj
    if is_celery_app(obj):
        return app_from_celery(obj)
    raise AppLoadError(f"{spec!r} is a {type(obj).__name__}, not a Tidings App or Celery app")
