"""``tidings control``: remote-control commands to workers (Tidings or Celery)."""

from __future__ import annotations

from typing import Any

import click
from kombu.exceptions import OperationalError

from .common import EX_UNAVAILABLE, CommandError, Context, broker_unreachable


def _destination(ctx: click.Context, param: click.Parameter, value: str | None
                 ) -> list[str] | None:
    if not value:
        return None
    return [n.strip() for n in value.split(",") if n.strip()]


def _common(fun: Any) -> Any:
    fun = click.option("-d", "--destination", callback=_destination, metavar="NODE[,NODE]",
                       help="Only these workers (default: all).")(fun)
    fun = click.option("-t", "--timeout", type=click.FloatRange(min=0.1), default=1.0,
                       show_default=True, help="Seconds to wait for replies.")(fun)
    return fun


@click.group("control")
def control() -> None:
    """Send a remote-control command to workers and print each reply."""


def _run(obj: Context, command: str, destination: list[str] | None, timeout: float,
         arguments: dict[str, Any] | None = None) -> None:
    app = obj.app
    try:
        replies = app.control.broadcast(command, arguments=arguments, destination=destination,
                                        reply=True, timeout=timeout)
    except OperationalError as exc:
        raise broker_unreachable(app, exc) from exc
    if not replies:
        raise CommandError(f"no reply within {timeout:g}s"
                           + (f" from {', '.join(destination)}" if destination else ""),
                           exit_code=EX_UNAVAILABLE)
    for reply in replies:
        for node, answer in reply.items():
            if isinstance(answer, dict) and "error" in answer:
                click.echo(f"-> {node}: ERROR {answer['error']}")
            elif isinstance(answer, dict) and "ok" in answer:
                click.echo(f"-> {node}: OK {answer['ok']}")
            else:
                click.echo(f"-> {node}: OK" + (f" {answer}" if answer is not None else ""))
    nodes = len(replies)
    click.echo(f"{nodes} node{'s' if nodes != 1 else ''} replied.")


def _simple(name: str, help_text: str) -> Any:
    @control.command(name, help=help_text)
    @_common
    @click.pass_obj
    def command(obj: Context, destination: list[str] | None, timeout: float) -> None:
        _run(obj, name, destination, timeout)

    return command


_simple("enable_events", "Switch task events on.")
_simple("disable_events", "Switch task events off.")
_simple("ping", "Ask workers to answer.")
_simple("heartbeat", "Ask workers to send a heartbeat event now.")


@control.command("revoke")
@click.argument("task_ids", nargs=-1, required=True)
@click.option("--terminate", is_flag=True, help="Also kill the task if it is running.")
@click.option("--signal", "signal_name", default="SIGTERM", show_default=True,
              help="Signal used by --terminate.")
@_common
@click.pass_obj
def revoke(obj: Context, task_ids: tuple[str, ...], terminate: bool, signal_name: str,
           destination: list[str] | None, timeout: float) -> None:
    """Revoke tasks (they will not run); --terminate kills running ones."""
    import signal as _signal

    name = signal_name.upper()
    if not name.isdigit() and not hasattr(_signal, name if name.startswith("SIG")
                                          else "SIG" + name):
        raise click.BadParameter(f"unknown signal {signal_name!r}", param_hint="'--signal'")
    _run(obj, "revoke", destination, timeout,
         {"task_id": list(task_ids), "terminate": terminate, "signal": name})
