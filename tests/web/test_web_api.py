"""``tidings web``'s REST API against live workers: Flower 2.2's shapes, auth, read-only.

The Flower comparison runs Flower 2.2 itself beside ``tidings web`` on the same
event stream, with a Celery 5.7 worker and a Tidings worker, and asks both the
same questions: the answers must have the same keys and value types (and, for
the same task, the same values where they come from the same events).
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.cli.helpers import wait_for
from tests.conftest import ROOT, delete_queue
from tests.integration.test_exporter import free_port
from tests.interop.test_celery_events import celery_client
from tests.interop.test_control_interop import CEL, TID, shape, two_workers
from tests.web.helpers import Web, http
from tests.worker.helpers import cluster

pytestmark = [pytest.mark.broker]


def _flower(env: dict, tmp_path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = (tmp_path / "flower.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.interop.celery_app", "flower",
         "--address=127.0.0.1", f"--port={port}", "--inspect_timeout=5000"],
        env=dict(env, FLOWER_UNAUTHENTICATED_API="true"), cwd=ROOT, stdout=log,
        stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    assert wait_for(lambda: _up(url), 60), (tmp_path / "flower.log").read_text()
    return proc, url


def _up(url: str) -> bool:
    try:
        return http(url + "/healthcheck", timeout=5)[0] == 200
    except OSError:
        return False


@pytest.mark.interop
def test_the_api_answers_as_flower_does(amqp_url, tmp_path):
    with two_workers(amqp_url, tmp_path) as (c, env, _celery, _tidings):
        flower, furl = _flower(env, tmp_path)
        web = Web(env, tmp_path)
        try:
            client = celery_client(env)
            ids = [client.send_task("interop.add", (2, 2), queue=c.queue + q).id
                   for q in ("-cel", "-tid")]
            ids += [client.send_task("interop.fail", (1,), queue=c.queue + q).id
                    for q in ("-cel", "-tid")]

            def finished(url: str) -> bool:
                status, _, tasks = http(url + "/api/tasks")
                return status == 200 and all(
                    tasks.get(i, {}).get("state") in ("SUCCESS", "FAILURE") for i in ids)

            assert wait_for(lambda: finished(furl) and finished(web.url), 60)
            ours, theirs = web.get("/api/tasks")[2], http(furl + "/api/tasks")[2]
            for uuid in ids:
                assert shape(ours[uuid]) == shape(theirs[uuid]), uuid
                for key in ("name", "state", "args", "kwargs", "result", "exception",
                            "worker", "retries", "routing_key", "root_id", "received",
                            "started"):
                    assert ours[uuid][key] == theirs[uuid][key], (uuid, key)
                one, other = web.get(f"/api/task/info/{uuid}")[2], http(
                    f"{furl}/api/task/info/{uuid}")[2]
                assert shape(one) == shape(other)
            # the listing's parameters
            # without sort_by, Flower pages in its dict's order and ours newest first
            assert len(web.get("/api/tasks?limit=1")[2]) == 1
            for query in ("?state=FAILURE", "?taskname=interop.add",
                          f"?workername={CEL}", "?sort_by=-received", "?search=interop.fail",
                          "?search=state:success", "?offset=1&limit=2&sort_by=name"):
                a, b = web.get("/api/tasks" + query)[2], http(furl + "/api/tasks" + query)[2]
                assert sorted(a) == sorted(b), query
                if "sort_by" in query:
                    assert list(a) == list(b), query
            assert web.get("/api/task/types")[2] == http(furl + "/api/task/types")[2]
            assert web.get("/api/task/info/nope")[0] == http(furl + "/api/task/info/nope")[0] \
                == 404
            assert web.get("/api/tasks?sort_by=bad")[0] == 400
            # workers, from inspect: the same keys for both kinds of worker
            mine = web.get("/api/workers?refresh=1")[2]
            flowers = http(furl + "/api/workers?refresh=1")[2]
            for name in (CEL, TID):
                assert set(mine[name]) == set(flowers[name]), name
                assert shape(mine[name]["stats"]["pool"]) == \
                    shape(flowers[name]["stats"]["pool"])
                assert mine[name]["registered"] == flowers[name]["registered"]
            one = web.get(f"/api/workers?workername={TID}&refresh=true")[2]
            assert set(one) == {TID} and {"active", "reserved", "scheduled", "revoked"} <= \
                set(one[TID])
            assert web.get("/api/workers?status=true")[2] == {CEL: True, TID: True}
            assert web.get("/api/workers?workername=nobody@x")[0] == 404
            # actions: the same messages, from the workers' own replies
            for path, data in (
                    ("/api/task/rate-limit/interop.add", {"workername": CEL,
                                                          "ratelimit": "100/m"}),
                    ("/api/task/rate-limit/interop.add", {"workername": TID,
                                                          "ratelimit": "100/m"}),
                    ("/api/task/timeout/interop.add", {"workername": TID, "soft": "30"}),
                    (f"/api/worker/pool/grow/{CEL}", {"n": "1"}),
                    (f"/api/worker/pool/shrink/{CEL}", {"n": "1"}),
                    (f"/api/task/revoke/{ids[0]}", {"terminate": "false"})):
                a = web.post(path, data=data)
                b = http(furl + path, method="POST", data=data)
                assert (a[0], a[2]) == (b[0], b[2]), path
                assert a[0] == 200 and set(a[2]) == {"message"}, (path, a)
            # consumers: each monitor on a queue of its own (the second add of one queue
            # would rightly answer "already consuming")
            for action in ("add-consumer", "cancel-consumer"):
                path = f"/api/worker/queue/{action}/{TID}"
                a = web.post(path, data={"queue": c.queue + "-ours"})
                b = http(furl + path, method="POST", data={"queue": c.queue + "-flower"})
                assert a[0] == b[0] == 200, (a, b)
                assert a[2]["message"].replace("-ours", "") == \
                    b[2]["message"].replace("-flower", ""), (a, b)
            status, _, sent = web.post("/api/task/send-task/interop.add",
                                       json_body={"args": [5, 5],
                                                  "queue": c.queue + "-tid"})
            assert status == 200 and set(sent) == {"task-id"}
            assert set(http(furl + "/api/task/send-task/interop.add", method="POST",
                            json_body={"args": [1, 1]})[2]) == {"task-id"}
            assert wait_for(lambda: web.get(f"/api/task/info/{sent['task-id']}")[2].get(
                "state") == "SUCCESS", 30)
            status, _, queues = web.get("/api/queues/length")
            assert status == 200 and isinstance(queues["active_queues"], list)
            assert web.get(f"/api/task/result/{ids[0]}")[0] == 501
        finally:
            web.stop()
            flower.terminate()
            flower.wait(30)
            for suffix in ("-ours", "-flower"):  # the queues the consumer commands added
                delete_queue(amqp_url, c.queue + suffix)


def test_auth_read_only_errors_and_the_openapi_document(amqp_url, tmp_path):
    with cluster(amqp_url, tmp_path) as c:
        worker = c.worker("-E", "-P", "threads", "-c", "2", name="w1@web")
        env = dict(c.env, FLOWER_BASIC_AUTH="ann:s3cret,bob:pw")  # Flower's variable
        web = Web(env, tmp_path, "--api-token", "tok3n", "--url_prefix", "/flower")
        ro = Web(c.env, tmp_path, "--read-only", name="ro")
        try:
            assert web.url.endswith("/flower")
            assert web.get("/")[0] == 401
            assert "Basic" in web.get("/")[1].get("www-authenticate", "")
            assert web.get("/", auth=("ann", "wrong"))[0] == 401
            assert web.get("/", auth=("bob", "pw"))[0] == 200
            assert web.get("/api/tasks", headers={"Authorization": "Bearer tok3n"})[0] == 200
            assert web.get("/api/tasks", headers={"Authorization": "Bearer nope"})[0] == 401
            assert web.get("/", headers={"Authorization": "Bearer tok3n"})[0] == 401
            assert web.get("/healthcheck")[2] == "OK"  # open, for load balancers
            token = {"Authorization": "Bearer tok3n"}
            task = c.proj.add.delay(1, 2).id
            assert wait_for(lambda: web.get(f"/api/task/info/{task}", headers=token)[2].get(
                "state") == "SUCCESS", 30)
            status, _, error = web.get("/api/tasks?search=(state:success", headers=token)
            assert status == 400 and "at position 14" in error["error"]
            status, headers, text = web.get("/metrics", headers=token)
            assert status == 200 and "celery_task_succeeded_total" in text
            doc = web.get("/api/openapi.json", headers=token)[2]
            for path in ("/api/workers", "/api/tasks", "/api/task/info/{uuid}",
                         "/api/task/revoke/{uuid}", "/api/worker/shutdown/{name}",
                         "/api/queues/length", "/healthcheck", "/metrics"):
                assert path in doc["paths"], path
            # headers on everything
            _, headers, _ = web.get("/", auth=("ann", "s3cret"))
            lower = {k.lower(): v for k, v in headers.items()}
            assert "script-src 'self'" in lower["content-security-policy"]
            assert lower["x-content-type-options"] == "nosniff"
            # read-only: 403 in the API, no action in pages
            status, _, body = ro.post(f"/api/task/revoke/{task}")
            assert status == 403 and "Read only" in body["error"]
            assert ro.post("/api/worker/shutdown/w1@web")[0] == 403
            assert "data-post" not in ro.get(f"/task/{task}")[2]
            assert "data-post" in web.get(f"/task/{task}", auth=("ann", "s3cret"))[2]
            # a script shuts the worker down through the API
            assert web.post("/api/worker/shutdown/nobody@x", headers=token)[0] == 404
            status, _, body = web.post("/api/worker/shutdown/w1@web", headers=token)
            assert status == 200 and body == {"message": "Shutting down!"}
            assert worker.proc.wait(30) == 0
        finally:
            web.stop()
            ro.stop()


def test_bad_options_are_one_line_errors(tmp_path):
    from tests.cli.helpers import run

    env = {"TIDINGS_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//",
           "PATH": "/usr/bin:/bin"}
    out = run(["web", "--basic-auth", "nopassword"], env)
    assert out.returncode != 0 and "--basic-auth: 'nopassword': expected user:password" in \
        out.stderr and "Traceback" not in out.stderr
    out = run(["web", "--url-prefix", "a b"], env)
    assert out.returncode != 0 and "expected a path" in out.stderr
    busy = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                             str(port := free_port())], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        out = run(["web", "--port", str(port)], env)
        assert out.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in out.stderr
    finally:
        busy.terminate()


def test_stops_promptly_and_cleanly_with_a_live_page_open(amqp_url, tmp_path):
    import http.client

    with cluster(amqp_url, tmp_path) as c:
        web = Web(c.env, tmp_path)
        conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
        conn.request("GET", "/api/live")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("content-type").startswith("text/event-stream")
        assert response.readline() == b"retry: 2000\n"
        started = time.monotonic()
        assert web.stop() == 0
        assert time.monotonic() - started < 5
        assert "Traceback" not in web.running.stderr, web.running.stderr
        conn.close()
