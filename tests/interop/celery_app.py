"""A small Celery 5.7 project used by the interop tests (configured from the environment)."""

import os

from celery import Celery

from tests.interop.tasks import register_all

app = Celery("interop", broker=os.environ.get("INTEROP_BROKER", "amqp://guest:guest@127.0.0.1//"))
app.conf.update(
    event_exchange=os.environ.get("INTEROP_EVENT_EXCHANGE", "celeryev"),
    control_exchange=os.environ.get("INTEROP_CONTROL_EXCHANGE", "celery"),
    task_default_queue=os.environ.get("INTEROP_QUEUE", "celery"),
    task_send_sent_event=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)

tasks = register_all(app)
