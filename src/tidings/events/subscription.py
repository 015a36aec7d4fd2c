"""How a receiver takes its events: a queue of its own, a named durable queue, or a stream.

Celery's receivers (and ours by default) read from a transient queue that
lives only as long as the receiver: what is published while no monitor runs
is gone, and a burst can outrun the queue's message TTL.  Two more ways,
both on RabbitMQ, both ours:

* ``--queue NAME``: a durable queue that outlives the monitor.  Events are
  acknowledged only once applied, so a monitor killed with SIGKILL and
  started again with the same name continues where it stopped; what it had
  received but not acknowledged comes again (State applies an event twice
  to the same result).
* ``--stream NAME``: a RabbitMQ stream, an append-only log bound to the event
  exchange that any number of monitors read, each from an offset of its own
  (``--from first|last|next|<ISO time>|-1h|<offset>``), without consuming it.
  Bounded by ``--stream-retention`` and ``--stream-max-bytes`` (the camera
  already has a ``--retention`` of its own).  A reconnecting reader resumes
  after the last offset it applied, not at ``--from`` again.

Redis has neither: there kombu broadcasts events with PUB/SUB, which keeps
nothing for a subscriber that is away (the loss is counted, see
:mod:`tidings.events.loss`).
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, replace

from ..config import ImproperlyConfigured

__all__ = ["DURABLE_DRIVERS", "PREFETCH", "Subscription", "parse_offset", "parse_size"]

#: Transports with durable queues bound to the event exchange and with streams.
DURABLE_DRIVERS = frozenset({"amqp"})
#: Unacknowledged events a durable reader holds at most (basic.qos): enough to
#: keep the socket busy, few enough that a restart replays little.
PREFETCH = 2000

_NAMED_OFFSETS = ("first", "last", "next")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZES = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_offset(text: str, now: _dt.datetime | None = None) -> str | int | _dt.datetime:
    """``--from``: ``first``, ``last``, ``next``, an offset, an ISO time, or ``-1h``."""
    value = text.strip().lower()
    if value in _NAMED_OFFSETS:
        return value
    if re.fullmatch(r"\d+", value):
        return int(value)
    match = re.fullmatch(r"-(\d+(?:\.\d+)?)([smhdw])", value)
    if match:
        now = now or _dt.datetime.now(_dt.timezone.utc)
        return now - _dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        when = _dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"invalid stream offset {text!r}: use first, last, next, an offset "
                         "number, an ISO time (2026-12-01T08:00) or -30m, -1h, -2d") from None
    return when if when.tzinfo else when.astimezone()  # naive: local time


def parse_size(text: str | int) -> int:
    """``5GB``, ``500MiB``, ``1000000`` -> bytes."""
    if isinstance(text, int):
        size = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", str(text).lower())
        if not match or match.group(2) not in _SIZES:
            raise ValueError(f"invalid size {text!r} (e.g. 500MB, 5GB, 2GiB)")
        size = int(float(match.group(1)) * _SIZES[match.group(2)])
    if size <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return size


@dataclass(frozen=True)
class Subscription:
    """Where a receiver reads: nothing set is Celery's transient queue.

    ``queue``: a durable queue's name; ``stream``: a stream's name, read from
    ``offset`` (:func:`parse_offset`), bounded by ``max_age`` (seconds) and
    ``max_bytes``.
    """

    queue: str | None = None
    stream: str | None = None
    offset: str | int | _dt.datetime = "next"
    max_age: float | None = None
    max_bytes: int | None = None
    prefetch: int = PREFETCH

    def __post_init__(self) -> None:
        if self.queue and self.stream:
            raise ImproperlyConfigured("--queue and --stream cannot both be given: a "
                                       "receiver reads from one of them")
        if not self.stream and (self.max_age or self.max_bytes):
            raise ImproperlyConfigured(
                "--stream-retention and --stream-max-bytes apply only with --stream")

    @property
    def durable(self) -> bool:
        """Whether events wait on the broker for this receiver (and are acknowledged)."""
        return bool(self.queue or self.stream)

    @property
    def label(self) -> str:
        if self.stream:
            return f"stream {self.stream}"
        return f"queue {self.queue}" if self.queue else "a transient queue"

    def check(self, driver_type: str) -> None:
        """Refuse, in one line, what the broker cannot do."""
        if self.durable and driver_type not in DURABLE_DRIVERS:
            raise ImproperlyConfigured(
                f"--queue and --stream need RabbitMQ: on {driver_type} events are "
                "broadcast (PUB/SUB) and nothing is kept for a receiver that is away; "
                "Tidings counts what is lost there (see docs/loss.md)")

    def after(self, offset: int) -> Subscription:
        """The same stream, resumed after ``offset`` (a reconnecting reader)."""
        return replace(self, offset=offset + 1)

    @property
    def max_age_argument(self) -> str | None:
        """``x-max-age`` in RabbitMQ's notation (whole seconds)."""
        return f"{max(int(self.max_age), 1)}s" if self.max_age else None
