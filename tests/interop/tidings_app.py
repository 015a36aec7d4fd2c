"""The interop project's tasks on a Tidings app: the same bodies and names as ``celery_app``.

A Tidings worker runs this module and a Celery worker runs ``celery_app``,
so the interop tests can ask both the same questions and compare replies.
Configured from the ``TIDINGS_*`` environment.
"""

from tests.interop.tasks import register_all
from tidings import App

app = App("interop")
tasks = register_all(app)
