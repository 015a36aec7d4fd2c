"""JSON event bodies: decoded by ``orjson`` when it is installed, the standard library
else; encoded by the standard library's C encoder, called directly.

``pip install 'tidings[speedups]'`` brings ``orjson``, which decodes an
event body in about a third of the standard library's time.  The result is
always the standard library's: what ``orjson`` refuses but ``json`` takes
(``NaN`` and ``Infinity``, escaped lone surrogates, a byte-order mark,
nesting past 1024) is decoded again by ``json``; what both refuse raises
``json``'s error, so a receiver counts the same input as bad with or
without the extra.  ``orjson`` reads an integer past 64 bits as a float
where ``json`` keeps it exact: text with a run of 19 digits or more goes to
``json`` directly.  :func:`loads_inexact_ints` skips that look (about half
the cost of decoding a Redis message envelope, whose base64 text is most of
it) for a document whose integers nobody reads past 63 bits.

Differences from kombu's decoder (which Celery's receiver uses): no object
hook, so a ``{"__type__": ...}`` object in an event stays the dict it is
instead of becoming a ``datetime`` or a ``Decimal`` (no Celery event sends
one; an event that did would be attacker-chosen typing).

:func:`dumps` gives ``json.dumps``'s text, byte for byte (so Celery's:
``", "`` and ``": "`` separators, ASCII escapes), at about half its cost on
an event batch: the standard library builds a new C encoder for every call
and has it record each dict and list it enters, to report a cycle.  Ours is
built once and keeps no such record: an event is a tree of decoded values,
and a cycle, if one came, raises ``RecursionError`` instead of ``ValueError``.

:func:`encode_event` writes a published event (or batch) as UTF-8 bytes:
with ``orjson`` when it is installed and the event holds only what it
writes with the same meaning as ``json`` (text, integers, finite floats,
booleans and ``null``, as exact classes, at the top level of each event),
else as :func:`dumps` does.  The text is not Celery's byte for byte
(compact separators, non-ASCII characters as UTF-8 instead of escapes,
floats in their shortest form either way), but every JSON decoder reads the
same values from it; on a batch of ``task-sent`` events it costs a tenth of
the standard library's, which was most of what a batch cost its sender.
A value orjson refuses (an integer past 64 bits, a lone surrogate, a key
that is not text) goes the standard library's way too, so what cannot be
encoded raises the same errors with or without the extra.
"""

from __future__ import annotations

import json
from math import isfinite
from typing import Any

__all__ = ["DECODE_ERRORS", "ENCODE_ERRORS", "FAST", "JSON_CONTENT_TYPE", "TEXT_ENCODINGS",
           "dumps", "encode_event", "encode_plain", "loads", "loads_inexact_ints", "plain_event"]

#: The content type of JSON message bodies (kombu's and Celery's).
JSON_CONTENT_TYPE = "application/json"
#: Content encodings under which a JSON body is text (``None``: none given).
TEXT_ENCODINGS = frozenset({"utf-8", "utf8", None})

#: What :func:`loads` raises for input that is not JSON (``UnicodeDecodeError``
#: is a ``ValueError``; ``RecursionError``: nested too deep for ``json``).
DECODE_ERRORS = (ValueError, RecursionError)

#: What :func:`dumps` raises for a value JSON cannot hold (``RecursionError``:
#: nested too deep, or a cycle).
ENCODE_ERRORS = (TypeError, ValueError, RecursionError)

_stdlib_loads = json.loads

try:
    import orjson
except ImportError:  # the extra is not installed
    orjson = None


def _loads_stdlib(text: str | bytes | bytearray | memoryview) -> Any:
    if isinstance(text, memoryview):
        text = bytes(text)
    return _stdlib_loads(text)


if orjson is not None:
    _fast_loads = orjson.loads
    _FastError = orjson.JSONDecodeError
    # Where orjson and json would disagree: an integer past 64 bits, found
    # as a run of 19 digits (a long run anywhere only costs the slower
    # decoder).  Digits become "0" and all else " ", then a substring
    # search: a tenth of a regular expression's time on an event batch.
    _DIGITS_ONLY = bytes(48 if 48 <= c <= 57 else 32 for c in range(256))
    _LONG_RUN = b"0" * 19

    def loads(text: str | bytes | bytearray | memoryview) -> Any:
        """The standard library's ``json.loads(text)``, decoded by orjson where it can."""
        raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        if _LONG_RUN in bytes(raw).translate(_DIGITS_ONLY):
            return _loads_stdlib(text)
        try:
            return _fast_loads(text)
        except _FastError:
            return _loads_stdlib(text)

    def loads_inexact_ints(text: str | bytes | bytearray | memoryview) -> Any:
        """:func:`loads`, except that an integer past 64 bits may be read as a float
        (for documents whose integers are only ever taken up to 63 bits)."""
        try:
            return _fast_loads(text)
        except _FastError:
            return _loads_stdlib(text)
else:
    loads = loads_inexact_ints = _loads_stdlib

#: Whether the C decoder (orjson) is in use.
FAST = orjson is not None


def _make_dumps() -> Any:
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (another Python): the standard function
        return json.dumps
    encode = make(None, json.JSONEncoder().default, json.encoder.encode_basestring_ascii,
                  None, ": ", ", ", False, False, True)

    def dumps(value: Any, _join: Any = "".join) -> str:
        """``json.dumps(value)``, without its per-call set-up and cycle check."""
        return _join(encode(value, 0))

    return dumps


dumps = _make_dumps()


#: Classes of the values :func:`encode_event` hands to orjson (anything else,
#: a container or a subclass included, goes to :func:`dumps`).
_PLAIN = frozenset({str, int, float, bool, type(None)})


def plain_event(event: Any) -> bool:
    """Whether ``event`` is a dict of plain JSON values only (text, integers, finite
    floats, booleans and ``None``, as exact classes): such an event always
    encodes, and orjson writes it with the values ``json`` writes."""
    if event.__class__ is not dict:
        return False
    plain = _PLAIN
    for value in event.values():
        cls = value.__class__
        if cls not in plain or (cls is float and not isfinite(value)):
            return False  # orjson writes NaN and infinities as null
    return True


if orjson is not None:
    _orjson_dumps = orjson.dumps
    _OrjsonError = orjson.JSONEncodeError

    def encode_plain(value: Any) -> bytes:
        """:func:`encode_event` for an event (or a list of them) :func:`plain_event`
        has already passed."""
        try:
            return _orjson_dumps(value)
        except _OrjsonError:  # a value it refuses: the standard library decides
            return dumps(value).encode()

    def encode_event(value: Any) -> bytes:
        """An event or a batch of events as JSON in UTF-8 (see the module documentation)."""
        if plain_event(value) if value.__class__ is dict else (
                value.__class__ is list and all(map(plain_event, value))):
            return encode_plain(value)
        return dumps(value).encode()
else:
    def encode_event(value: Any) -> bytes:
        """An event or a batch of events as JSON in UTF-8 (see the module documentation)."""
        return dumps(value).encode()

    encode_plain = encode_event
