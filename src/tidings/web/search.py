"""The task search language of the web monitor and its API (``search=``).

Flower 2.x's language, so saved searches keep working:

- ``name:``, ``state:``, ``worker:``, ``args:``, ``kwargs:``, ``result:``
  qualify a term; a bare term matches any of them or the task id (a partial
  uuid finds its task);
- ``state:`` is an exact match; ``kwargs:key=value`` matches one keyword
  argument exactly; the others are case-insensitive substrings;
- whitespace (or ``AND``) is AND, ``OR`` is OR, AND binds tighter;
  parentheses group; ``"quoted phrases"`` keep their spaces (``\\"`` inside).

Differences from Flower, and why:

- **Negation**: ``-term``, ``-field:value`` and ``-( ... )`` exclude (Flower
  refuses them), so "everything but the successes" is ``-state:success``.
- **Time**: ``received:``, ``started:``, ``succeeded:``, ``failed:``,
  ``retried:``, ``revoked:``, ``sent:`` and ``timestamp:`` take ``>`` or ``<``
  and an age (``received:>10m`` is "received within the last 10 minutes",
  ``<1h`` "more than an hour ago"; units s, m, h, d) or an ISO date-time in
  local time (``started:<2026-12-01T10:30``).
- No minimum term length: Flower asks for three characters to keep its
  index small; here a search scans the tasks in memory, which the bound on
  State keeps affordable.
- The keyword arguments of a task are parsed once per distinct ``kwargs``
  text (an LRU cache), not on every event: Flower re-parses them with
  ``ast.literal_eval`` each time a task changes.

Everything a query names is matched against attacker-controlled strings
only; a query never names an attribute: the fields are a fixed table.  An
invalid query raises :class:`QuerySyntaxError` with the position it failed
at, which the API answers as a 400.
"""

from __future__ import annotations

import ast
import datetime
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["MAX_QUERY_LENGTH", "Predicate", "QuerySyntaxError", "compile_query"]

#: Longest query accepted (Flower's bound).
MAX_QUERY_LENGTH = 2048
#: Most tokens in a query (Flower's bound).
MAX_QUERY_TOKENS = 128
#: Deepest nesting of parentheses and negations.
MAX_QUERY_DEPTH = 16
#: ``kwargs`` texts longer than this are searched as text only, never parsed.
MAX_KWARGS_PARSE = 10_000
#: Distinct ``kwargs`` texts whose parsed pairs are kept.
KWARGS_CACHE_SIZE = 8192

TEXT_FIELDS = ("name", "worker", "args", "kwargs", "result")
EXACT_FIELDS = ("state",)
TIME_FIELDS = ("received", "started", "succeeded", "failed", "retried", "revoked", "sent",
               "timestamp")
FIELDS = frozenset((*TEXT_FIELDS, *EXACT_FIELDS, *TIME_FIELDS))
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")

#: What a compiled query is: a test of one task at a given time.
Predicate = Callable[[Any], bool]


class QuerySyntaxError(ValueError):
    """A query that cannot be read; ``position`` is where (0-based) it failed."""

    def __init__(self, message: str, position: int | None = None) -> None:
        self.message = message
        self.position = position
        where = "" if position is None else f" at position {position}"
        super().__init__(f"{message}{where}.")


@dataclass(frozen=True)
class _Token:
    kind: str  # TERM, LPAREN, RPAREN, AND, OR, NOT, EOF
    value: str
    position: int
    quoted: bool = False
    #: Characters of ``value`` before its first quote (all of them when unquoted):
    #: a ``field:`` qualifier must lie there, so ``"a:b"`` stays a phrase.
    unquoted_prefix: int = 0


def _tokenize(query: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(query)

    def add(token: _Token) -> None:
        tokens.append(token)
        if len(tokens) > MAX_QUERY_TOKENS:
            raise QuerySyntaxError(f"Query exceeds {MAX_QUERY_TOKENS} tokens", token.position)

    while i < n:
        char = query[i]
        if char.isspace():
            i += 1
            continue
        if char in "()":
            add(_Token("LPAREN" if char == "(" else "RPAREN", char, i))
            i += 1
            continue
        if char == "-" and i + 1 < n and not query[i + 1].isspace():
            add(_Token("NOT", "-", i))
            i += 1
            continue
        start, chars, quoted, in_quote = i, [], False, False
        prefix: int | None = None
        while i < n:
            char = query[i]
            if char == "\\" and i + 1 < n and query[i + 1] in '"\\':
                chars.append(query[i + 1])
                i += 2
                continue
            if char == '"':
                if prefix is None:
                    prefix = len(chars)
                quoted, in_quote = True, not in_quote
                i += 1
                continue
            if not in_quote and (char.isspace() or char in "()"):
                break
            chars.append(char)
            i += 1
        if in_quote:
            raise QuerySyntaxError("Unterminated quoted phrase", start)
        value = "".join(chars)
        if not value and not quoted:
            raise QuerySyntaxError("Empty search term", start)
        kind = value if not quoted and value in ("AND", "OR") else "TERM"
        add(_Token(kind, value, start, quoted, len(value) if prefix is None else prefix))
    tokens.append(_Token("EOF", "", n))
    return tokens


class _Parser:
    """Recursive descent: ``or := and (OR and)*``, ``and := unary+``, ``unary := -unary |
    primary``, ``primary := ( or ) | TERM``."""

    def __init__(self, tokens: list[_Token], now: float) -> None:
        self.tokens = tokens
        self.at = 0
        self.now = now

    @property
    def current(self) -> _Token:
        return self.tokens[self.at]

    def parse(self) -> Predicate:
        if self.current.kind == "EOF":
            return _always
        node = self.parse_or(0)
        if self.current.kind != "EOF":
            raise QuerySyntaxError(f"Unexpected {self.current.value!r}", self.current.position)
        return node

    def parse_or(self, depth: int) -> Predicate:
        children = [self.parse_and(depth)]
        while self.current.kind == "OR":
            self.at += 1
            children.append(self.parse_and(depth))
        return children[0] if len(children) == 1 else _any_of(children)

    def parse_and(self, depth: int) -> Predicate:
        children = []
        while True:
            if self.current.kind == "AND":
                if not children:
                    raise QuerySyntaxError("AND needs a term before it", self.current.position)
                self.at += 1
            if self.current.kind in ("EOF", "RPAREN", "OR", "AND"):
                if not children or self.tokens[self.at - 1].kind == "AND":
                    raise QuerySyntaxError("Expected a search term", self.current.position)
                break
            children.append(self.parse_unary(depth))
        return children[0] if len(children) == 1 else _all_of(children)

    def parse_unary(self, depth: int) -> Predicate:
        if depth >= MAX_QUERY_DEPTH:
            raise QuerySyntaxError(f"Query nested deeper than {MAX_QUERY_DEPTH}",
                                   self.current.position)
        if self.current.kind == "NOT":
            self.at += 1
            inner = self.parse_unary(depth + 1)
            return lambda task: not inner(task)
        token = self.current
        if token.kind == "LPAREN":
            self.at += 1
            inner = self.parse_or(depth + 1)
            if self.current.kind != "RPAREN":
                raise QuerySyntaxError("Missing ')'", self.current.position)
            self.at += 1
            return inner
        if token.kind == "TERM":
            self.at += 1
            return _term(token, self.now)
        raise QuerySyntaxError(f"Unexpected {token.value or 'end of query'!r}", token.position)


def _always(task: Any) -> bool:
    return True


def _any_of(children: list[Predicate]) -> Predicate:
    return lambda task: any(child(task) for child in children)


def _all_of(children: list[Predicate]) -> Predicate:
    return lambda task: all(child(task) for child in children)


def _text(value: Any) -> str:
    return "" if value is None else str(value).casefold()


def _worker_name(task: Any) -> str:
    worker = task.worker
    return _text(getattr(worker, "hostname", worker))


def _field_text(task: Any, field: str) -> str:
    return _worker_name(task) if field == "worker" else _text(getattr(task, field))


@lru_cache(maxsize=KWARGS_CACHE_SIZE)
def _kwargs_pairs(text: str) -> frozenset[str]:
    """``key=value`` pairs of a task's kwargs as Celery prints them (a dict repr)."""
    if len(text) > MAX_KWARGS_PARSE:
        return frozenset()
    try:
        parsed = ast.literal_eval(text)
    except Exception:  # any malformed or hostile text: no pairs, never an error
        return frozenset()
    if not isinstance(parsed, dict):
        return frozenset()
    return frozenset(f"{_text(k)}={_text(v)}" for k, v in parsed.items())


def _task_kwargs_pairs(task: Any) -> frozenset[str]:
    kwargs = task.kwargs
    if isinstance(kwargs, dict):
        return frozenset(f"{_text(k)}={_text(v)}" for k, v in kwargs.items())
    return _kwargs_pairs(kwargs) if isinstance(kwargs, str) else frozenset()


def _term(token: _Token, now: float) -> Predicate:
    field, value = None, token.value
    if ":" in value[:token.unquoted_prefix]:
        name, rest = value.split(":", 1)
        if name.casefold() in FIELDS:  # anything else is text, as in Flower ("http://")
            field, value = name.casefold(), rest
    if field is not None and not value:
        raise QuerySyntaxError(f"{field}: needs a value", token.position)
    if field in TIME_FIELDS:
        return _time_term(field, value, token.position, now)
    needle = value.casefold()
    if field == "state":
        return lambda task: _text(task.state) == needle
    if field == "kwargs" and "=" in needle:
        key, _, item = needle.partition("=")
        pair = f"{key.strip()}={item.strip()}"
        return lambda task: pair in _task_kwargs_pairs(task)
    if field is not None:
        return lambda task: needle in _field_text(task, field)
    return lambda task: (needle in _text(task.uuid)
                         or any(needle in _field_text(task, f) for f in TEXT_FIELDS)
                         or needle in _text(task.state))


def _time_term(field: str, value: str, position: int, now: float) -> Predicate:
    if value[:1] not in "<>":
        raise QuerySyntaxError(f"{field}: takes > or < and an age (10m) or a date-time",
                               position)
    newer, spec = value[0] == ">", value[1:]
    age = _AGE.match(spec)
    if age:
        bound = now - float(age.group(1)) * _UNITS[age.group(2)]
    else:
        try:
            bound = datetime.datetime.fromisoformat(spec).timestamp()
        except (ValueError, OverflowError, OSError):
            raise QuerySyntaxError(f"{field}: {spec!r} is neither an age (30s, 10m, 2h, 1d) "
                                   "nor an ISO date-time", position) from None
    def test(task: Any) -> bool:
        when = _number(getattr(task, field))
        return when is not None and (when > bound if newer else when < bound)

    return test


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def compile_query(query: str | None, now: float | None = None) -> Predicate:
    """The predicate a query stands for (an empty query matches every task)."""
    text = (query or "").strip()
    if len(text) > MAX_QUERY_LENGTH:
        raise QuerySyntaxError(f"Query exceeds {MAX_QUERY_LENGTH} characters")
    return _Parser(_tokenize(text), time.time() if now is None else now).parse()
