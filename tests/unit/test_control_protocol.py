"""The remote-control command table, argument parsing, rates, and Celery's reply layout."""

from __future__ import annotations

import json
import re

import click
import pytest
from celery.worker.control import Panel

from tests.conftest import FIXTURES
from tidings.cli.control import format_reply
from tidings.config import ImproperlyConfigured, Settings
from tidings.protocol.control import ALIASES, COMMANDS, compile_arguments, parse_rate
from tidings.worker.control import CONTROL_HANDLERS


def test_the_table_matches_celerys_commands():
    """Every command Celery 5.7's tools send (but debugging ones) is in the table,
    of the same kind, with the same argument names."""
    skipped = {"objgraph", "memsample", "memdump", "election", "revoke_by_stamped_headers"}
    for name, meta in Panel.meta.items():
        if name in skipped:
            continue
        ours = COMMANDS.get(name)
        assert ours is not None, name
        assert ours.kind == meta.type, name
        assert [a for a, _ in ours.args] == [a for a, _ in (meta.args or [])], name
        assert ours.variadic == meta.variadic, name
        assert ours.alias == meta.alias, name
    assert set(CONTROL_HANDLERS) == set(COMMANDS) | set(ALIASES)


@pytest.mark.parametrize(("command", "argv", "expected"), [
    ("rate_limit", ["proj.add", "10/s"], {"task_name": "proj.add", "rate_limit": "10/s"}),
    ("time_limit", ["proj.add", "1.5"], {"task_name": "proj.add", "soft": 1.5}),
    ("time_limit", ["proj.add", "1", "2"], {"task_name": "proj.add", "soft": 1.0, "hard": 2.0}),
    ("pool_grow", [], {}),
    ("pool_grow", ["3"], {"n": 3}),
    ("conf", ["true"], {"with_defaults": True}),
    ("registered", [], {"taskinfoitems": []}),
    ("registered", ["rate_limit", "time_limit"], {"taskinfoitems": ["rate_limit", "time_limit"]}),
    ("terminate", ["KILL", "a", "b"], {"signal": "KILL", "task_id": ["a", "b"]}),
    ("query_task", ["a"], {"ids": ["a"]}),
    ("add_consumer", ["q", "ex", "topic", "rk"],
     {"queue": "q", "exchange": "ex", "exchange_type": "topic", "routing_key": "rk"}),
])
def test_compile_arguments_as_celerys_cli(command, argv, expected):
    assert compile_arguments(COMMANDS[command], argv) == expected


@pytest.mark.parametrize(("command", "argv", "message"), [
    ("pool_grow", ["x"], "bad value for n: 'x'"),
    ("time_limit", ["t", "soon"], "bad value for soft: 'soon'"),
    ("conf", ["maybe"], "bad value for with_defaults"),
    ("cancel_consumer", ["a", "b"], "cancel_consumer takes arguments: <queue>"),
    ("stats", ["x"], "stats takes arguments: none"),
])
def test_compile_arguments_names_the_bad_argument(command, argv, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        compile_arguments(COMMANDS[command], argv)


@pytest.mark.parametrize(("text", "per_second"), [
    ("10/s", 10.0), ("120/m", 2.0), ("3600/h", 1.0), ("5", 5.0), (2.5, 2.5), (None, 0.0),
    ("", 0.0), ("0", 0.0), ("1/S", 1.0),
])
def test_parse_rate(text, per_second):
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["fast", "10/d", "-5/s", "nan", "inf/s", True])
def test_parse_rate_refuses(text):
    with pytest.raises(ValueError):
        parse_rate(text)


def test_limit_settings_are_validated():
    conf = Settings({"task_time_limit": "30", "task_default_rate_limit": "10/m"}, environ={})
    assert conf.task_time_limit == 30.0 and conf.task_default_rate_limit == "10/m"
    with pytest.raises(ImproperlyConfigured, match="task_default_rate_limit"):
        Settings({"task_default_rate_limit": "often"}, environ={})
    with pytest.raises(ImproperlyConfigured, match="task_soft_time_limit"):
        Settings(environ={"TIDINGS_TASK_SOFT_TIME_LIMIT": "-1"})


def _recorded_blocks() -> list[tuple[str, object, str]]:
    """(node, reply, text) for each node block that ``celery control`` printed."""
    scenarios = json.loads((FIXTURES / "scenarios.json").read_text())
    blocks = []
    for broker in scenarios.values():
        for entry in broker.get("control_cli", []):
            for block in re.split(r"\n(?=->)", entry["stdout"].rstrip("\n")):
                head, _, body = block.partition("\n")
                node = head.removeprefix("->  ").removesuffix(": OK")
                if body.startswith(" " * 8):
                    reply: object = {"ok": body[8:]}
                else:
                    reply = None if body.strip() == "None" else body.strip()
                blocks.append((node, reply, block))
    assert len(blocks) >= 8
    return blocks


def layout(node: str, reply: object) -> str:
    """The block as printed to a pipe (click drops the colours there)."""
    return click.unstyle(format_reply(node, reply))


def test_reply_layout_is_celerys():
    for node, reply, text in _recorded_blocks():
        assert layout(node, reply) == text


def test_reply_layout_of_lists_dicts_and_errors():
    assert layout("w@h", []) == "->  w@h: OK\n    - empty -"
    assert layout("w@h", ["a", "b"]) == "->  w@h: OK\n    * a\n    * b"
    assert layout("w@h", {"error": "unknown task"}) == \
        "->  w@h: ERROR\n        unknown task"
    assert layout("w@h", {"b": 1, "a": [2]}) == (
        '->  w@h: OK\n    {\n        "a": [\n            2\n        ],\n        "b": 1\n    }')
