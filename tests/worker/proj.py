"""Tasks for the worker tests (configured from TIDINGS_* environment variables)."""

import time

from tidings import App
from tidings.exceptions import SoftTimeLimitExceeded
from tidings.task import Reject

app = App("proj")


@app.task(name="proj.add")
def add(x, y):
    return x + y


@app.task(name="proj.fail")
def fail(x):
    raise ValueError(f"intentional failure for x={x!r}")


@app.task(name="proj.retry_once", bind=True, max_retries=3)
def retry_once(self, x):
    if self.request.retries == 0:
        raise self.retry(exc=RuntimeError("transient error, will retry"), countdown=0.5)
    return x * 2


@app.task(name="proj.reject_me", acks_late=True)
def reject_me(reason):
    raise Reject(reason, requeue=False)


@app.task(name="proj.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(name="proj.spawn", bind=True)
def spawn(self, depth):
    if depth > 0:
        spawn.apply_async((depth - 1,))
    return depth


@app.task(name="proj.noop")
def noop():
    return None


@app.task(name="proj.divide")
def divide(x, y):
    return x / y


@app.task(name="proj.busy")
def busy(seconds):
    """Sleeps in short steps, so a soft limit reaches it in every pool."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return seconds


@app.task(name="proj.cleanup_on_soft_limit", soft_time_limit=0.5)
def cleanup_on_soft_limit(seconds, celerys_class=False):
    """Catches the soft limit and says so (Celery's pattern); ``celerys_class``: catches
    ``celery.exceptions.SoftTimeLimitExceeded``, as a task written for Celery does."""
    caught = SoftTimeLimitExceeded
    if celerys_class:
        from celery.exceptions import SoftTimeLimitExceeded as caught
    try:
        busy(seconds)
    except caught:
        return "caught Celery's class" if celerys_class else "cleaned up"
    return "finished"


@app.task(name="proj.limited", rate_limit="5/s")
def limited(i):
    return i

