"""Built-in cameras.

``SQLCamera`` keeps the cluster in two SQL tables a user can query directly::

    tidings events --camera tidings.cameras.SQLCamera --db postgresql://localhost/ops

Each shot upserts every worker and only the tasks that changed since the
previous shot; every ``cleanup_freq`` seconds, rows older than the retention
(``--retention``, default 7 days) are deleted.  Needs SQLAlchemy 2
(``pip install 'tidings[sql]'``) and the database's driver.

Tables (see ``docs/cameras.md``): ``tidings_tasks`` (one row per task, keyed by
``uuid``, indexed on ``state``, ``name``, ``worker`` and ``received``) and
``tidings_workers`` (one row per worker, keyed by ``hostname``).

:class:`History` gives a monitor (``tidings events --db``, ``tidings web
--db``) a history that survives a restart: it loads the most recent tasks
and the workers from those tables into State before the monitor goes live,
then keeps writing them with an ``SQLCamera`` in the background.  Flower
persists by pickling its whole state into a shelve file at exit (lost on
SIGKILL, unreadable across versions); this is written every second, is
plain SQL, and a SIGKILL loses at most the last second.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any

from .events.snapshot import Polaroid, stop_camera
from .protocol.events import TASK_TIME_FIELDS
from .transport import default_data_dir

if TYPE_CHECKING:
    from .events.state import State, Task, Worker

logger = logging.getLogger("tidings.cameras")

DEFAULT_RETENTION = 7 * 24 * 3600.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: str | float | int | None) -> float | None:
    """``90``, ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` -> seconds (None stays None)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(value).lower())
        if not match:
            raise ValueError(f"invalid duration {value!r} (e.g. 3600, 30m, 12h, 7d)")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


def default_db_url() -> str:
    return f"sqlite:///{default_data_dir().parent / 'camera.sqlite'}"


def default_history_url() -> str:
    """Where a monitor's ``--db`` without a URL keeps its history."""
    return f"sqlite:///{default_data_dir().parent / 'history.sqlite'}"


#: One float column per task event time (``sent`` ... ``revoked``).
TASK_TIMES = TASK_TIME_FIELDS
TASK_TEXT = ("args", "kwargs", "result", "exception", "traceback")


def _metadata() -> Any:
    from sqlalchemy import Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text

    metadata = MetaData()
    Table(
        "tidings_tasks", metadata,
        Column("uuid", String(64), primary_key=True),
        Column("name", String(255)),
        Column("state", String(32)),
        Column("worker", String(255)),
        Column("client", String(255)),
        *(Column(name, Float) for name in TASK_TIMES),
        *(Column(name, Text) for name in TASK_TEXT),
        Column("eta", String(64)),
        Column("expires", String(64)),
        Column("retries", Integer),
        Column("runtime", Float),
        Column("root_id", String(64)),
        Column("parent_id", String(64)),
        Column("exchange", String(255)),
        Column("routing_key", String(255)),
        Column("timestamp", Float),
        Column("clock", Integer),
        Column("updated_at", Float, nullable=False),
        Index("ix_tidings_tasks_state", "state"),
        Index("ix_tidings_tasks_name", "name"),
        Index("ix_tidings_tasks_worker", "worker"),
        Index("ix_tidings_tasks_received", "received"),
        Index("ix_tidings_tasks_updated_at", "updated_at"),
    )
    Table(
        "tidings_workers", metadata,
        Column("hostname", String(255), primary_key=True),
        Column("pid", Integer),
        Column("alive", Boolean),
        Column("freq", Float),
        Column("active", Integer),
        Column("processed", Integer),
        Column("loadavg", String(64)),
        Column("sw_ident", String(64)),
        Column("sw_ver", String(64)),
        Column("sw_sys", String(64)),
        Column("last_heartbeat", Float),
        Column("updated_at", Float, nullable=False),
    )
    return metadata


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _text(value: Any, limit: int | None = None) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text[:limit] if limit else text


def task_row(task: Task, now: float) -> dict[str, Any]:
    row: dict[str, Any] = {
        "uuid": task.uuid,
        "name": _text(task.name, 255),
        "state": _text(task.state, 32),
        "worker": task.worker.hostname if task.worker is not None else None,
        "client": _text(task.client, 255),
        "eta": _text(task.eta, 64),
        "expires": _text(task.expires, 64),
        "retries": _int_or_none(task.retries),
        "runtime": _float_or_none(task.runtime),
        "root_id": _text(task.root_id, 64),
        "parent_id": _text(task.parent_id, 64),
        "exchange": _text(task.exchange, 255),
        "routing_key": _text(task.routing_key, 255),
        "timestamp": _float_or_none(task.timestamp),
        "clock": _int_or_none(task.clock),
        "updated_at": now,
    }
    for name in TASK_TIMES:
        row[name] = _float_or_none(getattr(task, name))
    for name in TASK_TEXT:
        row[name] = _text(getattr(task, name))
    return row


def worker_row(worker: Worker, now: float) -> dict[str, Any]:
    return {
        "hostname": worker.hostname,
        "pid": _int_or_none(worker.pid),
        "alive": worker.alive,
        "freq": _float_or_none(worker.freq),
        "active": _int_or_none(worker.active),
        "processed": _int_or_none(worker.processed),
        "loadavg": json.dumps(worker.loadavg) if worker.loadavg is not None else None,
        "sw_ident": _text(worker.sw_ident, 64),
        "sw_ver": _text(worker.sw_ver, 64),
        "sw_sys": _text(worker.sw_sys, 64),
        "last_heartbeat": worker.heartbeats[-1] if worker.heartbeats else None,
        "updated_at": now,
    }


class SQLCamera(Polaroid):
    """Upserts the state into ``tidings_tasks`` and ``tidings_workers`` at each shot."""

    batch_size = 1000

    def __init__(self, state: State, freq: float = 1.0, maxrate: Any = None,
                 cleanup_freq: float = 3600.0, timer: Any = None, app: Any = None,
                 db: str | None = None, retention: Any = None) -> None:
        super().__init__(state, freq=freq, maxrate=maxrate, cleanup_freq=cleanup_freq,
                         timer=timer, app=app)
        try:
            import sqlalchemy
        except ImportError:
            raise RuntimeError(
                "SQLCamera needs SQLAlchemy 2: pip install 'tidings[sql]'") from None
        self.db_url = db or os.environ.get("TIDINGS_CAMERA_DB") or default_db_url()
        self.retention = parse_duration(
            retention if retention is not None
            else os.environ.get("TIDINGS_CAMERA_RETENTION")) or DEFAULT_RETENTION
        if self.db_url.startswith("sqlite:///"):
            folder = os.path.dirname(self.db_url[len("sqlite:///"):])
            if folder:
                os.makedirs(folder, exist_ok=True)
        self.engine = sqlalchemy.create_engine(self.db_url, future=True)
        self.metadata = _metadata()
        self.tasks_table = self.metadata.tables["tidings_tasks"]
        self.workers_table = self.metadata.tables["tidings_workers"]
        self.metadata.create_all(self.engine)
        #: Duration (s) and number of task rows of the last shot.
        self.last_shot: tuple[float, int] = (0.0, 0)

    def _upsert(self, conn: Any, table: Any, key: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            insert = None
        if insert is None:  # portable fallback: delete then insert
            keys = [r[key] for r in rows]
            conn.execute(table.delete().where(table.c[key].in_(keys)))
            conn.execute(table.insert(), rows)
            return
        stmt = insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=[key],
            set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name != key},
        )
        for start in range(0, len(rows), self.batch_size):
            conn.execute(stmt, rows[start:start + self.batch_size])

    def on_shutter(self, state: State) -> None:
        started = time.perf_counter()
        now = time.time()
        changed = getattr(state, "changed_tasks", None)
        tasks = state.tasks
        if changed is None:
            selected = list(tasks.values())
        else:
            selected = [t for t in map(tasks.get, changed) if t is not None]
        task_rows = [task_row(t, now) for t in selected]
        worker_rows = [worker_row(w, now) for w in state.workers.values()]
        with self.engine.begin() as conn:
            self._upsert(conn, self.workers_table, "hostname", worker_rows)
            self._upsert(conn, self.tasks_table, "uuid", task_rows)
        self.last_shot = (time.perf_counter() - started, len(task_rows))
        logger.debug("SQLCamera: wrote %d tasks and %d workers in %.3fs", len(task_rows),
                     len(worker_rows), self.last_shot[0])

    def on_cleanup(self) -> None:
        cutoff = time.time() - self.retention
        with self.engine.begin() as conn:
            gone = conn.execute(
                self.tasks_table.delete().where(self.tasks_table.c.updated_at < cutoff))
            conn.execute(
                self.workers_table.delete().where(self.workers_table.c.updated_at < cutoff))
        logger.info("SQLCamera: removed %s tasks older than %ss", gone.rowcount, self.retention)

    def cancel(self, final: bool = True) -> None:
        super().cancel(final)
        self.engine.dispose()


#: The event that puts a task in each time field's state, in lifecycle order.
_TIME_EVENTS = tuple((name, f"task-{name}") for name in TASK_TIMES)
#: Row fields carried on every replayed event of a task.
_TASK_FIELDS = ("name", "args", "kwargs", "result", "exception", "traceback", "eta",
                "expires", "retries", "runtime", "root_id", "parent_id", "exchange",
                "routing_key", "client")


class History:
    """A monitor's State, loaded from and written to the SQL camera's tables.

    ``History(state, db)``; :meth:`load` before the monitor consumes (it
    replays each stored task's times as events through State's own rules,
    newest ``max_tasks`` tasks, and each worker's last heartbeat), then
    :meth:`start`; :meth:`stop` takes a last shot.
    """

    def __init__(self, state: State, db: str | None = None, freq: float = 1.0,
                 retention: Any = None) -> None:
        self.state = state
        self.camera = SQLCamera(state, freq=freq, db=db or default_history_url(),
                                retention=retention)
        self.db_url = self.camera.db_url

    def load(self, max_tasks: int | None = None, max_workers: int | None = None
             ) -> tuple[int, int]:
        """Put the stored tasks and workers into State; returns how many of each."""
        cam = self.camera
        tasks_t, workers_t = cam.tasks_table, cam.workers_table
        limit = max_tasks or self.state.max_tasks_in_memory
        with cam.engine.connect() as conn:
            workers = conn.execute(workers_t.select().order_by(
                workers_t.c.updated_at.desc()).limit(
                    max_workers or self.state.max_workers_in_memory)).mappings().all()
            # the most recently written, and among those written at once, the
            # most recent event (``timestamp`` is the task's latest event's time)
            tasks = conn.execute(tasks_t.select().order_by(
                tasks_t.c.updated_at.desc(), tasks_t.c.timestamp.desc()).limit(limit)
            ).mappings().all()
        for row in workers:
            self._worker(row)
        for row in reversed(tasks):  # oldest first: the newest end up newest in State
            self._task(row)
        return len(tasks), len(workers)

    def _worker(self, row: Any) -> None:
        when = row["last_heartbeat"] or row["updated_at"]
        try:
            loadavg = json.loads(row["loadavg"]) if row["loadavg"] else None
        except ValueError:
            loadavg = None
        self.state.event({
            "type": "worker-heartbeat", "hostname": row["hostname"], "pid": row["pid"],
            "freq": row["freq"] or 2.0, "active": row["active"] or 0,
            "processed": row["processed"] or 0, "loadavg": loadavg,
            "sw_ident": row["sw_ident"], "sw_ver": row["sw_ver"], "sw_sys": row["sw_sys"],
            "timestamp": when, "local_received": when, "clock": 0})

    def _task(self, row: Any) -> None:
        fields = {name: row[name] for name in _TASK_FIELDS if row[name] is not None}
        times = [(column, type_) for column, type_ in _TIME_EVENTS if row[column] is not None]
        if not times:  # no time stored: keep the task all the same, as sent
            times = [("updated_at", "task-sent")]
        for column, type_ in times:
            when = row[column]
            sender = row["client"] if type_ == "task-sent" else row["worker"]
            self.state.event({**fields, "type": type_, "uuid": row["uuid"],
                              "hostname": sender or row["worker"] or row["client"] or "",
                              "timestamp": when, "local_received": when,
                              "clock": row["clock"] or 0})

    def start(self) -> None:
        self.camera.install()

    def stop(self) -> None:
        """Stop writing, after a last shot of what changed."""
        stop_camera(self.camera)
