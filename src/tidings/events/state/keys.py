"""Which event keys may become attributes of a model object.

Everything in an event is attacker-controlled: a key must never name a
method, a property, a private attribute or an internal slot of a
:class:`~tidings.events.state.Task` or :class:`~tidings.events.state.Worker`
(or of a subclass of theirs).  Each model class gets its own policy when it
is defined (``__init_subclass__``), so a subclass's own attributes are
protected as well.

The policy also hands out a setter per event shape (its keys, in order)
whose keys are all protocol names: one generated statement sets them all,
about half the time of a ``setattr`` per key.  A late event (of a state
its task has passed) gets one too, per shape and merge rule, that sets
only what the rule lets it contribute: a late ``task-received`` of 16 keys
took 2.4 µs key by key and takes 1.2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["KeyPolicy", "add_extra_fields", "extra_fields", "slots_setter"]

#: Key names remembered per class; a stream of random keys cannot grow it past this.
KEY_CACHE_MAX = 4096
#: Event shapes remembered per class, each with its setter (or ``None``); past
#: this, events of new shapes are applied key by key (the shapes already
#: remembered keep their setters).
SHAPE_CACHE_MAX = 256


def extra_fields(obj: Any) -> dict[str, Any]:
    """``obj.__dict__`` (the fields a task or worker keeps outside its slots), read
    without leaving ``obj`` a dict it did not have.

    Reading ``__dict__`` makes an empty one when there is none, and the
    object keeps it: 64 bytes on every task a copy or a pickle looked at
    (about 6 % of a task, for good, after a camera's first shot).  The
    empty dict made is dropped again.  No other thread can have put a field
    into it in between: from the read to the ``del``, the statements call no
    Python code (CPython hands the GIL to another thread only at calls and
    backward jumps).
    """
    fields = obj.__dict__
    if not fields and obj.__dict__ is fields:
        del obj.__dict__
    return fields


def add_extra_fields(obj: Any, fields: dict[str, Any] | None) -> None:
    """Add ``fields`` to those ``obj`` keeps outside its slots (a copy's, an unpickled
    object's), in a new plain dict made its ``__dict__``: a name stored into the
    dict that ``__dict__`` gives joins the key table the class's instance dicts
    share, for good (see ``task.put_extra``)."""
    if fields:
        obj.__dict__ = {**extra_fields(obj), **fields}


def slots_setter(names: tuple[str | None, ...], sparse: Iterable[str] = (),
                 put: Callable[[Any, str, Any], None] | None = None
                 ) -> Callable[[Any, tuple], None]:
    """``set(obj, values)``: ``obj.<name> = value`` for each of ``names``, in one statement
    (the value at the place of a ``None`` among the names is left out).

    Generated (as :mod:`dataclasses` generates ``__init__``) because one
    unpacking assignment is several times faster than a loop of ``setattr``.
    A name in ``sparse`` (a field most objects leave at ``None``, kept in
    their ``__dict__`` when set) is set only when the value or the field is
    not ``None``: the same outcome, without a ``__dict__`` for a ``None``.
    It is set by ``put(obj, name, value)``: the class's way of storing a
    field that has no slot (required when there are sparse names).
    The names are the protocol table's identifiers, never event data: an
    event's keys reach here only when each is one of them (:meth:`KeyPolicy.setter`).
    """
    assert names and all(name is None or (name.isascii() and name.isidentifier())
                         for name in names)
    sparse = frozenset(sparse)
    assert put is not None or not sparse & set(names)
    targets = ", ".join("_" if name is None else f"_{n}" if name in sparse else f"obj.{name}"
                        for n, name in enumerate(names))
    lines = [f"    {targets}, = values"]
    lines += [f"    if _{n} is not None or obj.{name} is not None:\n"
              f"        put(obj, {name!r}, _{n})"
              for n, name in enumerate(names) if name in sparse]
    namespace: dict[str, Any] = {"put": put}
    exec("def set_slots(obj, values):\n" + "\n".join(lines), namespace)
    return namespace["set_slots"]


class KeyPolicy:
    """Decides once per key name whether events may set it on ``cls`` instances."""

    __slots__ = ("cache", "cls", "late", "named", "ok", "protected", "put", "setters",
                 "sparse", "unmerged")

    def __init__(self, cls: type, protected: Iterable[str], named: Iterable[str] = (),
                 sparse: Iterable[str] = (),
                 put: Callable[[Any, str, Any], None] | None = None,
                 unmerged: Iterable[str] = ()) -> None:
        self.cls = cls
        #: Keys a late event never sets (see :meth:`late_setter`).
        self.unmerged = frozenset(unmerged)
        #: ``(merge rule, event shape)`` -> the setter of such late events, or ``None``.
        self.late: dict[tuple, Callable[[Any, tuple], None] | None] = {}
        self.protected = frozenset(protected)
        #: The protocol's names: a shape of them (each also allowed) gets a setter.
        self.named = frozenset(named)
        #: Names whose ``None`` a setter does not store (see :func:`slots_setter`).
        self.sparse = frozenset(sparse)
        #: How a sparse field is stored (see :func:`slots_setter`).
        self.put = put
        #: Event shape (its keys, in order) -> its setter, or ``None``.
        self.setters: dict[tuple, Callable[[Any, tuple], None] | None] = {}
        self.cache: dict[str, bool] = {}
        #: Keys known to be allowed: an event whose keys all are in it takes
        #: the fast path (one C-level subset test instead of a check per key).
        self.ok: set[str] = set()

    def allowed(self, key: str) -> bool:
        try:
            return self.cache[key]
        except KeyError:
            pass
        cls = self.cls
        ok = (
            isinstance(key, str)
            and key.isidentifier()
            and not key.startswith("_")
            and key not in self.protected
            and (key in cls._settable or not hasattr(cls, key))  # type: ignore[attr-defined]
        )
        if len(self.cache) < KEY_CACHE_MAX:
            self.cache[key] = ok
            if ok:
                self.ok.add(key)
        return ok

    def setter(self, shape: tuple) -> Callable[[Any, tuple], None] | None:
        """The setter of events whose keys are ``shape``; ``None`` unless every key
        is a protocol name this class lets events set."""
        try:
            return self.setters[shape]
        except KeyError:
            pass
        if len(self.setters) >= SHAPE_CACHE_MAX:
            # past the bound, new shapes go key by key: no code is made per event,
            # whatever shapes a sender invents
            return None
        named, allowed = self.named, self.allowed
        setter = (slots_setter(shape, self.sparse, self.put)
                  if shape and all(key in named and allowed(key) for key in shape) else None)
        self.setters[shape] = setter
        return setter

    def late_setter(self, rule: Any, shape: tuple) -> Callable[[Any, tuple], None] | None:
        """The setter of a late event (one of a state the object has passed) whose keys
        are ``shape``: it sets what such an event may contribute, the keys the merge
        ``rule`` names (all without one) save the ``unmerged``, as a loop over them
        would; ``None`` where that loop must run (a key without a slot that is not
        sparse either, an unhashable rule, a full cache).

        Out-of-order arrival makes late events common: a monitor's stream of
        several workers, a batch that arrives after the next one.
        """
        try:
            return self.late[rule, shape]
        except KeyError:
            pass
        except TypeError:  # a subclass's rule that is not hashable
            return None
        if len(self.late) >= SHAPE_CACHE_MAX:
            return None
        named, allowed, unmerged, sparse = self.named, self.allowed, self.unmerged, self.sparse
        slotted = getattr(self.cls, "_slotted", frozenset())
        names = tuple(key if (key not in unmerged and (rule is None or key in rule)
                              and allowed(key)) else None for key in shape)
        setter = None
        if shape and all(name is None or (name in named and (name in slotted or name in sparse))
                         for name in names):
            setter = (slots_setter(names, sparse, self.put) if any(names)
                      else _set_nothing)
        self.late[rule, shape] = setter
        return setter


def _set_nothing(obj: Any, values: tuple) -> None:
    """What a late event sets when its merge rule takes none of its keys."""
