"""Tidings: the event system of a distributed task queue, wire-compatible with Celery 5.7."""

from .app import App
from .config import ImproperlyConfigured

__version__ = "0.1.0"

__all__ = ["App", "ImproperlyConfigured", "__version__"]
