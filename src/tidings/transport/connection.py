"""Broker connections from URLs and settings, the embedded broker's folder, safe URLs,
and the socket a consumer may wait for."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from amqp.transport import TCPTransport
from kombu import Connection

from .buffered import BufferedAMQPTransport
from .embedded import EmbeddedTransport

__all__ = [
    "AMQP_SCHEMES",
    "EMBEDDED_POLL_INTERVAL",
    "EMBEDDED_SCHEME",
    "REDIS_READ_SCHEMES",
    "connection_for",
    "connection_from_settings",
    "default_data_dir",
    "embedded_folder",
    "is_embedded",
    "redact_url",
    "waitable_fd",
]

EMBEDDED_SCHEME = "filesystem"
#: URL schemes of kombu's py-amqp transport, the one :mod:`.buffered` reads for.
AMQP_SCHEMES = frozenset({"amqp", "pyamqp"})
#: URL schemes of kombu's plain Redis transport, the one :mod:`.redis_read` extends
#: (TLS and Sentinel keep kombu's).
REDIS_READ_SCHEMES = frozenset({"redis"})

#: Seconds between polls of the embedded broker's folder by a consumer.
EMBEDDED_POLL_INTERVAL = 0.05


def default_data_dir() -> Path:
    """The embedded broker's folder: ``$XDG_DATA_HOME/tidings/broker``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "share")
    return Path(base) / "tidings" / "broker"


def redact_url(url: str | None) -> str:
    """``url`` with any password replaced by ``***``, for logs and screens."""
    if not url:
        return f"{EMBEDDED_SCHEME}:// (embedded)"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))


def is_embedded(url: str | None) -> bool:
    return not url or url.split("://", 1)[0] == EMBEDDED_SCHEME


def embedded_folder(url: str | None, data_dir: str | None) -> Path:
    """Folder of the embedded broker: ``filesystem:///path``, the setting, or the default."""
    if url and "://" in url:
        path = url.split("://", 1)[1]
        if path and path != "/":
            return Path(path)
    return Path(data_dir) if data_dir else default_data_dir()


def connection_for(
    url: str | None,
    *,
    data_dir: str | None = None,
    transport_options: dict[str, Any] | None = None,
    connect_timeout: float | None = 4.0,
    buffered_reads: bool = False,
) -> Connection:
    """A kombu ``Connection`` (not yet connected) for ``url``, embedded broker included.

    ``buffered_reads``: on RabbitMQ over plain TCP, read the socket in large
    chunks (:mod:`.buffered`); on Redis, let a receiver take PUB/SUB messages
    as decoded envelopes (:mod:`.redis_read`); for consumers that read with
    ``drain_events``.
    """
    options = dict(transport_options or {})
    if is_embedded(url):
        folder = embedded_folder(url, data_dir)
        for sub in ("data", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        options.setdefault("data_folder_in", str(folder / "data"))
        options.setdefault("data_folder_out", str(folder / "data"))
        options.setdefault("control_folder", str(folder / "control"))
        options.setdefault("polling_interval", EMBEDDED_POLL_INTERVAL)
        return Connection(
            f"{EMBEDDED_SCHEME}://localhost/",
            transport=EmbeddedTransport,
            transport_options=options,
            connect_timeout=connect_timeout,
        )
    scheme = url.split("://", 1)[0]
    if buffered_reads and scheme in AMQP_SCHEMES:
        return Connection(url, transport=BufferedAMQPTransport, transport_options=options,
                          connect_timeout=connect_timeout)
    if buffered_reads and scheme in REDIS_READ_SCHEMES:
        from .redis_read import RedisReadTransport  # kombu's Redis transport: on demand

        return Connection(url, transport=RedisReadTransport, transport_options=options,
                          connect_timeout=connect_timeout)
    return Connection(url, transport_options=options, connect_timeout=connect_timeout)


def connection_from_settings(conf: Any, url: str | None = None, **kwargs: Any) -> Connection:
    """A new (lazy) connection as the settings ``conf`` describe it (``url`` overrides)."""
    return connection_for(
        url or conf.broker_url,
        data_dir=conf.broker_data_dir,
        transport_options=kwargs.pop("transport_options", None)
        or conf.broker_transport_options,
        connect_timeout=kwargs.pop("connect_timeout", conf.broker_connection_timeout),
        buffered_reads=kwargs.pop("buffered_reads", False),
    )


def waitable_fd(conn: Any) -> int | None:
    """The descriptor of a connected kombu connection's broker socket, where its
    being readable tells that a message is there; else ``None``.

    That holds for py-amqp over plain TCP, which reads no further ahead than
    the frame it needs.  Not over TLS (decrypted data may wait in the TLS
    layer with the socket quiet), nor for :mod:`.buffered` connections
    (bytes already read are in the buffer), nor on Redis and other kombu
    transports (kombu polls sockets of its own).
    """
    transport = getattr(conn.connection, "transport", None)
    if type(transport) is not TCPTransport or transport.sock is None:
        return None
    return transport.sock.fileno()
