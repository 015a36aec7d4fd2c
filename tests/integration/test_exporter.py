"""``tidings exporter`` against real workers (Tidings and Celery 5.7), scraped over HTTP."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import defaultdict

import pytest
from kombu import Connection, Exchange, Producer, Queue
from prometheus_client.parser import text_string_to_metric_families

from tests.cli.helpers import Running, wait_for
from tests.conftest import ROOT, unique
from tests.interop.test_worker_interop import celery_cmd, interop_env
from tests.worker.helpers import cluster, delete_queue

pytestmark = [pytest.mark.broker, pytest.mark.interop]

HOST = socket.gethostname()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Scraper:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def samples(self) -> dict[str, dict[frozenset, float]]:
        status, text = self.get("/metrics")
        assert status == 200, text
        out: dict[str, dict[frozenset, float]] = defaultdict(dict)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[s.name][frozenset(s.labels.items())] = s.value
        return out

    def value(self, metric: str, **labels: str) -> float | None:
        return self.samples().get(metric, {}).get(frozenset(labels.items()))


def waiting_messages(url: str, queue: str, count: int, priority: int | None = None) -> None:
    """Declare ``queue`` and leave ``count`` messages in it (nobody consumes it)."""
    with Connection(url) as conn:
        q = Queue(queue, Exchange(queue, "direct"), routing_key=queue, durable=True,
                  max_priority=10 if priority is not None else None)
        producer = Producer(conn.default_channel)
        for i in range(count):
            producer.publish({"n": i}, exchange=q.exchange, routing_key=queue, declare=[q],
                             priority=priority)


def test_exporter_counts_what_tidings_and_celery_workers_did(broker_url, tmp_path):
    with cluster(broker_url, tmp_path) as c:
        celery_queue = unique("tidings-test-celq")
        idle = unique("tidings-test-idle")
        port = free_port()
        exporter = Running(["exporter", "--port", str(port), "--queue-interval", "0.5",
                            "-Q", idle], c.env, tmp_path, name="exporter")
        env = dict(interop_env(c), INTEROP_QUEUE=celery_queue)
        log = (tmp_path / "celery-worker.log").open("w")
        celery_worker = None
        try:
            scrape = Scraper(port)
            assert wait_for(lambda: scrape.get("/health")[0] == 200, 30), exporter.stderr
            c.worker("-E", "-P", "solo", name="tid@exp")
            celery_worker = subprocess.Popen(
                celery_cmd("worker", "-E", "-P", "prefork", "-c", "2", "-n", "cel@exp",
                           "-Q", celery_queue, "-l", "warning"),
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            assert wait_for(
                lambda: any(e["hostname"] == "cel@exp" for e in c.capture.of("worker-online")),
                60), (tmp_path / "celery-worker.log").read_text()
            waiting_messages(broker_url, idle, 5)

            # a Tidings worker: successes, two exception classes, a retry, a revoke
            proj = c.proj
            for i in range(3):
                proj.add.delay(i, i)
            proj.fail.delay(1)
            proj.fail.delay(2)
            proj.divide.delay(1, 0)
            proj.retry_once.delay(4)
            later = proj.add.apply_async((9, 9), countdown=3)
            assert c.capture.wait("task-received", later.id)
            c.app.control.revoke(later.id)
            # a Celery worker: the same shapes
            from tests.interop.test_celery_events import celery_client

            client = celery_client(env)
            for i in range(2):
                client.send_task("interop.add", (i, i), queue=celery_queue)
            client.send_task("interop.fail", (1,), queue=celery_queue)
            client.send_task("interop.divide", (1, 0), queue=celery_queue)
            client.send_task("interop.retry_once", (1,), queue=celery_queue)
            theirs_later = client.send_task("interop.add", (5, 5), countdown=3,
                                            queue=celery_queue)
            assert c.capture.wait("task-received", theirs_later.id)
            client.control.revoke(theirs_later.id)

            def ours(metric: str, task: str, queue: str) -> float:
                return on_exp(scrape, metric, task, queue)

            q = c.queue
            assert wait_for(lambda: ours("celery_task_succeeded_total", "proj.add", q) == 3
                            and ours("celery_task_succeeded_total", "proj.retry_once", q) == 1
                            and ours("celery_task_succeeded_total", "interop.add",
                                     celery_queue) == 2
                            and ours("celery_task_succeeded_total", "interop.retry_once",
                                     celery_queue) == 1
                            and ours("celery_task_revoked_total", "proj.add", q) == 1
                            and ours("celery_task_revoked_total", "interop.add",
                                     celery_queue) == 1, 60), \
                scrape.get("/metrics")[1]
            got = scrape.samples()
            failed: dict[tuple[str, str], float] = {}
            for k, v in got["celery_task_failed_total"].items():
                if v:  # summed over the queue labels (see on_exp)
                    key = (dict(k)["name"], dict(k)["exception"])
                    failed[key] = failed.get(key, 0) + v
            assert failed == {("proj.fail", "ValueError"): 2,
                              ("proj.divide", "ZeroDivisionError"): 1,
                              ("interop.fail", "ValueError"): 1,
                              ("interop.divide", "ZeroDivisionError"): 1}
            assert ours("celery_task_retried_total", "proj.retry_once", q) == 1
            assert ours("celery_task_retried_total", "interop.retry_once", celery_queue) == 1
            assert ours("celery_task_received_total", "proj.add", q) == 4
            assert scrape.value("celery_task_sent_total", name="proj.add", hostname=HOST,
                                queue_name=q) == 4  # the client: gen<pid>@<this host>
            assert ours("celery_task_runtime_count", "proj.add", q) == 3
            assert scrape.value("celery_worker_up", hostname="exp") == 1
            # queue figures (refreshed every 0.5 s)
            assert wait_for(lambda: scrape.value("celery_queue_length", queue_name=idle) == 5
                            and scrape.value("celery_active_worker_count",
                                             queue_name=celery_queue) == 1
                            and scrape.value("celery_active_process_count",
                                             queue_name=celery_queue) == 2
                            # the Tidings worker answers active_queues and stats too
                            and scrape.value("celery_active_worker_count", queue_name=q) == 1
                            and scrape.value("celery_active_process_count",
                                             queue_name=q) == 1, 20), \
                [line for line in scrape.get("/metrics")[1].splitlines() if "active_" in line]
            if broker_url.startswith("amqp"):
                assert scrape.value("celery_active_consumer_count",
                                    queue_name=celery_queue) == 1
            assert scrape.value("tidings_reconnects_total") == 0
            assert not got.get("tidings_events_skipped_total")
        finally:
            if celery_worker is not None:
                celery_worker.terminate()
                try:
                    celery_worker.wait(30)
                except subprocess.TimeoutExpired:
                    celery_worker.kill()
                    celery_worker.wait()
            log.close()
            exporter.stop()
            delete_queue(broker_url, idle)
            delete_queue(broker_url, celery_queue)


def test_queue_length_on_redis_counts_priority_sub_queues(redis_url, tmp_path):
    queue = unique("tidings-test-prio")
    port = free_port()
    with cluster(redis_url, tmp_path) as c:
        exporter = Running(["exporter", "--port", str(port), "--queue-interval", "0.5",
                            "-Q", queue], c.env, tmp_path, name="exporter")
        try:
            waiting_messages(redis_url, queue, 3)
            waiting_messages(redis_url, queue, 2, priority=9)
            import redis

            client = redis.Redis.from_url(redis_url)
            assert client.llen(queue) < 5  # some went to a priority sub-queue
            scrape = Scraper(port)
            assert wait_for(lambda: scrape.get("/health")[0] == 200, 30), exporter.stderr
            assert wait_for(lambda: scrape.value("celery_queue_length", queue_name=queue) == 5,
                            20), scrape.get("/metrics")[1]
        finally:
            exporter.stop()
            import redis

            client = redis.Redis.from_url(redis_url)
            for key in client.keys(f"{queue}*"):
                client.delete(key)


def on_exp(scrape: Scraper, metric: str, task: str, queue: str) -> float:
    """The figure of ``task`` on the test workers' host ("exp"), under ``queue``.

    A worker's event can reach the exporter before the client's task-sent
    (they travel on different connections); until then the task's queue is
    unknown and reads "celery", as in celery-exporter.  Both label sets count.
    """
    samples = scrape.samples().get(metric, {})
    return sum(samples.get(frozenset({"name": task, "hostname": "exp",
                                      "queue_name": label}.items()), 0.0)
               for label in {queue, "celery"})


def test_metrics_keep_serving_while_the_broker_is_away(amqp_url, tmp_path):
    from tests.cli.proxy import Proxy

    proxy = Proxy(5672)
    proxy.start()
    via_proxy = f"amqp://guest:guest@127.0.0.1:{proxy.port}//"
    with cluster(amqp_url, tmp_path) as c:
        port = free_port()
        exporter = Running(["-b", via_proxy, "exporter", "--port", str(port)], c.env, tmp_path,
                           name="exporter")
        try:
            scrape = Scraper(port)
            assert wait_for(lambda: scrape.get("/health")[0] == 200, 30), exporter.stderr
            c.worker("-P", "solo", "-E", name="tid@exp")
            ok = c.proj.add.delay(1, 2)
            assert c.capture.wait("task-succeeded", ok.id)
            assert wait_for(lambda: on_exp(scrape, "celery_task_succeeded_total", "proj.add",
                                           c.queue) == 1, 20)
            proxy.cut()
            assert wait_for(lambda: scrape.get("/health")[0] == 503, 30), exporter.stderr
            status, _ = scrape.get("/metrics")
            assert status == 200  # still serving what it knows
            assert on_exp(scrape, "celery_task_succeeded_total", "proj.add", c.queue) == 1
            time.sleep(1)
            proxy.start()
            assert wait_for(lambda: scrape.get("/health")[0] == 200, 40), exporter.stderr
            assert scrape.value("tidings_reconnects_total") >= 1
            # malformed input on the event exchange is counted, and events keep flowing
            with Connection(amqp_url) as conn:
                producer = Producer(conn.default_channel)
                exchange = c.app.conf.event_exchange
                producer.publish("{broken", exchange=exchange, routing_key="task.started",
                                 content_type="application/json", content_encoding="utf-8",
                                 serializer=None)
                producer.publish({"type": "task-started", "uuid": "x", "clock": None,
                                  "hostname": "w@h", "timestamp": 1.0}, exchange=exchange,
                                 routing_key="task.started", serializer="json")
            ok2 = c.proj.add.delay(2, 3)
            assert c.capture.wait("task-succeeded", ok2.id)
            assert wait_for(lambda: on_exp(scrape, "celery_task_succeeded_total", "proj.add",
                                           c.queue) == 2, 20)
            assert "lost" in exporter.stderr
            assert scrape.value("tidings_events_skipped_total", cause="not-json") == 1
            assert scrape.value("tidings_events_skipped_total", cause="null-clock") == 1
        finally:
            exporter.stop()
            proxy.cut()


def test_a_port_in_use_is_a_clear_error(tmp_path):
    from tests.cli.helpers import run

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = run(["-b", "memory://", "exporter", "--port", str(port)],
                  {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}, timeout=30)
    assert out.returncode == 1, out.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr


def test_bad_options_are_usage_errors():
    from tests.cli.helpers import run

    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    for args, message in ((["--buckets", "1,0.5"], "increasing order"),
                          (["--static-label", "name=x"], "already have"),
                          (["--static-label", "bad label=x"], "NAME=VALUE"),
                          (["--metric-prefix", "9x"], "not a valid metric name prefix")):
        out = run(["-b", "memory://", "exporter", *args], env, timeout=30)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
