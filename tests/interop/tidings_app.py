"""The interop project's tasks on a Tidings app: same names and bodies as ``celery_app``.

A Tidings worker runs this module and a Celery worker runs ``celery_app``,
so the interop tests can ask both the same questions and compare replies.
Configured from the ``TIDINGS_*`` environment.
"""

import time

from tidings import App

app = App("interop")


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
    time.sleep(seconds)
    return seconds
