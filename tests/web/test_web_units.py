"""Listing, security rules and live pushes of the web monitor, without a server."""

from __future__ import annotations

import asyncio
import base64

import pytest

from tests.web.test_search import make_state
from tidings.web.live import CHANGE_RING, ChangeLog, sse_stream
from tidings.web.search import QuerySyntaxError
from tidings.web.security import Access, SecurityMiddleware, parse_users
from tidings.web.tasks import TaskQuery, task_json, task_page

STATE = make_state()


def page(**kwargs) -> list[str]:
    return [uuid[0] for uuid, _ in task_page(STATE, TaskQuery(**kwargs))]


def test_newest_first_paging_and_filters():
    assert page() == ["d", "c", "b", "a"]  # by latest event (clock)
    assert page(limit=2) == ["d", "c"]
    assert page(limit=2, offset=2) == ["b", "a"]
    assert page(offset=10) == []
    assert page(name="proj.mail") == ["d", "c"]
    assert page(state="SUCCESS", worker="w2@host") == ["c"]
    assert page(state="All", name="All", worker="All") == ["d", "c", "b", "a"]
    assert page(search="-state:success", limit=1) == ["d"]


def test_sorting_puts_missing_values_last_both_ways():
    assert page(sort_by="name") == ["a", "b", "c", "d"]  # ties by task id
    assert page(sort_by="received") == ["c", "b", "a", "d"]
    assert page(sort_by="-runtime") == ["a", "b", "c", "d"]  # no runtime: order kept
    by_worker = page(sort_by="worker")
    assert set(by_worker[:2]) == {"a", "d"} and set(by_worker[2:]) == {"b", "c"}
    assert page(sort_by="-received") == ["d", "a", "b", "c"]
    with pytest.raises(ValueError, match="Invalid sort_by"):
        TaskQuery(sort_by="__class__")
    with pytest.raises(QuerySyntaxError):
        list(task_page(STATE, TaskQuery(search="(")))


def test_task_json_is_flowers_shape():
    task = STATE.tasks["a1111111-0000-0000-0000-000000000001"]
    row = task_json(task)
    assert row["worker"] == "w1@host"
    assert set(row) >= {"uuid", "name", "state", "received", "started", "succeeded", "args",
                        "kwargs", "result", "timestamp", "runtime", "root_id", "parent_id",
                        "children", "worker", "client", "exception", "traceback"}


def test_users_and_tokens():
    assert parse_users("a:b, c:d:e") == [("a", "b"), ("c", "d:e")]
    with pytest.raises(ValueError, match="'nopass'"):
        parse_users("nopass")
    access = Access(users=[("ann", "s3cret"), ("bob", "pw")], api_token="tok")
    basic = base64.b64encode(b"bob:pw").decode()
    assert access.authenticate(f"Basic {basic}", api=False) == (True, "bob")
    wrong = base64.b64encode(b"bob:pX").decode()
    assert access.authenticate(f"Basic {wrong}", api=False) == (False, None)
    assert access.authenticate("Basic !!!notbase64", api=False) == (False, None)
    assert access.authenticate("Bearer tok", api=True) == (True, "token")
    assert access.authenticate("Bearer tok", api=False)[0] is False  # pages need a user
    assert access.authenticate("", api=True)[0] is False
    assert Access().authenticate("", api=True) == (True, None)  # nothing configured


async def _call(middleware, method="GET", path="/", headers=()):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path,
             "headers": [(k.encode(), v.encode()) for k, v in headers]}
    await middleware(scope, receive, send)
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"")
                                                            for m in sent[1:])


async def _ok_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_middleware_rules():
    access = Access(users=[("ann", "pw")])
    mw = SecurityMiddleware(_ok_app, access)
    auth = ("authorization", "Basic " + base64.b64encode(b"ann:pw").decode())
    run = asyncio.run
    status, headers, _ = run(_call(mw))
    assert status == 401 and b"www-authenticate" in headers
    assert b"script-src 'self'" in headers[b"content-security-policy"]
    assert run(_call(mw, path="/healthcheck"))[0] == 200
    assert run(_call(mw, headers=[auth]))[0] == 200
    # a script's POST: no browser headers, no CSRF token needed
    assert run(_call(mw, "POST", "/api/task/revoke/x", [auth]))[0] == 200
    # a browser's POST needs the token, and never from another site
    browser = [auth, ("origin", "http://h:1"), ("host", "h:1"), ("sec-fetch-site", "same-origin")]
    assert run(_call(mw, "POST", "/api/x", browser))[0] == 403
    token = access.csrf_token("ann")
    assert run(_call(mw, "POST", "/api/x", [*browser, ("x-csrf-token", token)]))[0] == 200
    cross = [auth, ("origin", "http://evil"), ("host", "h:1"), ("x-csrf-token", token)]
    assert run(_call(mw, "POST", "/api/x", cross))[0] == 403
    site = [auth, ("sec-fetch-site", "cross-site"), ("x-csrf-token", token)]
    assert run(_call(mw, "POST", "/api/x", site))[0] == 403
    read_only = SecurityMiddleware(_ok_app, Access(read_only=True))
    status, _, body = run(_call(read_only, "POST", "/api/task/revoke/x"))
    assert status == 403 and b"Read only" in body


def test_change_log_coalesces_and_asks_slow_readers_to_resync():
    log = ChangeLog(size=10)
    seq = log.sequence
    for uuid in ["a", "b", "a", "c"]:
        log.note(uuid)
    now, changed = log.since(seq)
    assert changed == {"a", "b", "c"} and now == seq + 4
    assert log.since(now) == (now, set())
    for i in range(20):
        log.note(f"x{i}")
    assert log.since(now)[1] is None  # fell off the ring: resync
    assert CHANGE_RING >= 10_000


def test_sse_stream_pushes_changes_then_resync():
    log = ChangeLog(size=5)

    async def run():
        out = []
        disconnected = asyncio.Event()

        async def is_disconnected():
            return disconnected.is_set()

        stream = sse_stream(log, lambda ids: ",".join(sorted(ids)), lambda: "{}",
                            is_disconnected, interval=0.01)
        out.append(await stream.__anext__())  # retry
        out.append(await stream.__anext__())  # first summary
        log.note("t1")
        log.note("t2")
        out.append(await stream.__anext__())
        for i in range(10):
            log.note(f"y{i}")
        out.append(await stream.__anext__())  # summary after tasks
        out.append(await stream.__anext__())
        disconnected.set()
        return out

    out = asyncio.run(run())
    assert out[2] == b"event: tasks\ndata: t1,t2\n\n"
    assert out[4] == b"event: resync\ndata: {}\n\n"


def test_recent_tasks_page_newest_first_and_stay_bounded():
    from tidings.web.tasks import RecentTasks

    recent = RecentTasks(STATE.tasks.__contains__, limit=6)
    ids = {uuid[0]: uuid for uuid in STATE.tasks}
    for letter in "abcdab":  # b then a changed last
        recent.touch(ids[letter])
    assert recent.newest(None) == [ids[x] for x in "badc"]

    def page(**kwargs):
        return [u[0] for u, _ in task_page(STATE, TaskQuery(**kwargs), recent)]

    assert page() == ["b", "a", "d", "c"]
    assert page(limit=2) == ["b", "a"]
    assert page(limit=2, offset=1) == ["a", "d"]
    assert page(state="SUCCESS") == ["a", "c"]
    assert page(search="-state:success", limit=5) == ["b", "d"]
    # a page size past what an index can count (the API takes any integer)
    assert page(limit=2_310_000_000_000_000_000) == ["b", "a", "d", "c"]
    assert page(limit=2**70, offset=2**70) == []
    for i in range(10):  # ids of tasks State does not hold are pruned past the limit
        recent.touch(f"gone-{i}")
    assert len(recent) <= 6
    kept = recent.newest(None)
    assert set(ids.values()) <= set(kept)  # every task State holds is still there
    assert page() == ["b", "a", "d", "c"]
