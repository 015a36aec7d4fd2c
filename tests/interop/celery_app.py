"""A small Celery 5.7 project used by the interop tests (configured from the environment)."""

import os

from celery import Celery

app = Celery("interop", broker=os.environ.get("INTEROP_BROKER", "amqp://guest:guest@127.0.0.1//"))
app.conf.update(
    event_exchange=os.environ.get("INTEROP_EVENT_EXCHANGE", "celeryev"),
    control_exchange=os.environ.get("INTEROP_CONTROL_EXCHANGE", "celery"),
    task_default_queue=os.environ.get("INTEROP_QUEUE", "celery"),
    task_send_sent_event=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="interop.add")
def add(x, y):
    return x + y


@app.task(name="interop.fail")
def fail(x):
    raise ValueError(f"intentional failure for x={x!r}")


@app.task(name="interop.noop")
def noop():
    return None


@app.task(name="interop.divide")
def divide(x, y):
    return x / y


@app.task(name="interop.retry_once", bind=True, max_retries=3)
def retry_once(self, x):
    if self.request.retries == 0:
        raise self.retry(exc=RuntimeError("transient"), countdown=0.5)
    return x


@app.task(name="interop.sleep")
def sleep(seconds):
    import time

    time.sleep(seconds)
    return seconds
