"""Shared fixtures: real brokers (skipped when absent unless TIDINGS_REQUIRE_BROKERS=1).

Every test that touches a broker gets its own exchange names (and its own
Redis database), so runs on one machine do not see each other's events, and
what a test declares is deleted afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue

from tidings import App
from tidings.protocol.loss import DEAD_LETTER_SUFFIX
from tidings.transport import task_queue

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("TIDINGS_FIXTURES", ROOT / "tests" / "fixtures" / "celery-5.7"))

AMQP_URL = os.environ.get("TIDINGS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("TIDINGS_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
REQUIRE_BROKERS = os.environ.get("TIDINGS_REQUIRE_BROKERS", "").strip().lower() in (
    "1", "true", "yes")

_reachable: dict[str, str | None] = {}


def broker_unavailable(url: str) -> str | None:
    """Why ``url`` cannot be used (None when it can); the answer is cached."""
    if url not in _reachable:
        try:
            with Connection(url, connect_timeout=2) as conn:
                conn.ensure_connection(max_retries=1, timeout=3)
                if url.startswith("redis"):
                    conn.default_channel.client.ping()
            _reachable[url] = None
        except Exception as exc:
            _reachable[url] = f"{url}: {exc!r}"
    return _reachable[url]


def need_broker(url: str) -> None:
    reason = broker_unavailable(url)
    if reason is None:
        return
    if REQUIRE_BROKERS:
        pytest.fail(f"broker required (TIDINGS_REQUIRE_BROKERS=1) but unreachable: {reason}")
    pytest.skip(f"broker unreachable: {reason}")


def run_without(module: str, code: str) -> str:
    """The output of ``code`` run by a fresh interpreter in which ``module`` cannot be
    imported (an optional speed-up not installed); its errors come with a failure."""
    out = subprocess.run([sys.executable, "-c", f"import sys; sys.modules[{module!r}] = None\n"
                          + code], capture_output=True, text=True)
    return out.stdout.strip() or out.stderr


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def delete_queue(url: str, name: str) -> None:
    """Remove a task queue a test made a worker declare (RabbitMQ) or fill (Redis), and
    on RabbitMQ the durable exchange of its name that comes with it (Celery's)."""
    try:
        with Connection(url, connect_timeout=2) as conn:
            if url.startswith("redis"):
                # kombu deletes a Redis queue (its list and binding) only through
                # bindings declared in this process: declare it, then delete it
                queue = task_queue(name)(conn.default_channel)
                queue.declare()
                queue.delete()
            else:
                Queue(name, channel=conn.default_channel).delete()
                Exchange(name, channel=conn.channel()).delete()
    except Exception:
        pass


def cleanup_broker(url: str, exchanges: list[str]) -> None:
    """Delete what a test declared: exchanges on AMQP (with the durable dead-letter
    exchange a receiver declares beside an event exchange), binding tables on Redis."""
    try:
        with Connection(url, connect_timeout=2) as conn:
            if url.startswith("redis"):
                client = conn.default_channel.client
                for name in exchanges:
                    client.delete(f"_kombu.binding.{name}")
            else:
                channel = conn.default_channel
                for name in exchanges:
                    for each in (name, name + DEAD_LETTER_SUFFIX):
                        try:
                            Exchange(each, channel=channel).delete()
                        except Exception:
                            channel = conn.channel()
    except Exception:
        pass


@pytest.fixture(params=["amqp", "redis"])
def broker_url(request: pytest.FixtureRequest) -> str:
    url = AMQP_URL if request.param == "amqp" else REDIS_URL
    need_broker(url)
    return url


@pytest.fixture
def amqp_url() -> str:
    need_broker(AMQP_URL)
    return AMQP_URL


@pytest.fixture
def redis_url() -> str:
    need_broker(REDIS_URL)
    return REDIS_URL


def make_app(url: str, **settings: object) -> tuple[App, list[str]]:
    """An app with private exchange names on ``url``; returns it and what to delete."""
    names = {
        "event_exchange": unique("tidings-test-ev"),
        "control_exchange": unique("tidings-test-ctl"),
    }
    names.update(settings)  # type: ignore[arg-type]
    app = App("test", broker=url, **names)
    ctl = names["control_exchange"]
    return app, [names["event_exchange"], f"{ctl}.pidbox", f"reply.{ctl}.pidbox"]


@pytest.fixture
def broker_app(broker_url: str) -> Iterator[App]:
    app, declared = make_app(broker_url)
    yield app
    cleanup_broker(broker_url, declared)


@pytest.fixture
def embedded_app(tmp_path: Path) -> App:
    return App("test", broker_data_dir=str(tmp_path / "broker"))


def load_jsonl(name: str) -> list[dict]:
    path = FIXTURES / name
    if not path.exists():
        pytest.fail(f"fixture missing: {path} (set TIDINGS_FIXTURES)")
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="session")
def corpus_rabbitmq() -> list[dict]:
    return load_jsonl("events-rabbitmq.jsonl")


@pytest.fixture(scope="session")
def corpus_redis() -> list[dict]:
    return load_jsonl("events-redis.jsonl")


@pytest.fixture(scope="session")
def expected_state() -> dict:
    path = FIXTURES / "expected-state.json"
    if not path.exists():
        pytest.fail(f"fixture missing: {path}")
    return json.loads(path.read_text())


PG_URL = os.environ.get("TIDINGS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextmanager
def pg_schema() -> Iterator[tuple[Any, str, str]]:
    """``(engine, schema, url)``: a PostgreSQL schema of the test's own, dropped after;
    ``url`` points ``search_path`` at it.  Skips (fails under
    TIDINGS_REQUIRE_BROKERS) when PostgreSQL is unreachable."""
    import sqlalchemy

    schema = unique("tidings_test").replace("-", "_")
    engine = sqlalchemy.create_engine(PG_URL)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'create schema "{schema}"'))
    except sqlalchemy.exc.OperationalError as exc:
        if REQUIRE_BROKERS:
            pytest.fail(f"PostgreSQL required but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    try:
        yield engine, schema, f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'drop schema "{schema}" cascade'))
        engine.dispose()
