"""``tidings events``: dump events, run a snapshot camera, or watch the live monitor.

Mode precedence is Celery's: ``--dump`` (or ``--json``), then ``--camera``,
then the live monitor.  ``-d`` is ``--detach``; ``--dump`` has no short flag
(in Celery both claimed ``-d``).  All three modes read one
:class:`~tidings.events.source.EventSource` (the broker, or ``--replay``),
which applies the ``--type``/``--hostname``/``--task-name`` filters.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import time
from typing import Any

import click
from kombu.exceptions import OperationalError
from kombu.utils.imports import symbol_by_name

from ..daemon import DaemonError, Pidfile, drop_privileges, parse_umask
from ..daemon import detach as daemonize
from ..events.dumper import Dumper, EventFilter
from ..events.ingest import format_causes
from ..events.snapshot import stop_camera
from ..events.source import EventSource, open_source
from ..events.subscription import Subscription
from ..transport import Status
from ..utils.rates import parse_rate
from .common import (
    CommandError,
    Context,
    broker_unreachable,
    set_process_title,
    setup_logging,
    stop_on_signals,
    wait_for_broker,
)
from .history import DEFAULT, history
from .subscribe import subscription_from, subscription_options

logger = logging.getLogger("tidings.cli.events")
logger.setLevel(logging.INFO)  # its "-> ..." progress lines show at the default level


def _check_rate(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    try:
        parse_rate(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _check_positive(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and value <= 0:
        raise click.BadParameter("must be positive")
    return value


def _check_umask(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    try:
        parse_umask(value)
    except DaemonError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@click.command("events")
@click.option("--dump", is_flag=True, help="Print every event as it arrives (Celery's format).")
@click.option("--json", "json_lines", is_flag=True,
              help="Print events as NDJSON, one object per line (implies --dump).")
@click.option("--type", "types", multiple=True, metavar="GLOB",
              help="Only events whose type matches (repeatable), e.g. 'task-*'.")
@click.option("--hostname", "hostnames", multiple=True, metavar="GLOB",
              help="Only events from matching hosts (repeatable).")
@click.option("--task-name", "task_names", multiple=True, metavar="GLOB",
              help="Only task events of matching task names (repeatable).")
@click.option("--replay", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Read events from an NDJSON file instead of the broker.")
@click.option("-c", "--camera", metavar="CLASS",
              help="Snapshot camera class (dotted path), e.g. tidings.cameras.SQLCamera.")
@click.option("-F", "--frequency", "--freq", "frequency", type=float, default=1.0,
              show_default=True, callback=_check_positive, help="Seconds between snapshots.")
@click.option("-r", "--maxrate", callback=_check_rate, metavar="RATE",
              help="Snapshot rate limit: N/s, N/m, N/h or N (per second).")
@click.option("--db", envvar="TIDINGS_CAMERA_DB", metavar="URL", is_flag=False,
              flag_value=DEFAULT,
              help="Database URL for tidings.cameras.SQLCamera (default: a SQLite file); "
                   "the live monitor keeps its history there (--db alone: a file of yours).")
@click.option("--retention", envvar="TIDINGS_CAMERA_RETENTION", metavar="DURATION",
              help="SQLCamera: delete rows older than this (e.g. 7d, 12h; default 7d).")
@click.option("--stats-interval", type=float, callback=_check_positive, metavar="SECONDS",
              help="--dump: a line on stderr every SECONDS with events received, "
                   "skipped and lost.")
@click.option("--max-tasks", type=int, callback=_check_positive,
              help="Tasks kept in memory (State bound, default 10000).")
@click.option("--refresh", type=float, default=0.5, show_default=True,
              callback=_check_positive, help="Live monitor: seconds between screen updates.")
@click.option("-d", "--detach", is_flag=True, help="Run the camera in the background.")
@click.option("--pidfile", type=click.Path(dir_okay=False), help="Pid file (camera mode).")
@click.option("-f", "--logfile", type=click.Path(dir_okay=False),
              help="Log file (default: stderr).")
@click.option("--uid", help="Drop privileges to this user (name or number).")
@click.option("--gid", help="Drop privileges to this group (name or number).")
@click.option("--umask", callback=_check_umask, help="File creation mask, e.g. 022.")
@click.option("--workdir", "daemon_workdir", type=click.Path(file_okay=False),
              help="Working directory of the detached camera.")
@subscription_options
@click.pass_obj
def events(obj: Context, dump: bool, json_lines: bool, types: tuple[str, ...],
           hostnames: tuple[str, ...], task_names: tuple[str, ...], replay: str | None,
           camera: str | None, frequency: float, maxrate: str | None, db: str | None,
           retention: str | None, stats_interval: float | None, max_tasks: int | None,
           refresh: float, detach: bool,
           pidfile: str | None,
           logfile: str | None, uid: str | None, gid: str | None, umask: str | None,
           daemon_workdir: str | None, durable_queue: str | None, stream: str | None,
           offset: str, stream_retention: str | None, stream_max_bytes: str | None) -> None:
    """Watch the cluster live, dump its events (--dump), or photograph it (--camera)."""
    event_filter = EventFilter(types, hostnames, task_names)
    if replay and (durable_queue or stream):
        raise click.UsageError("--replay reads a file: --queue and --stream do not apply")
    subscription = subscription_from(obj.app, durable_queue, stream, offset,
                                         stream_retention, stream_max_bytes)
    daemon_opts = {"--detach": detach, "--pidfile": pidfile, "--uid": uid, "--gid": gid,
                   "--umask": umask, "--workdir": daemon_workdir}
    dump = dump or json_lines
    if dump or not camera:
        given = [name for name, value in daemon_opts.items() if value]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise click.UsageError(f"{', '.join(given)} {verb} only with --camera")
    if stats_interval and not dump:
        raise click.UsageError("--stats-interval applies only with --dump or --json")
    if dump:
        set_process_title("tidings events:dump")
        if logfile:
            setup_logging(obj.loglevel, logfile)
        return run_dump(obj, json_lines, event_filter, replay, stats_interval, subscription)
    if camera:
        db = None if db == DEFAULT else db  # --db alone: the camera's own default
        return run_camera(obj, camera, frequency, maxrate, db, retention, max_tasks,
                          event_filter, replay, detach=detach, pidfile=pidfile,
                          logfile=logfile, uid=uid, gid=gid, umask=umask,
                          workdir=daemon_workdir, subscription=subscription)
    if db and replay:
        raise click.UsageError("--db keeps a live monitor's history: not with --replay")
    return run_monitor(obj, max_tasks, event_filter, replay, refresh, subscription, db)


def _open_source(obj: Context, replay: str | None, event_filter: EventFilter,
                 subscription: Subscription | None, **kwargs: Any) -> EventSource:
    return open_source(obj.app, replay, event_filter or None, subscription=subscription,
                       **kwargs)


def run_monitor(obj: Context, max_tasks: int | None, event_filter: EventFilter,
                replay: str | None, refresh: float,
                subscription: Subscription | None = None, db: str | None = None) -> None:
    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        raise click.UsageError("the live monitor needs a terminal; to print events to a "
                               "file or a pipe, use --dump (or --json)")
    from ..top import run_top

    set_process_title("tidings events:top")
    # A monitor waits for its broker (and says so on screen) instead of giving up.
    source = _open_source(obj, replay, event_filter, subscription, connect_retries=None)
    state = obj.app.events.State(**({"max_tasks_in_memory": max_tasks} if max_tasks else {}))
    with history(state, db, max_tasks):
        logging.getLogger().handlers.clear()  # logs would scribble over the screen
        logging.getLogger().addHandler(logging.NullHandler())
        run_top(obj.app, source, refresh=refresh, state=state)


def _status(status: Status) -> None:
    click.echo(f"-> {status}", err=True)


def run_dump(obj: Context, json_lines: bool, event_filter: EventFilter,
             replay: str | None, stats_interval: float | None = None,
             subscription: Subscription | None = None) -> None:
    # A durable subscription acknowledges each message once its events are handed on:
    # their lines must be written out by then, or a SIGKILL would lose acknowledged
    # events with the dumper's buffer (a line written per event, the price of that).
    durable = subscription is not None and subscription.durable and not replay
    dumper = Dumper(sys.stdout, json_lines=json_lines,  # the source filters
                    line_buffered=True if durable else None)
    source = _open_source(obj, replay, event_filter, subscription)
    stop = stop_on_signals()
    on_tick = dumper.tick
    if stats_interval:
        on_tick = _StatsLine(source, stats_interval, dumper.tick)
    try:
        if not replay:
            click.echo("-> evdump: starting capture...", err=True)
        try:
            source.run(dumper.on_event, stop, on_status=_status, on_tick=on_tick)
        except OperationalError as exc:
            raise broker_unreachable(obj.app, exc) from exc
        if not replay:
            _report_skipped(source)
            if source.losses:
                click.echo(f"-> {_lost_text(source)}", err=True)
    finally:
        dumper.flush()


def _lost_text(source: EventSource) -> str:
    losses = source.losses
    return f"lost {losses.total} events ({losses})" if losses else "lost 0 events"


class _StatsLine:
    """``on_tick``: the dumper's tick, and every ``interval`` seconds one line of counts."""

    def __init__(self, source: EventSource, interval: float, tick: Any) -> None:
        self.source, self.interval, self.tick = source, interval, tick
        self.due = time.monotonic() + interval

    def __call__(self) -> None:
        self.tick()
        now = time.monotonic()
        if now >= self.due:
            self.due = now + self.interval
            source = self.source
            click.echo(f"-> stats: received {source.event_count} events, skipped "
                       f"{sum(source.errors.values())}, {_lost_text(source)}", err=True)


def _report_skipped(source: EventSource) -> None:
    if source.errors:
        click.echo(f"-> skipped malformed input ({format_causes(source.errors)})", err=True)


def load_camera(path: str) -> type:
    try:
        cls = symbol_by_name(path)
    except (ImportError, AttributeError, ValueError) as exc:
        raise CommandError(f"cannot load camera {path!r}: {exc}") from exc
    if not (callable(cls) and callable(getattr(cls, "install", None))
            and callable(getattr(cls, "cancel", None))):
        raise CommandError(
            f"{path!r} is not a camera: a camera is a class with install() and cancel() "
            "(subclass tidings.events.snapshot.Polaroid)")
    return cls


def _camera_kwargs(cls: type, db: str | None, retention: str | None) -> dict[str, Any]:
    extra = {"db": db, "retention": retention}
    given = {k: v for k, v in extra.items() if v is not None}
    if not given:
        return {}
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = [k for k in given if k not in params and not takes_any]
    if unknown:
        raise click.UsageError(
            f"--{unknown[0]} is not an option of camera {cls.__module__}.{cls.__name__}")
    return given


def run_camera(obj: Context, camera: str, frequency: float, maxrate: str | None,
               db: str | None, retention: str | None, max_tasks: int | None,
               event_filter: EventFilter, replay: str | None, *, detach: bool,
               pidfile: str | None, logfile: str | None, uid: str | None, gid: str | None,
               umask: str | None, workdir: str | None,
               subscription: Subscription | None = None) -> None:
    app = obj.app
    cls = load_camera(camera)
    extra = _camera_kwargs(cls, db, retention)
    if retention is not None:
        from ..cameras import parse_duration

        try:
            parse_duration(retention)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--retention'") from None
    if not replay:
        # Say so now, in the terminal, rather than in a daemon's log.
        wait_for_broker(app)
    # Import now what the camera loads lazily: after --uid the code's folder
    # may no longer be readable.
    app.control  # noqa: B018 - builds the remote-control client used for wake-ups
    try:
        import setproctitle  # noqa: F401
    except ImportError:
        pass
    pid_lock = None
    try:
        if detach:
            pid_lock = daemonize(logfile=logfile, pidfile=pidfile, uid=uid, gid=gid,
                                 umask=umask, workdir=workdir)
            setup_logging(obj.loglevel)  # stderr is the log file now
        else:
            if logfile:
                setup_logging(obj.loglevel, logfile)
            drop_privileges(uid, gid)
            mask = parse_umask(umask)
            if mask is not None:
                os.umask(mask)
            if pidfile:
                pid_lock = Pidfile(pidfile)
                pid_lock.acquire()
    except DaemonError as exc:
        raise CommandError(str(exc)) from exc
    set_process_title("tidings events:cam")
    try:
        _run_camera(app, cls, frequency, maxrate, extra, max_tasks, event_filter, replay,
                    subscription)
    finally:
        if pid_lock is not None:
            pid_lock.release()


def _run_camera(app: Any, cls: type, frequency: float, maxrate: str | None,
                extra: dict[str, Any], max_tasks: int | None, event_filter: EventFilter,
                replay: str | None, subscription: Subscription | None = None) -> None:
    state = app.events.State(**({"max_tasks_in_memory": max_tasks} if max_tasks else {}))
    try:
        cam = cls(state, app=app, freq=frequency, maxrate=maxrate, **extra)
    except Exception as exc:
        raise CommandError(f"cannot start camera {cls.__name__}: {exc}") from exc
    source = open_source(app, replay, event_filter or None, subscription=subscription)
    logger.info("-> evcam: Taking snapshots with %s.%s (every %s secs.)",
                cls.__module__, cls.__qualname__, frequency)
    stop = stop_on_signals()
    cam.install()
    try:
        source.run(state.event, stop, on_status=lambda status: logger.info("-> %s", status))
        if source.errors and not replay:
            logger.warning("-> skipped malformed input (%s)", format_causes(source.errors))
        if source.losses and not replay:
            logger.warning("-> %s", _lost_text(source))
    finally:
        stop_camera(cam)
        logger.info("-> evcam: stopped after %s shots", getattr(cam, "shots", "?"))
