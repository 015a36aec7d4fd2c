"""Tidings: the event system of a distributed task queue, wire-compatible with Celery 5.7."""

from ._version import __version__
from .app import App
from .config import ImproperlyConfigured

__all__ = ["App", "ImproperlyConfigured", "__version__"]
