"""Pure wire-level definitions shared by every layer (no I/O here)."""

from . import states
from .events import (
    EVENT_TYPES,
    TASK_EVENT_TO_STATE,
    EventType,
    InvalidEvent,
    build_event,
    group_from,
    humanize_type,
    routing_key_for,
    utcoffset,
    validate_event,
)

__all__ = [
    "EVENT_TYPES",
    "TASK_EVENT_TO_STATE",
    "EventType",
    "InvalidEvent",
    "build_event",
    "group_from",
    "humanize_type",
    "routing_key_for",
    "states",
    "utcoffset",
    "validate_event",
]
