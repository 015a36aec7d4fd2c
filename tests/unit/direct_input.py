"""Every kind of event input, published the same way for the receivers' oracle tests.

A receiver that takes its messages directly (RabbitMQ deliveries, Redis
envelopes) must end with what a receiver on kombu's path ends with; these
are the messages both read.  And what those paths tell their read pacer,
recorded (:func:`record_pacer`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kombu import Producer

from tidings.events import EventDispatcher
from tidings.protocol.loss import SENDER_HEADER, SEQUENCE_HEADER
from tidings.transport import get_exchange


def publish_everything(app: Any, url: str,
                       extra: Callable[[Any, Any], int] | None = None) -> tuple[int, int]:
    """Every kind of input, in order; returns (valid events sent, messages sent).

    ``extra(connection, exchange)`` publishes what only one broker can carry
    (after the rest of ours, before Celery's) and returns its message count.
    """
    from celery import Celery

    messages = 0
    with app.connection_for_write() as conn:
        d = EventDispatcher(conn, hostname="ours@it", app=app, buffer_group=["task"],
                            buffer_limit=4)
        d.send("worker-online", freq=2.0, active=0, processed=0)
        for n in range(8):
            d.send("task-received", uuid=f"t{n}", name="proj.add", args="()", kwargs="{}")
        d.flush()
        messages += 1 + 2
        exchange = get_exchange(conn, app.conf.event_exchange)
        producer = Producer(conn.default_channel, exchange=exchange, auto_declare=False)
        for body, content_type, encoding in (
            ("not json", "application/json", "utf-8"),  # not-json
            ("[1, 2]", "application/json", "utf-8"),  # a batch of non-events
            ("hello", "text/plain", "utf-8"),  # not accepted
            (json.dumps({"type": "worker-heartbeat", "hostname": "l1@it", "clock": 3,
                         "timestamp": 1.0}), "application/json", "latin-1"),  # kombu's decoder
        ):
            producer.publish(body, routing_key="worker.heartbeat", content_type=content_type,
                             content_encoding=encoding)
            messages += 1
        for seq in (0, 5):  # a sender that skips four events
            producer.publish(json.dumps({"type": "worker-heartbeat", "hostname": "gap@it",
                                         "clock": 10 + seq, "timestamp": 2.0 + seq}),
                             routing_key="worker.heartbeat", content_type="application/json",
                             content_encoding="utf-8",
                             headers={SENDER_HEADER: "gap@it/1", SEQUENCE_HEADER: seq})
            messages += 1
        # headers only the general decoders read (a float, a table, a list), and a
        # body of several AMQP frames (past RabbitMQ's frame_max of 128 KiB)
        big = [{"type": "task-received", "uuid": f"big{n}", "hostname": "big@it",
                "clock": 100 + n, "timestamp": 3.0, "args": "x" * 2000} for n in range(90)]
        producer.publish(json.dumps(big), routing_key="task.multi",
                         content_type="application/json", content_encoding="utf-8",
                         headers={"hostname": "big@it", "ratio": 0.5, "meta": {"a": 1},
                                  "list": [1, "b"]})
        messages += 1
        if extra is not None:
            messages += extra(conn, exchange)
    celery = Celery("interop", broker=url, set_as_current=False)
    celery.conf.event_exchange = app.conf.event_exchange
    with celery.connection_for_write() as conn:
        theirs = celery.events.Dispatcher(conn, hostname="theirs@it")
        theirs.send("worker-heartbeat", freq=2.0, active=0, processed=1)
        theirs.send("task-succeeded", uuid="c1", result="3", runtime=0.01)
        messages += 2
    return 1 + 8 + 1 + 2 + 90 + 2, messages


def record_pacer(monkeypatch: Any, module: Any) -> list[tuple[int, int]]:
    """The ``(messages, nbytes)`` each read pacer made by ``module`` is told, from now on."""
    from tidings.transport.pacing import ReadPacer

    told: list[tuple[int, int]] = []

    class Recording(ReadPacer):
        def took(self, messages: int, nbytes: int) -> None:
            told.append((messages, nbytes))
            super().took(messages, nbytes)

    monkeypatch.setattr(module, "ReadPacer", Recording)
    return told
