"""The web monitor's front door, fuzzed: every route of its OpenAPI document with
arbitrary parameters, over a State fed hostile events.

Properties: no answer is a 5xx; every JSON answer parses; no page echoes a
request's or an event's markup unescaped.  The app runs in-process (Starlette's
test client), its broker is an embedded one in a temporary folder, and the
commands that would wait for workers wait a few milliseconds.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.fuzz.scale import scaled
from tidings import App
from tidings.events.source import ReplaySource
from tidings.web import Access, WebMonitor, WebOptions
from tidings.web.api import openapi_document

MARKUP = "<script>alert(1)</script>"
texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
                max_size=40) | st.sampled_from(
    [MARKUP, "(", '"', "-", "received:>1m", "kwargs:a=1", "state:SUCCESS", "OR", "1e309",
     "nan", "-1", "999999999999999999999", "../../etc", "%00", "true", "All"])


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web-fuzz")
    app = App("fuzz", broker_data_dir=str(tmp / "broker"))
    source = ReplaySource(tmp / "none.ndjson", app.clock)
    monitor = WebMonitor(app, Access(), WebOptions(max_tasks=500), source=source)
    monitor.inspector.timeout = 0.01
    monitor.control_timeout = 0.01
    for i in range(50):
        monitor.handle({"type": "task-received", "uuid": f"u{i}", "name": MARKUP,
                        "args": MARKUP, "kwargs": "{'k': '<b>'}", "hostname": f"{MARKUP}@h",
                        "timestamp": 1.8e9 + i, "clock": i + 1, "local_received": 1.8e9})
    monitor.handle({"type": "task-failed", "uuid": "u1", "exception": MARKUP,
                    "traceback": MARKUP, "hostname": "w@h", "timestamp": float("nan"),
                    "clock": 99})
    with TestClient(monitor.asgi(), raise_server_exceptions=True) as c:
        yield c
    monitor.inspector.close()


ROUTES = [(path, method, op) for path, ops in openapi_document("x")["paths"].items()
          for method, op in ops.items() if path != "/api/worker/shutdown/{name}"]
PAGES = ["/", "/workers", "/tasks", "/failures", "/broker", "/task/{x}", "/worker/{x}"]


@settings(scaled(400), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(route=st.sampled_from(ROUTES), values=st.lists(texts, min_size=6, max_size=6),
       body=st.none() | st.dictionaries(st.sampled_from(["args", "kwargs", "queue",
                                                          "countdown", "eta", "expires",
                                                          "time_limit", "task_id", "x"]),
                                        st.none() | texts | st.lists(texts, max_size=2)
                                        | st.integers(), max_size=3))
def test_no_api_route_answers_5xx(client, route, values, body):
    path, method, op = route
    params, filled = {}, path
    for value, spec in zip(values, op.get("parameters", []), strict=False):
        if spec["in"] == "path":
            filled = filled.replace("{" + spec["name"] + "}", quote(value, safe="") or "x")
        else:
            params[spec["name"]] = value
    filled = re.sub(r"\{\w+\}", "x", filled)
    if method == "get":
        response = client.get(filled, params=params)
    else:
        response = client.post(filled, params=params, json=body)
    assert response.status_code < 500 or response.status_code in (501, 503), \
        (path, params, response.status_code, response.text[:300])
    if response.headers.get("content-type", "").startswith("application/json"):
        json.loads(response.text)


@pytest.mark.parametrize("body", [
    {"queue": [""]},  # found by the fuzz: a list as the queue name was a 500
    {"task_id": {"a": 1}},
    {"args": "not a list"},
    {"kwargs": [1]},
    {"eta": "yesterday"},
    {"countdown": "soon"},
])
def test_send_task_refuses_malformed_options_with_a_400(client, body):
    response = client.post("/api/task/send-task/proj.add", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]


@settings(scaled(200), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(page=st.sampled_from(PAGES), value=texts)
def test_pages_escape_what_they_are_given(client, page, value):
    response = client.get(page.replace("{x}", quote(value, safe="") or "x"))
    assert response.status_code < 500, response.text[:300]
    assert MARKUP not in response.text
    if response.headers.get("content-type", "").startswith("text/html"):
        assert "<script>" not in response.text
