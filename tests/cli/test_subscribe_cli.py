"""``--queue``/``--stream``/``--db`` on every consuming command: the same options, the
same one-line refusals."""

from __future__ import annotations

import pytest

from tests.cli.helpers import Running, cli_env, run, wait_for
from tests.conftest import cleanup_broker, make_app, unique
from tests.integration.test_durable import delete_queues
from tests.integration.test_exporter import free_port

pytestmark = pytest.mark.broker


@pytest.mark.parametrize("command", [["events", "--dump"], ["web"], ["exporter"]])
def test_refusals_are_one_line(command, redis_url, amqp_url, tmp_path):
    app, _ = make_app(redis_url)
    port = [] if command[0] == "events" else ["--port", str(free_port())]
    cases = [
        (redis_url, ["--queue", "q"], "--queue and --stream need RabbitMQ: on redis"),
        (amqp_url, ["--queue", "q", "--stream", "s"], "cannot both be given"),
        (amqp_url, ["--from", "first"], "--from applies only with --stream"),
        (amqp_url, ["--stream", "s", "--from", "yesterday"], "invalid stream offset"),
        (amqp_url, ["--stream", "s", "--stream-max-bytes", "lots"], "invalid size"),
        (amqp_url, ["--queue", "q", "--stream-retention", "1d"], "only with --stream"),
    ]
    for url, args, message in cases:
        result = run(["-b", url, *command, *port, *args], cli_env(app), timeout=30)
        assert result.returncode == 1, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)


@pytest.mark.parametrize("command", [["web"], ["exporter"]])
def test_web_and_exporter_read_a_stream(command, amqp_url, tmp_path):
    app, declared = make_app(amqp_url)
    stream = unique("tidings-test-stream")
    try:
        proc = Running(["-b", amqp_url, *command, "--port", str(free_port()),
                        "--stream", stream, "--from", "first", "--stream-retention", "1h"],
                       cli_env(app), tmp_path, name=command[0])
        try:
            assert wait_for(lambda: f"receiving events from stream {stream}" in proc.stderr,
                            30), proc.stderr
        finally:
            assert proc.stop() == 0
    finally:
        delete_queues(amqp_url, stream)
        cleanup_broker(amqp_url, declared)
