"""The task runtime: a worker that consumes task messages, runs them and emits events."""

from .hooks import EventsMiddleware, Middleware
from .worker import Worker

__all__ = ["EventsMiddleware", "Middleware", "Worker"]
