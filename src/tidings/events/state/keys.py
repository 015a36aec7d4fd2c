"""Which event keys may become attributes of a model object.

Everything in an event is attacker-controlled: a key must never name a
method, a property, a private attribute or an internal slot of a
:class:`~tidings.events.state.Task` or :class:`~tidings.events.state.Worker`
(or of a subclass of theirs).  Each model class gets its own policy when it
is defined (``__init_subclass__``), so a subclass's own attributes are
protected as well.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["KeyPolicy"]

#: Key names remembered per class; a stream of random keys cannot grow it past this.
KEY_CACHE_MAX = 4096


class KeyPolicy:
    """Decides once per key name whether events may set it on ``cls`` instances."""

    __slots__ = ("cache", "cls", "ok", "protected")

    def __init__(self, cls: type, protected: Iterable[str]) -> None:
        self.cls = cls
        self.protected = frozenset(protected)
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
