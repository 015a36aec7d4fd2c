"""Remote-control commands: names, arguments and reply shapes, as Celery 5.7 has them.

Workers answer these commands and clients (``tidings inspect``, ``tidings
control``, :class:`tidings.control.Inspect`) send them; both read this one
table, so a command's name, its arguments and how the command line spells
them are said once.  The table follows Celery's ``celery/worker/control.py``
so that ``celery inspect`` and ``celery control`` work against Tidings
workers, and Tidings' commands against Celery workers.

Differences from Celery:

- A bad argument on the command line is a usage error naming the argument
  (Celery passes ``int('x')``'s ``ValueError`` through as a traceback).
- :func:`parse_rate` rejects negative and non-finite rates (Celery accepts
  ``-5/s`` and then never runs the task).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "COMMANDS",
    "DEFAULT_TASK_INFO_ITEMS",
    "Command",
    "compile_arguments",
    "error",
    "ok",
    "parse_rate",
    "to_bool",
]

#: Task attributes ``registered`` shows when none are asked for (Celery's).
DEFAULT_TASK_INFO_ITEMS = ("exchange", "routing_key", "rate_limit")

#: Seconds in each unit of a rate limit string ("10/s", "100/m", "1000/h").
RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def ok(value: Any) -> dict[str, Any]:
    """A successful reply: ``{"ok": value}``."""
    return {"ok": value}


def error(value: Any) -> dict[str, Any]:
    """A failed reply: ``{"error": value}`` (what Celery's tools print as ERROR)."""
    return {"error": value}


def to_bool(value: Any) -> bool:
    """Celery's ``strtobool`` for command-line arguments (``conf true``)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def parse_rate(value: Any) -> float:
    """Tasks per second of a rate limit: ``"10/s"``, ``"5/m"``, ``"100/h"``, a number.

    ``None``, ``""`` and ``0`` mean no limit (0.0 is returned).  Raises
    ``ValueError`` with Celery's wording for a string that is not a rate.
    """
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool):
        raise ValueError(f"not a rate limit: {value!r}")
    if isinstance(value, int | float):
        rate = float(value)
    else:
        text = str(value).strip()
        number, _, unit = text.partition("/")
        per = RATE_UNITS.get(unit.strip().lower() or "s")
        if per is None:
            raise ValueError(f"unknown rate unit {unit!r} (use s, m or h)")
        rate = float(number) / per
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(f"rate must be a positive number: {value!r}")
    return rate


@dataclass(frozen=True)
class Command:
    """One remote-control command.

    ``args`` are the positional command-line arguments with the type each
    is converted with; ``variadic`` names the argument that takes the rest
    of the command line as a list.
    """

    name: str
    kind: Literal["inspect", "control"]
    help: str
    args: tuple[tuple[str, Callable[[Any], Any]], ...] = ()
    variadic: str | None = None
    signature: str = ""
    alias: str | None = None
    visible: bool = True
    default_timeout: float = 1.0


def _table(*commands: Command) -> dict[str, Command]:
    return {c.name: c for c in commands}


COMMANDS: dict[str, Command] = _table(
    # -- inspect: read-only
    Command("ping", "inspect", "Ping workers.", default_timeout=0.2),
    Command("clock", "inspect", "The worker's Lamport clock value."),
    Command("stats", "inspect", "Worker statistics: pool, totals, broker, rusage."),
    Command("active", "inspect", "Tasks being executed.", alias="dump_active"),
    Command("reserved", "inspect", "Tasks received and waiting to run (not scheduled).",
            alias="dump_reserved"),
    Command("scheduled", "inspect", "Tasks waiting for their ETA or countdown.",
            alias="dump_schedule"),
    Command("revoked", "inspect", "Ids of revoked tasks.", alias="dump_revoked"),
    Command("registered", "inspect", "Registered tasks, with the attributes asked for.",
            alias="dump_tasks", variadic="taskinfoitems",
            signature="[attr1 [attr2 [... [attrN]]]]"),
    Command("active_queues", "inspect", "Queues the worker consumes from."),
    Command("conf", "inspect", "The worker's configuration (secrets masked).",
            alias="dump_conf", args=(("with_defaults", to_bool),),
            signature="[include_defaults=False]"),
    Command("query_task", "inspect", "State and details of tasks by id.", variadic="ids",
            signature="[id1 [id2 [... [idN]]]]"),
    Command("report", "inspect", "Software and settings, for bug reports."),
    Command("hello", "inspect", "Exchange revoked ids with another worker (mingle).",
            visible=False),
    # -- control: changes the worker
    Command("enable_events", "control", "Switch task events on."),
    Command("disable_events", "control", "Switch task events off."),
    Command("heartbeat", "control", "Send a worker-heartbeat event now."),
    Command("revoke", "control", "Revoke tasks by id (they will not run).",
            variadic="task_id", signature="[id1 [id2 [... [idN]]]]"),
    Command("terminate", "control", "Revoke tasks and kill them if running.",
            args=(("signal", str),), variadic="task_id",
            signature="<signal> [id1 [id2 [... [idN]]]]"),
    Command("rate_limit", "control", "Set a task's rate limit (0 or empty: none).",
            args=(("task_name", str), ("rate_limit", str)),
            signature="<task_name> <rate_limit (e.g., 5/s | 5/m | 5/h)>"),
    Command("time_limit", "control", "Set a task's soft and hard time limits.",
            args=(("task_name", str), ("soft", float), ("hard", float)),
            signature="<task_name> <soft_secs> [hard_secs]"),
    Command("shutdown", "control", "Warm shutdown: finish running tasks, then exit."),
    Command("pool_grow", "control", "Add N processes or threads to the pool.",
            args=(("n", int),), signature="[N=1]"),
    Command("pool_shrink", "control", "Remove N processes or threads from the pool.",
            args=(("n", int),), signature="[N=1]"),
    Command("autoscale", "control", "Change the autoscaler's maximum and minimum.",
            args=(("max", int), ("min", int)), signature="[max [min]]"),
    Command("pool_restart", "control",
            "Restart the pool's processes (worker_pool_restarts must be on)."),
    Command("add_consumer", "control", "Start consuming from a queue.",
            args=(("queue", str), ("exchange", str), ("exchange_type", str),
                  ("routing_key", str)),
            signature="<queue> [exchange [type [routing_key]]]"),
    Command("cancel_consumer", "control", "Stop consuming from a queue.",
            args=(("queue", str),), signature="<queue>"),
)

#: Celery's older names (``dump_tasks`` ...) of the same commands.
ALIASES = {c.alias: c.name for c in COMMANDS.values() if c.alias}


def compile_arguments(command: Command, argv: list[str]) -> dict[str, Any]:
    """The arguments of ``command`` from command-line words, as Celery's CLI sends them.

    Raises ``ValueError`` naming the argument that could not be converted,
    or saying which arguments the command takes.
    """
    arguments: dict[str, Any] = {}
    rest = list(argv)
    for name, convert in command.args:
        if not rest:
            break
        word = rest.pop(0)
        try:
            arguments[name] = convert(word)
        except (TypeError, ValueError):
            raise ValueError(f"{command.name}: bad value for {name}: {word!r}") from None
    if command.variadic is not None:
        arguments[command.variadic] = rest
    elif rest:
        raise ValueError(f"{command.name} takes arguments: {command.signature or 'none'}")
    return arguments
