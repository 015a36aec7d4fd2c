"""The interop project's task bodies, registered by both ``celery_app`` and ``tidings_app``.

One copy of each body, so a Celery worker and a Tidings worker run the very
same code under the same names.
"""

import time

TASKS = {}


def task(name, **options):
    def register(fun):
        TASKS[name] = (fun, options)
        return fun
    return register


@task("interop.add")
def add(x, y):
    return x + y


@task("interop.fail")
def fail(x):
    raise ValueError(f"intentional failure for x={x!r}")


@task("interop.noop")
def noop():
    return None


@task("interop.divide")
def divide(x, y):
    return x / y


@task("interop.retry_once", bind=True, max_retries=3)
def retry_once(self, x):
    if self.request.retries == 0:
        raise self.retry(exc=RuntimeError("transient"), countdown=0.5)
    return x


@task("interop.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


def register_all(app):
    """Register every task on ``app`` (a Celery or a Tidings app); returns them by name."""
    return {name: app.task(name=name, **options)(fun)
            for name, (fun, options) in TASKS.items()}
