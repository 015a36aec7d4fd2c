"""``tidings inspect`` and ``tidings control``: remote commands to workers (Tidings or Celery).

``tidings inspect stats``, ``tidings control rate_limit proj.add 10/s``: the
commands, their arguments and the output are Celery's (``celery inspect``,
``celery control``), so what people know carries over: one ``->  node: OK``
block per worker as replies arrive, then ``N nodes online.``; ``--json``
prints the replies as one JSON document instead.  The commands and their
arguments come from :data:`tidings.protocol.control.COMMANDS`.

Differences from Celery:

- ``control shutdown`` does not wait for replies that never come (workers
  do not answer it): it says the request was sent and exits 0.
- A wrong argument is a usage error naming it (exit 2), not a traceback.
- ``control revoke`` also takes ``--terminate`` and ``--signal``, and
  ``control`` also sends the read-only commands (``control ping``).
"""

from __future__ import annotations

import json as _json
import signal as _signal
from pprint import pformat
from typing import Any

import click
from kombu.exceptions import OperationalError

from ..protocol.control import ALIASES, COMMANDS, Command, compile_arguments
from .common import EX_UNAVAILABLE, CommandError, Context, broker_unreachable

__all__ = ["control", "format_reply", "inspect"]

#: Spaces a reply's body is indented by under its node line (Celery's).
INDENT = 4


def _indent(text: str, n: int = INDENT) -> str:
    return "\n".join(" " * n + line for line in text.split("\n"))


def _pretty(reply: Any) -> tuple[bool, str]:
    """``(ok, text)`` of one worker's reply, laid out as Celery's CLI does."""
    if isinstance(reply, list):
        return True, "\n".join(f"* {item}" for item in reply) if reply else "- empty -"
    if isinstance(reply, dict):
        if "ok" in reply:
            return True, _indent(_pretty(reply["ok"])[1])
        if "error" in reply:
            return False, _indent(_pretty(reply["error"])[1])
        return True, _json.dumps(reply, sort_keys=True, indent=4, default=repr)
    if isinstance(reply, str):
        return True, reply
    return True, pformat(reply)


def format_reply(node: str, reply: Any) -> str:
    """The block printed for one worker's reply: ``->  node: OK`` and the body."""
    good, body = _pretty(reply)
    status = click.style("OK", fg="green", bold=True) if good else click.style(
        "ERROR", fg="red", bold=True)
    head = f"->  {click.style(node + ':', fg='cyan', bold=True)} {status}"
    return f"{head}\n{_indent(body)}"


def _destination(ctx: click.Context, param: click.Parameter, value: str | None
                 ) -> list[str] | None:
    if not value:
        return None
    return [n.strip() for n in value.split(",") if n.strip()]


def _command(kind: str, name: str) -> Command:
    """The command ``name``; ``control`` also sends read-only ones (``control ping``)."""
    command = COMMANDS.get(ALIASES.get(name, name))
    if command is None or (kind == "inspect" and command.kind != kind):
        names = ", ".join(sorted(c.name for c in COMMANDS.values()
                                 if c.kind == kind and c.visible))
        raise click.UsageError(f"no {kind} command {name!r}; {kind} commands: {names}")
    return command


def _list_commands(kind: str) -> Any:
    def show(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if not value or ctx.resilient_parsing:
            return
        formatter = click.HelpFormatter()
        with formatter.section(f"{kind.capitalize()} commands"):
            formatter.write_dl([(f"{c.name} {c.signature}".strip(), c.help)
                                for c in COMMANDS.values() if c.kind == kind and c.visible])
        click.echo(formatter.getvalue(), nl=False)
        ctx.exit()

    return click.option("--list", "list_", is_flag=True, expose_value=False, is_eager=True,
                        callback=show, help=f"List the {kind} commands and exit.")


def _options(fun: Any) -> Any:
    fun = click.option("-j", "--json", "as_json", is_flag=True,
                       help="Print the replies as JSON.")(fun)
    fun = click.option("-d", "--destination", callback=_destination, metavar="NODE[,NODE]",
                       help="Only these workers (default: all).")(fun)
    fun = click.option("-t", "--timeout", type=click.FloatRange(min=0.01), default=None,
                       help="Seconds to wait for replies  [default: 1.0; ping 0.2].")(fun)
    return fun


def _send(obj: Context, command: Command, arguments: dict[str, Any],
          destination: list[str] | None, timeout: float | None, as_json: bool) -> None:
    app = obj.app
    timeout = command.default_timeout if timeout is None else timeout

    def on_reply(reply: dict[str, Any]) -> None:
        for node, answer in reply.items():
            click.echo(format_reply(node, answer))

    try:
        replies = app.control.broadcast(
            command.name, arguments=arguments, destination=destination, reply=True,
            timeout=timeout, callback=None if as_json else on_reply)
    except OperationalError as exc:
        raise broker_unreachable(app, exc) from exc
    if not replies:
        raise CommandError(f"no reply within {timeout:g}s"
                           + (f" from {', '.join(destination)}" if destination else ""),
                           exit_code=EX_UNAVAILABLE)
    if as_json:
        if command.kind == "inspect":
            merged: dict[str, Any] = {}
            for reply in replies:
                merged.update(reply)
            click.echo(_json.dumps(merged, default=repr))
        else:
            click.echo(_json.dumps(replies, default=repr))
        return
    count = len(replies)
    click.echo(f"\n{count} node{'s' if count != 1 else ''} online.")


def _compiled(command: Command, args: tuple[str, ...]) -> dict[str, Any]:
    try:
        return compile_arguments(command, list(args))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@click.command("inspect", context_settings={"ignore_unknown_options": True})
@click.argument("command_name", metavar="COMMAND")
@click.argument("args", nargs=-1)
@_list_commands("inspect")
@_options
@click.pass_obj
def inspect(obj: Context, command_name: str, args: tuple[str, ...],
            destination: list[str] | None, timeout: float | None, as_json: bool) -> None:
    """Ask workers a read-only COMMAND (stats, active, registered ...; --list)."""
    command = _command("inspect", command_name)
    _send(obj, command, _compiled(command, args), destination, timeout, as_json)


@click.command("control", context_settings={"ignore_unknown_options": True})
@click.argument("command_name", metavar="COMMAND")
@click.argument("args", nargs=-1)
@_list_commands("control")
@click.option("--terminate", is_flag=True, help="revoke: also kill the task if running.")
@click.option("--signal", "signal_name", default=None,
              help="revoke --terminate: the signal  [default: SIGTERM].")
@_options
@click.pass_obj
def control(obj: Context, command_name: str, args: tuple[str, ...], terminate: bool,
            signal_name: str | None, destination: list[str] | None, timeout: float | None,
            as_json: bool) -> None:
    """Send workers a COMMAND that changes them (rate_limit, pool_grow ...; --list)."""
    command = _command("control", command_name)
    arguments = _compiled(command, args)
    if (terminate or signal_name) and command.name != "revoke":
        raise click.UsageError("--terminate and --signal are options of revoke only")
    if command.name in ("revoke", "terminate") and not arguments.get("task_id"):
        raise click.UsageError(f"{command.name} needs at least one task id")
    signal_name = signal_name or arguments.get("signal")
    if signal_name is not None:
        name = str(signal_name).upper()
        if not name.isdigit() and not hasattr(_signal, name if name.startswith("SIG")
                                              else "SIG" + name):
            raise click.BadParameter(f"unknown signal {signal_name!r}",
                                     param_hint="'--signal'")
        arguments["signal"] = name
    if terminate:
        arguments["terminate"] = True
    if command.name == "shutdown":
        try:
            obj.app.control.broadcast("shutdown", destination=destination)
        except OperationalError as exc:
            raise broker_unreachable(obj.app, exc) from exc
        click.echo("Shutdown sent to " + (", ".join(destination) if destination
                                          else "all workers")
                   + " (workers do not reply to it).")
        return
    _send(obj, command, arguments, destination, timeout, as_json)
