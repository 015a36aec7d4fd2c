"""``--queue``, ``--stream`` and their options: the same on every consuming command.

``tidings events``, ``tidings web`` and ``tidings exporter`` take them, and
:func:`subscription_from` turns them into a
:class:`~tidings.events.subscription.Subscription`, refusing in one line what
the broker cannot do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..cameras import parse_duration
from ..config import ImproperlyConfigured
from ..events.subscription import Subscription, parse_offset, parse_size
from .common import CommandError

__all__ = ["subscription_from", "subscription_options"]


def subscription_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--queue``, ``--stream``, ``--from``, ``--stream-retention``, ``--stream-max-bytes``."""
    for option in reversed((
        click.option("--queue", "durable_queue", metavar="NAME", envvar="TIDINGS_EVENTS_QUEUE",
                     help="RabbitMQ: read events from this durable queue, which keeps them "
                          "while the monitor is down (acknowledged once applied)."),
        click.option("--stream", metavar="NAME", envvar="TIDINGS_EVENTS_STREAM",
                     help="RabbitMQ: read events from this stream (declared if missing); any "
                          "number of monitors read it, each from --from."),
        click.option("--from", "offset", default="next", show_default=True, metavar="WHERE",
                     help="--stream: first, last, next, an offset, an ISO time or -1h."),
        click.option("--stream-retention", metavar="DURATION",
                     help="--stream: keep events this long (e.g. 24h, 7d)."),
        click.option("--stream-max-bytes", metavar="SIZE",
                     help="--stream: keep at most this much (e.g. 5GB)."),
    )):
        command = option(command)
    return command


def subscription_from(app: Any, durable_queue: str | None, stream: str | None, offset: str,
                      stream_retention: str | None, stream_max_bytes: str | None
                      ) -> Subscription:
    """The subscription the options ask for, checked against the app's broker."""
    try:
        sub = Subscription(
            queue=durable_queue or None, stream=stream or None,
            offset=parse_offset(offset),
            max_age=parse_duration(stream_retention) if stream_retention else None,
            max_bytes=parse_size(stream_max_bytes) if stream_max_bytes else None)
        if sub.durable:
            sub.check(app.connection_for_read().transport.driver_type)
    except (ValueError, ImproperlyConfigured) as exc:
        raise CommandError(str(exc)) from None
    if offset != "next" and not sub.stream:
        raise CommandError("--from applies only with --stream")
    return sub
