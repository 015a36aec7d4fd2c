"""Settings, with Celery's names and Celery 5.7's defaults.

Keeping Celery's names means a Celery project's configuration means the same
thing to Tidings, and a Celery user's knowledge carries over.  Every setting
can also come from the environment as ``TIDINGS_<NAME>``; values given in
code win over the environment, and the environment wins over the defaults.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .protocol.control import parse_rate

ENV_PREFIX = "TIDINGS_"


class ImproperlyConfigured(ValueError):
    """A setting has a value Tidings cannot use; the message names the setting."""


_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("expected a boolean (true/false, yes/no, 1/0)")


def _to_opt_float(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if isinstance(value, bool):
        raise ValueError("expected a number of seconds")
    result = float(value)
    if result < 0:
        raise ValueError("must not be negative")
    return result


def _to_pos_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a positive integer")
    result = int(value)
    if result <= 0:
        raise ValueError("expected a positive integer")
    return result


def _to_opt_rate(value: Any) -> str | None:
    if value is None or value == "":
        return None
    parse_rate(value)  # raises ValueError for a string that is not a rate
    return str(value)


def _to_opt_int(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    result = int(value)
    if result < 0:
        raise ValueError("must not be negative")
    return result


def _to_str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def _to_opt_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _to_str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple | set | frozenset) or not all(
        isinstance(v, str) for v in value
    ):
        raise ValueError("expected a list of strings")
    return list(value)


def _to_dict(value: Any) -> dict:
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else {}
    if not isinstance(value, Mapping):
        raise ValueError("expected a mapping (JSON object in the environment)")
    return dict(value)


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[Any], Any]
    doc: str

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("broker_url", None, _to_opt_str,
                "Broker URL (amqp://, redis://, filesystem://). None: the embedded broker."),
        Setting("broker_data_dir", None, _to_opt_str,
                "Folder of the embedded (filesystem) broker; default: per-user data dir."),
        Setting("broker_transport_options", {}, _to_dict, "Extra kombu transport options."),
        Setting("broker_connection_timeout", 4.0, _to_opt_float,
                "Seconds to wait for the broker when connecting."),
        Setting("broker_connection_retry_on_startup", True, _to_bool,
                "Workers, dumps and cameras wait for a broker that is not up yet "
                "(off: they stop with status 69 after about 2 s)."),
        Setting("broker_connection_max_retries", 100, _to_opt_int,
                "Attempts at the first connection (0 or None: forever)."),
        Setting("event_exchange", "celeryev", _to_str, "Name of the event exchange."),
        Setting("event_queue_prefix", "celeryev", _to_str, "Prefix of receiver queue names."),
        Setting("event_queue_ttl", 5.0, _to_opt_float,
                "Seconds an event waits in a receiver queue (x-message-ttl)."),
        Setting("event_queue_expires", 60.0, _to_opt_float,
                "Seconds an unused receiver queue lives (x-expires)."),
        Setting("event_queue_exclusive", True, _to_bool, "Receiver queues are exclusive."),
        Setting("event_queue_durable", False, _to_bool, "Receiver queues are durable."),
        Setting("event_queue_dead_letter", True, _to_bool,
                "RabbitMQ: receiver queues dead-letter what they drop, so it is counted "
                "as lost (ours)."),
        Setting("event_queue_max_length", None, _to_opt_int,
                "Events a receiver queue holds at most (x-max-length; the oldest go, "
                "counted as lost; ours)."),
        Setting("event_queue_max_length_bytes", None, _to_opt_int,
                "Bytes a receiver queue holds at most (x-max-length-bytes; ours)."),
        Setting("event_serializer", "json", _to_str, "Serializer of published events."),
        Setting("event_outbound_buffer_limit", 10_000, _to_pos_int,
                "Events a dispatcher keeps while the broker is unreachable (oldest dropped)."),
        Setting("worker_send_task_events", False, _to_bool, "Workers send task events (-E)."),
        Setting("worker_events_confirm", False, _to_bool,
                "RabbitMQ: workers publish events persistent and wait for the broker's "
                "confirmation, so a durable queue or a stream survives a broker restart "
                "(--events-confirm; ours)."),
        Setting("task_send_sent_event", False, _to_bool, "Clients send task-sent events."),
        Setting("task_sent_event_max_delay", 0.0, _to_opt_float,
                "Seconds a client's task-sent event may wait to be batched with others "
                "(0: each at once, on the task's channel, as Celery; ours)."),
        Setting("task_default_queue", "celery", _to_str, "Queue of tasks sent without one."),
        Setting("task_time_limit", None, _to_opt_float,
                "Hard time limit of tasks, seconds (prefork: the child is killed)."),
        Setting("task_soft_time_limit", None, _to_opt_float,
                "Soft time limit of tasks, seconds (SoftTimeLimitExceeded is raised)."),
        Setting("task_default_rate_limit", None, _to_opt_rate,
                "Rate limit of tasks that set none, e.g. '10/s' (None: no limit)."),
        Setting("worker_disable_rate_limits", False, _to_bool,
                "Workers ignore every rate limit."),
        Setting("worker_pool_restarts", False, _to_bool,
                "Workers obey the pool_restart remote-control command."),
        Setting("accept_content", ["json"], _to_str_list, "Content types consumers accept."),
        Setting("task_serializer", "json", _to_str, "Serializer of task and control messages."),
        Setting("control_exchange", "celery", _to_str, "Remote-control exchange prefix."),
        Setting("control_queue_ttl", 300.0, _to_opt_float, "TTL of remote-control messages."),
        Setting("control_queue_expires", 10.0, _to_opt_float, "Expiry of control queues."),
        Setting("control_queue_exclusive", True, _to_bool, "Control queues are exclusive."),
        Setting("control_queue_durable", False, _to_bool, "Control queues are durable."),
    )
}


class Settings(dict):
    """``app.conf``: a dict of settings readable as attributes.

    Values are validated when they are set, so a bad value fails where it is
    given, with the setting's name, instead of later inside a connection.
    Unknown names are kept (a Celery configuration has many more settings),
    but are not validated.
    """

    def __init__(
        self, explicit: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> None:
        super().__init__()
        env = os.environ if environ is None else environ
        for name, setting in SETTINGS.items():
            dict.__setitem__(self, name, _copy_default(setting.default))
            if setting.env_var in env:
                self._set_checked(name, env[setting.env_var], source=setting.env_var)
        for name, value in (explicit or {}).items():
            self._set_checked(name, value, source=name)

    def _set_checked(self, name: str, value: Any, source: str) -> None:
        setting = SETTINGS.get(name)
        if setting is not None:
            try:
                value = setting.parse(value)
            except (TypeError, ValueError) as exc:
                raise ImproperlyConfigured(
                    f"invalid value for setting {name!r} (from {source}): {value!r}: {exc}"
                ) from None
        dict.__setitem__(self, name, value)

    def __setitem__(self, name: str, value: Any) -> None:
        self._set_checked(name, value, source=name)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for name, value in dict(*args, **kwargs).items():
            self[name] = value

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def table(self) -> Iterator[tuple[str, Any]]:
        """The known settings and their current values, in declaration order."""
        for name in SETTINGS:
            yield name, self[name]


def _copy_default(value: Any) -> Any:
    if isinstance(value, list | dict):
        return type(value)(value)
    return value


_default_settings: Settings | None = None


def default_settings() -> Settings:
    """The process's settings when no app is given: the environment's, read once."""
    global _default_settings
    if _default_settings is None:
        _default_settings = Settings()
    return _default_settings
