"""The search language: Flower's syntax, plus negation and time, and its errors."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.events.state import State
from tidings.web.search import MAX_QUERY_LENGTH, QuerySyntaxError, compile_query

NOW = 1_800_000_000.0


def make_state() -> State:
    state = State()
    rows = [
        ("a1111111-0000-0000-0000-000000000001", "proj.add", "SUCCESS", "w1@host", "(1, 2)",
         "{'user': 42, 'mode': 'fast'}", "3", NOW - 30),
        ("b2222222-0000-0000-0000-000000000002", "proj.add", "FAILURE", "w2@host", "(0, 0)",
         "{'user': 7}", None, NOW - 1200),
        ("c3333333-0000-0000-0000-000000000003", "proj.mail", "SUCCESS", "w2@host",
         "('hello world',)", "{}", "'sent'", NOW - 7200),
        ("d4444444-0000-0000-0000-000000000004", "proj.mail", "RETRY", "w1@host", "()",
         "{'to': 'x@y'}", None, NOW - 5),
    ]
    clock = 0
    for uuid, name, final, host, args, kwargs, result, at in rows:
        clock += 1
        state.event({"type": "task-received", "uuid": uuid, "name": name, "args": args,
                     "kwargs": kwargs, "hostname": host, "timestamp": at, "clock": clock,
                     "local_received": at})
        clock += 1
        kind = {"SUCCESS": "task-succeeded", "FAILURE": "task-failed",
                "RETRY": "task-retried"}[final]
        extra = {"result": result} if result else {"exception": "ValueError('no')"}
        state.event({"type": kind, "uuid": uuid, "hostname": host, "timestamp": at + 1,
                     "clock": clock, "local_received": at + 1, **extra})
    return state


STATE = make_state()


def matching(query: str) -> list[str]:
    test = compile_query(query, now=NOW)
    return sorted(t.uuid[0] for t in STATE.tasks.values() if test(t))


@pytest.mark.parametrize("query, expected", [
    ("", ["a", "b", "c", "d"]),
    ("name:proj.add", ["a", "b"]),
    ("state:success", ["a", "c"]),
    ("state:SUCCESS", ["a", "c"]),
    ("state:succ", []),  # state is exact, as in Flower
    ("worker:w2", ["b", "c"]),
    ("args:hello", ["c"]),
    ('args:"hello world"', ["c"]),
    ("kwargs:user=42", ["a"]),
    ("kwargs:user=4", []),  # key=value is exact
    ("kwargs:user", ["a", "b"]),  # without '=': substring
    ("result:sent", ["c"]),
    ("b2222", ["b"]),  # a partial uuid
    ("mail w1", ["d"]),  # whitespace is AND
    ("mail AND w1", ["d"]),
    ("state:failure OR state:retry", ["b", "d"]),
    ("name:proj.add (state:failure OR worker:w1)", ["a", "b"]),
    ("-state:success", ["b", "d"]),  # negation (not in Flower)
    ("-(name:proj.add OR state:retry)", ["c"]),
    ("name:proj.mail -w1", ["c"]),
    ("received:>10m", ["a", "d"]),  # time (not in Flower)
    ("received:<1h", ["c"]),
    ("received:>1d", ["a", "b", "c", "d"]),
    ("started:>1m", []),  # nothing started: no STARTED events
    ("http://example", []),  # an unknown prefix is text, as in Flower
])
def test_queries(query, expected):
    assert matching(query) == expected


def test_an_iso_time_bound():
    bound = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(NOW - 600))
    assert matching(f"received:>{bound}") == ["a", "d"]


@pytest.mark.parametrize("query, message, position", [
    ('name:"unclosed', "Unterminated quoted phrase", 0),
    ("(state:success", "Missing ')'", 14),
    ("state:success)", "Unexpected ')'", 13),
    ("a OR", "Expected a search term", 4),
    ("OR a", "Expected a search term", 0),
    ("AND a", "AND needs a term before it", 0),
    ("state:", "state: needs a value", 0),
    ("received:10m", "received: takes > or <", 0),
    ("received:>tomorrow", "neither an age", 0),
    ("a ()", "Expected a search term", 3),
])
def test_errors_say_where(query, message, position):
    with pytest.raises(QuerySyntaxError) as info:
        compile_query(query, now=NOW)
    assert message in str(info.value)
    assert info.value.position == position
    assert f"at position {position}" in str(info.value)


def test_bounds():
    with pytest.raises(QuerySyntaxError, match="characters"):
        compile_query("a" * (MAX_QUERY_LENGTH + 1))
    with pytest.raises(QuerySyntaxError, match="tokens"):
        compile_query(" ".join(["abc"] * 200))
    with pytest.raises(QuerySyntaxError, match="deeper"):
        compile_query("(" * 40 + "abc" + ")" * 40)


def test_hostile_kwargs_are_text_never_an_error():
    state = State()
    for i, kwargs in enumerate(["{" * 5000, "__import__('os')", "{'a': 1" + "," * 10**5,
                                "{'k': 'v'}"]):
        state.event({"type": "task-received", "uuid": f"u{i}", "name": "t", "kwargs": kwargs,
                     "hostname": "w", "timestamp": NOW, "clock": i + 1})
    test = compile_query("kwargs:k=v")
    assert [t.uuid for t in state.tasks.values() if test(t)] == ["u3"]


@settings(max_examples=600, deadline=None)
@given(st.text(max_size=80))
def test_any_text_compiles_or_fails_with_a_position(query):
    try:
        test = compile_query(query, now=NOW)
    except QuerySyntaxError as exc:
        assert exc.position is None or 0 <= exc.position <= len(query)
        return
    for task in STATE.tasks.values():
        assert test(task) in (True, False)
