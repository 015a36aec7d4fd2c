"""Publishing and consuming events, and the cluster state built from them.

The names match ``celery.events`` so that code written for Celery ports by
changing its imports.
"""

from ..protocol.events import group_from
from ..transport import get_exchange
from .dispatcher import Event, EventDispatcher
from .receiver import EventReceiver
from .state import State

__all__ = ["Event", "EventDispatcher", "EventReceiver", "State", "get_exchange", "group_from"]
