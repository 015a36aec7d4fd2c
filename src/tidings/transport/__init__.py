"""Talking to brokers: connections, the Celery topology, the embedded broker, reconnecting.

* :mod:`.connection` — connections from URLs and settings, the embedded
  broker's folder, URLs with passwords hidden, the socket a consumer may
  wait for (``waitable_fd``);
* :mod:`.topology` — the event exchange, receiver and task queues, and the
  remote-control mailbox, declared as Celery 5.7 declares them;
* :mod:`.embedded` — the embedded default broker (kombu's filesystem
  transport plus message TTL and queue expiry);
* :mod:`.publish`, :mod:`.publish_redis` — events published as prepared
  frames (RabbitMQ) and commands (Redis), kombu's path where they do not apply;
* :mod:`.buffered`, :mod:`.redis_read` — consumers' connections: RabbitMQ's
  socket read in large chunks, Redis's PUB/SUB envelopes handed to a receiver;
* :mod:`.reconnect` — the one reconnect loop and its typed status.
"""

from .connection import (
    EMBEDDED_SCHEME,
    connection_for,
    connection_from_settings,
    default_data_dir,
    embedded_folder,
    is_embedded,
    redact_url,
    waitable_fd,
)
from .embedded import EmbeddedChannel, EmbeddedTransport
from .publish import publish_prepared
from .reconnect import (
    FIRST_CONNECT_RETRIES,
    Backoff,
    Link,
    Reconnector,
    Status,
    first_connect_retries,
)
from .topology import (
    DEAD_LETTER_DRIVERS,
    FANOUT_DRIVERS,
    Declarations,
    control_mailbox,
    dead_letter_queue,
    event_queue,
    event_stream,
    get_exchange,
    named_event_queue,
    task_queue,
)

__all__ = [
    "DEAD_LETTER_DRIVERS",
    "EMBEDDED_SCHEME",
    "FANOUT_DRIVERS",
    "FIRST_CONNECT_RETRIES",
    "Backoff",
    "Declarations",
    "EmbeddedChannel",
    "EmbeddedTransport",
    "Link",
    "Reconnector",
    "Status",
    "connection_for",
    "connection_from_settings",
    "control_mailbox",
    "dead_letter_queue",
    "default_data_dir",
    "embedded_folder",
    "event_queue",
    "event_stream",
    "first_connect_retries",
    "get_exchange",
    "is_embedded",
    "named_event_queue",
    "publish_prepared",
    "redact_url",
    "task_queue",
    "waitable_fd",
]
