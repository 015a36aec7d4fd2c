"""``tidings web``: the web monitor, a drop-in for Flower.

Every option can also come from ``TIDINGS_WEB_<OPTION>``, and the options
Flower has too from Flower's spelling (``--basic_auth``, ``--url_prefix``,
``--max_tasks``, ``--max_workers``) and its ``FLOWER_<OPTION>`` variables, so
a deployment switches by changing its command.  Secrets given on the
command line are hidden from ``ps`` (the process title); the environment is
the better place for them.
"""

from __future__ import annotations

import click

from ..web.monitor import DEFAULT_ADDRESS, DEFAULT_PORT
from .common import CommandError, Context, set_process_title, stop_on_signals
from .history import DEFAULT, history
from .subscribe import subscription_from, subscription_options

SECRET_OPTIONS = ("--basic-auth", "--basic_auth", "--api-token", "--api_token")


def _env(name: str, flower: bool = True) -> list[str]:
    return [f"TIDINGS_WEB_{name}", *([f"FLOWER_{name}"] if flower else [])]


def _prefix(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    value = (value or "").strip().strip("/")
    if not value:
        return ""
    if any(c in value for c in "?#\\ ") or ".." in value.split("/"):
        raise click.BadParameter(f"{value!r}: expected a path such as /flower")
    return "/" + value


@click.command("web")
@click.option("--address", default=DEFAULT_ADDRESS, show_default=True, envvar=_env("ADDRESS"),
              help="Address to listen on (loopback unless told otherwise).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT,
              show_default=True, envvar=_env("PORT"), help="Port to listen on.")
@click.option("--url-prefix", "--url_prefix", "url_prefix", default="", callback=_prefix,
              envvar=_env("URL_PREFIX"), help="Serve under this path (behind a proxy).")
@click.option("--basic-auth", "--basic_auth", "basic_auth", envvar=_env("BASIC_AUTH"),
              metavar="USER:PASS[,USER:PASS...]", help="Users allowed in (pages and API).")
@click.option("--api-token", "--api_token", "api_token", envvar=_env("API_TOKEN", False),
              metavar="TOKEN", help="Also let the API in with 'Authorization: Bearer TOKEN'.")
@click.option("--read-only", "--read_only", "read_only", is_flag=True,
              envvar=_env("READ_ONLY", False),
              help="No actions: hidden from pages, 403 in the API.")
@click.option("--max-tasks", "--max_tasks", "max_tasks", type=click.IntRange(min=1),
              default=100_000, show_default=True, envvar=_env("MAX_TASKS"),
              help="Tasks kept in memory.")
@click.option("--max-workers", "--max_workers", "max_workers", type=click.IntRange(min=1),
              default=5000, show_default=True, envvar=_env("MAX_WORKERS"),
              help="Workers kept in memory.")
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False),
              envvar=_env("CERTFILE"), help="TLS certificate (with --keyfile): serve HTTPS.")
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False),
              envvar=_env("KEYFILE"), help="TLS private key.")
@click.option("--db", envvar=_env("DB", False), metavar="URL", is_flag=False, flag_value=DEFAULT,
              help="Keep history in this database (SQLite, PostgreSQL): loaded at start, "
                   "written every second; --db alone: a SQLite file of yours.")
@subscription_options
@click.pass_obj
def web(obj: Context, address: str, port: int, url_prefix: str, basic_auth: str | None,
        api_token: str | None, read_only: bool, max_tasks: int, max_workers: int,
        certfile: str | None, keyfile: str | None, durable_queue: str | None,
        stream: str | None, offset: str, stream_retention: str | None,
        stream_max_bytes: str | None, db: str | None) -> None:
    """Serve the web monitor: live pages and Flower's REST API."""
    from ..events.source import BrokerSource
    from ..web import Access, WebMonitor, WebOptions, parse_users

    if bool(certfile) != bool(keyfile):
        raise CommandError("--certfile and --keyfile go together")
    try:
        users = parse_users(basic_auth)
    except ValueError as exc:
        raise CommandError(f"--basic-auth: {exc}") from None
    if api_token is not None and not api_token.strip():
        raise CommandError("--api-token: the token is empty")
    access = Access(users=users, api_token=api_token, read_only=read_only)
    options = WebOptions(address=address, port=port, url_prefix=url_prefix,
                         max_tasks=max_tasks, max_workers=max_workers, certfile=certfile,
                         keyfile=keyfile)
    subscription = subscription_from(obj.app, durable_queue, stream, offset,
                                     stream_retention, stream_max_bytes)
    monitor = WebMonitor(obj.app, access, options,
                         source=BrokerSource(obj.app, connect_retries=None,
                                             subscription=subscription))
    set_process_title("tidings web", SECRET_OPTIONS)
    stop = stop_on_signals()
    if address not in ("127.0.0.1", "::1", "localhost") and not access.protected:
        click.echo(f"-> warning: listening on {address} with no --basic-auth: anyone who "
                   "reaches it can see and control the cluster", err=True)

    def ready(url: str) -> None:
        mode = " (read-only)" if read_only else ""
        click.echo(f"-> web: {url}/{mode}, events from {monitor.source.label}", err=True)

    with history(monitor.state, db, max_tasks) as kept:
        if kept is not None:
            monitor.restored()
        try:
            monitor.run(stop, on_status=lambda status: click.echo(f"-> {status}", err=True),
                        on_ready=ready)
        except OSError as exc:
            raise CommandError(f"cannot listen on {address}:{port}: {exc}") from exc
