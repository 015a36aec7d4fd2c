"""Print events as they arrive: Celery's human format, or NDJSON.

The text format is line-for-line the one ``celery events --dump`` prints, so
scripts written against Celery's output keep working.  ``--json`` prints one
JSON object per line (the event as received, ``local_received`` included)
for ``jq`` and log shippers.

How the text costs less than Celery's per event, with the same characters:
each layout of keys and event type gets one ``%`` template for its whole
line, kept (:func:`_line`); the date and time of day of a timestamp are
made once per second; and the receive time that all events of one batch
share (see :func:`~tidings.protocol.clock.stamp_batch`) is written out once
for the batch, not once per event (a float's text is the dearest field).
"""

from __future__ import annotations

import json
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from functools import lru_cache
from operator import itemgetter
from typing import IO, Any

from ..protocol.events import LOCAL_RECEIVED, humanize_type

#: How many task labels (name, args) are remembered for later events of a task.
TASK_NAMES_MAX = 4095
#: Seconds between flushes of output that is not a terminal.
FLUSH_INTERVAL = 1.0
#: Lines gathered before they are written (to a pipe or a file) in one go.
PENDING_LINES = 512


class _LabelCache(OrderedDict):
    def remember(self, uuid: Any, label: Any) -> None:
        self[uuid] = label
        self.move_to_end(uuid)
        if len(self) > TASK_NAMES_MAX:
            self.popitem(last=False)


def format_timestamp(ts: Any) -> str:
    """``str(datetime.fromtimestamp(ts, timezone.utc))``, or ``str(ts)`` if it is no time.

    The date and time of day are computed once per second of time and
    cached; the microseconds are rounded as ``datetime`` rounds them (half
    to even) and written from a table of three-digit groups, so the text is
    the same, at a fraction of the cost per event.
    """
    cls = ts.__class__
    if (cls is float or cls is int) and 0 <= ts < _TIMESTAMP_MAX:
        second = int(ts)
        # exact: a float minus its integer part loses no bits (what math.modf gives)
        micros = round((ts - second) * 1e6)
        if micros >= 1_000_000:
            micros -= 1_000_000
            second += 1
        prefix = _seconds.get(second)
        if prefix is None:
            if len(_seconds) >= SECONDS_CACHED:
                _seconds.clear()
            prefix = _seconds[second] = str(datetime.fromtimestamp(second, timezone.utc))[:19]
        if micros:
            millis, micros = divmod(micros, 1000)
            return f"{prefix}.{_DIGITS3[millis]}{_DIGITS3[micros]}+00:00"
        return f"{prefix}+00:00"
    try:
        return str(datetime.fromtimestamp(ts, timezone.utc))
    except (TypeError, ValueError, OverflowError, OSError):
        return str(ts)


#: Seconds of time whose date and time of day are cached (a dump mostly
#: sees the last few seconds; the cache starts over when full).
SECONDS_CACHED = 4096
_seconds: dict[int, str] = {}
#: 10000-01-01: later times have no four-digit year, and go the slow way.
_TIMESTAMP_MAX = 253_402_300_800
#: "000" to "999": a formatted number with a width costs more than two lookups.
_DIGITS3 = tuple(f"{n:03d}" for n in range(1000))


class EventFilter:
    """Which events to keep: glob patterns on type, hostname and task name.

    Patterns of one kind are alternatives; different kinds must all match.
    A task-name filter keeps only task events whose task name (from the
    event, or remembered from the task's ``task-sent``/``task-received``)
    matches.
    """

    def __init__(self, types: Iterable[str] = (), hostnames: Iterable[str] = (),
                 task_names: Iterable[str] = ()) -> None:
        self.types = tuple(types)
        self.hostnames = tuple(hostnames)
        self.task_names = tuple(task_names)
        self._names: _LabelCache = _LabelCache()

    def __bool__(self) -> bool:
        return bool(self.types or self.hostnames or self.task_names)

    def __call__(self, event: dict[str, Any]) -> bool:
        type_ = str(event.get("type", ""))
        if self.task_names and type_.startswith("task-"):
            name = event.get("name")
            uuid = event.get("uuid")
            if name is not None:
                self._names.remember(uuid, name)
            else:
                name = self._names.get(uuid)
        if self.types and not any(fnmatchcase(type_, p) for p in self.types):
            return False
        if self.hostnames and not any(
                fnmatchcase(str(event.get("hostname", "")), p) for p in self.hostnames):
            return False
        if self.task_names:
            if not type_.startswith("task-") or name is None:
                return False
            if not any(fnmatchcase(str(name), p) for p in self.task_names):
                return False
        return True


class Dumper:
    """Writes each event to ``out``.

    Output is flushed after every line when ``out`` is a terminal.
    Otherwise lines are gathered (at most ``PENDING_LINES``) and written
    together, and the output is flushed at most every ``FLUSH_INTERVAL``
    seconds (:meth:`tick`) and at exit, so that ``tidings events --dump >
    file`` costs neither a system call nor a file write per event.
    """

    def __init__(self, out: IO[str] | None = None, json_lines: bool = False,
                 event_filter: EventFilter | None = None,
                 line_buffered: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.json_lines = json_lines
        self.filter = event_filter or EventFilter()
        # tested once: an empty filter keeps every event (and its test costs a call)
        self._filtering = bool(self.filter)
        if line_buffered is None:
            try:
                line_buffered = self.out.isatty()
            except (AttributeError, ValueError):
                line_buffered = False
        self.line_buffered = line_buffered
        self._labels: _LabelCache = _LabelCache()
        self._last_flush = time.monotonic()
        self._pending: list[str] = []
        self.printed = 0
        #: The last receive time printed, and its text (shared by a batch's events).
        self._received: object = _NO_TIME
        self._received_text = ""

    def say(self, line: str) -> None:
        if self.line_buffered:
            self.out.write(line + "\n")
            self.out.flush()
            return
        pending = self._pending
        pending.append(line)
        if len(pending) >= PENDING_LINES:
            self._write_pending()
            if time.monotonic() - self._last_flush >= FLUSH_INTERVAL:
                self.flush()

    def _write_pending(self) -> None:
        pending = self._pending
        if pending:
            pending.append("")  # the last line's newline
            text = "\n".join(pending)
            pending.clear()
            self.out.write(text)

    def tick(self) -> None:
        """Write what is gathered; flush if a second passed (called while idle, too)."""
        self._write_pending()
        if time.monotonic() - self._last_flush >= FLUSH_INTERVAL:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        try:
            self._write_pending()
            self.out.flush()
        except (OSError, ValueError):
            pass

    def on_event(self, event: dict[str, Any]) -> None:
        if self._filtering and not self.filter(event):
            return
        if self.json_lines:
            line = json.dumps(event, ensure_ascii=False, default=repr)
        else:
            line = self.format(event)
        self.say(line)  # flushes, at most every FLUSH_INTERVAL, when lines are written
        self.printed += 1

    def format(self, event: dict[str, Any]) -> str:
        """One event in Celery's ``evdump`` wording (a missing key never raises)."""
        get = event.get
        type_ = get("type", "")
        keys = tuple(event)
        line = ((_line(keys, type_) if type_.__class__ is str else None)
                or _build_line(keys, str(type_)))
        values, rest, template, task, describing = line
        head: tuple[Any, ...] = (get("hostname"), format_timestamp(get("timestamp")))
        if task:
            uuid = get("uuid")
            if describing:
                label = f"{get('name')}({uuid}) args={get('args')} kwargs={get('kwargs')}"
                self._labels.remember(uuid, label)
            else:
                label = self._labels.get(uuid, "")
            head += (label,)
        if rest is None:
            return template % (head + values(event))
        # the events of a batch share their receive time: its text is made once
        received = event[LOCAL_RECEIVED]
        if received is self._received:
            text = self._received_text
        else:
            text = str(received)
            if received.__class__ is float:  # immutable: the same object, the same text
                self._received, self._received_text = received, text
        return template % (head + values(event) + (text,) + rest(event))


#: What no event's receive time is (the one :class:`Dumper` remembers, at first).
_NO_TIME = object()

#: ``(values, rest, template, task, describing)``: how to print an event of a key
#: layout and type (see :func:`_build_line`).
Line = tuple[Callable[[dict[str, Any]], tuple[Any, ...]],
             Callable[[dict[str, Any]], tuple[Any, ...]] | None, str, bool, bool]


def _build_line(keys: tuple[Any, ...], type_: str) -> Line:
    """How to print an event with ``keys`` and ``type_``.

    * ``values``: a getter of the values of its fields (the keys not printed
      before them), in sorted order; up to ``local_received`` when the event
      has it, and then ``rest`` gets those after it (else ``None``);
    * ``template``: the ``%`` template of the whole line, which takes the
      hostname, the time, the task's label (task events only), then the
      fields' values;
    * whether it is a task event, and whether it describes its task
      (``task-sent``, ``task-received``: its label is remembered).

    ``%s`` writes ``str(value)`` where Celery's ``"{}".format`` writes
    ``format(value, "")``: the same text for every value a decoder gives (JSON,
    msgpack, YAML; a class of a pickled event could make them differ), in about
    two thirds of the time."""
    type_ = type_.lower()
    task = type_.startswith("task-")
    describing = type_ in _DESCRIBING
    shown = _DESCRIBED if describing else _TASK_ENVELOPE if task else _ENVELOPE
    try:
        ordered = [key for key in sorted(keys) if key not in shown]
    except TypeError:  # keys of mixed types: order them as text
        ordered = [key for key in sorted(keys, key=str) if key not in shown]
    fields = ", ".join(str(key).replace("%", "%%") + "=%s" for key in ordered)
    template = (f"%s [%s] {humanize_type(type_).replace('%', '%%')}{':' if ordered else ''}"
                f"{' %s ' if task else ' '}{fields}")
    if LOCAL_RECEIVED in ordered:
        at = ordered.index(LOCAL_RECEIVED)
        return (_getter(ordered[:at]), _getter(ordered[at + 1:]), template, task,
                describing)
    return _getter(ordered), None, template, task, describing


def _getter(keys: list[Any]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """``get(event)``: the tuple of the values of ``keys`` (of any number)."""
    if len(keys) == 1:
        only = keys[0]
        return lambda event: (event[only],)
    return itemgetter(*keys) if keys else (lambda event: ())


#: Key layouts and types whose line is kept: events of one type from one sender
#: share one, and the text dump reuses it instead of sorting and formatting key
#: by key.
LAYOUTS_MAX = 1024


@lru_cache(maxsize=LAYOUTS_MAX)
def _line(keys: tuple[Any, ...], type_: str) -> Line | None:
    """:func:`_build_line`, kept; ``None`` for keys that are not all text (``True`` and
    ``1`` are the same key to this cache), which are built afresh each time."""
    if any(key.__class__ is not str for key in keys):
        return None
    return _build_line(keys, type_)


#: Keys printed before the fields, so not among them: every event's, task
#: events', and those of the events that describe a task (sent, received).
_ENVELOPE = frozenset({"timestamp", "type", "hostname"})
_TASK_ENVELOPE = _ENVELOPE | {"uuid"}
_DESCRIBED = _TASK_ENVELOPE | {"name", "args", "kwargs"}
_DESCRIBING = frozenset({"task-received", "task-sent"})
