"""The web monitor in a real browser: Playwright driving Debian's headless Chromium.

Against a real Tidings worker on RabbitMQ.  ``TIDINGS_REQUIRE_BROWSER=1`` makes
these tests fail instead of skipping when Chromium or Playwright is missing
(CI sets it and installs Chromium).
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.cli.helpers import wait_for
from tests.web.helpers import Web
from tests.worker.helpers import cluster
from tidings.events.dispatcher import EventDispatcher

pytestmark = [pytest.mark.broker]

CHROMIUM = os.environ.get("TIDINGS_CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("TIDINGS_REQUIRE_BROWSER", "").strip().lower() in (
    "1", "true", "yes")
XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_ARGS = "('</script><script>alert(2)</script>',)"


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        if REQUIRE_BROWSER:
            pytest.fail(f"browser required (TIDINGS_REQUIRE_BROWSER=1): {exc}")
        pytest.skip(f"playwright not installed: {exc}")
    if not shutil.which(CHROMIUM):
        if REQUIRE_BROWSER:
            pytest.fail(f"browser required (TIDINGS_REQUIRE_BROWSER=1): no {CHROMIUM}")
        pytest.skip(f"no {CHROMIUM} (apt-get install -y chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Page:
    """A page that records dialogs, script errors and full loads."""

    def __init__(self, browser, **context) -> None:
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.loads = 0
        self.accept = True
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("load", lambda _: self._loaded())

    def _loaded(self) -> None:
        self.loads += 1

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if dialog.type == "confirm" and self.accept:
            dialog.accept()
        else:
            dialog.dismiss()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def live(amqp_url, tmp_path):
    with cluster(amqp_url, tmp_path) as c:
        # prefork: terminate kills the child running the task
        c.worker("-E", "-P", "prefork", "-c", "3", name="w1@browser")
        web = Web(c.env, tmp_path, "--basic-auth", "ann:s3cret")
        try:
            yield c, web
        finally:
            web.stop()


def test_pages_follow_the_cluster_live_search_and_revoke(browser, live):
    c, web = live
    before = c.proj.add.delay(1, 1).id
    failed = c.proj.fail.delay(7).id
    p = Page(browser, http_credentials={"username": "ann", "password": "s3cret"},
             viewport={"width": 1300, "height": 900})
    page = p.page
    try:
        page.goto(web.url + "/tasks")
        page.wait_for_selector(f'#tasks tr[data-uuid="{failed}"]', timeout=20_000)
        loads = p.loads
        # a task sent after the page opened appears and reaches SUCCESS, without reload
        after = c.proj.sleep.delay(1.5).id
        row = page.locator(f'#tasks tr[data-uuid="{after}"]')
        row.wait_for(timeout=10_000)
        page.wait_for_function(
            f"""() => {{ const r = document.querySelector('#tasks tr[data-uuid="{after}"]');
                return r && r.textContent.includes('SUCCESS'); }}""", timeout=15_000)
        assert p.loads == loads  # no reload happened
        assert page.locator("#live").inner_text().startswith("live")
        # search, and an invalid query says where it failed
        page.fill("#search", "state:failure")
        page.click("#search-form button[type=submit]")
        page.wait_for_function(
            "() => document.querySelectorAll('#tasks tbody tr').length === 1", timeout=10_000)
        assert page.locator(f'#tasks tr[data-uuid="{failed}"]').count() == 1
        page.fill("#search", "(state:failure")
        page.click("#search-form button[type=submit]")
        page.wait_for_function(
            "() => document.getElementById('search-error').textContent.includes('position')",
            timeout=10_000)
        # the task page: fields, traceback, timeline
        page.goto(f"{web.url}/task/{failed}")
        assert "FAILURE" in page.locator("#fields").inner_text()
        assert "intentional failure for x=7" in page.content()
        assert page.locator("#timeline tbody tr").count() >= 3
        assert page.locator("#tree li.current").count() == 1
        # terminate a running task, with a confirmation, and see the worker's answer
        running = c.proj.sleep.delay(60).id
        assert wait_for(lambda: web.get(f"/api/task/info/{running}",
                                        auth=("ann", "s3cret"))[2].get("state") == "STARTED",
                        20)
        page.goto(f"{web.url}/task/{running}")
        p.accept = False
        page.click("button:has-text('Terminate')")
        assert p.dialogs[-1].startswith("confirm: Terminate task")
        page.wait_for_timeout(500)
        assert web.get(f"/api/task/info/{running}", auth=("ann", "s3cret"))[2][
            "state"] == "STARTED"  # dismissed: nothing sent
        p.accept = True
        page.click("button:has-text('Terminate')")
        page.wait_for_function(
            f"() => document.getElementById('message').textContent === \"Revoked '{running}'\"",
            timeout=10_000)
        page.wait_for_function(
            """() => [...document.querySelectorAll('#fields tr')].some(
                r => r.cells[0].textContent === 'state' && r.cells[1].textContent === 'REVOKED')""",
            timeout=20_000)
        assert before and not p.errors, p.errors
    finally:
        p.close()


def test_event_data_is_shown_as_text_and_never_runs(browser, live):
    c, web = live
    uuid = "xss-task-0001"
    with c.app.connection_for_write() as conn:
        d = EventDispatcher(conn, hostname="<b>evil</b>@host", app=c.app)
        d.send("task-received", uuid=uuid, name=XSS_NAME, args=XSS_ARGS,
               kwargs="{'k': '\"><svg onload=alert(3)>'}", retries=0)
        d.send("task-failed", uuid=uuid, exception="<script>alert(4)</script>",
               traceback="</pre><img src=x onerror=alert(5)>")
    assert wait_for(lambda: web.get(f"/api/task/info/{uuid}", auth=("ann", "s3cret"))[0]
                    == 200, 20)
    p = Page(browser, http_credentials={"username": "ann", "password": "s3cret"})
    page = p.page
    try:
        for path in ("/", "/tasks", f"/task/{uuid}", "/failures",
                     "/worker/%3Cb%3Eevil%3C%2Fb%3E%40host"):
            page.goto(web.url + path)
            page.wait_for_timeout(1200)  # live pushes and the table's fetch have run
            assert page.locator("img, svg[onload], script:not([src])").count() == 0, path
        page.goto(f"{web.url}/task/{uuid}")
        assert XSS_NAME in page.locator("h1").inner_text()
        page.goto(web.url + "/tasks")
        page.wait_for_selector(f'#tasks tr[data-uuid="{uuid}"]')
        assert XSS_NAME in page.locator(f'#tasks tr[data-uuid="{uuid}"]').inner_text()
        assert "</script><script>alert(2)</script>" in page.locator("#tasks").inner_text()
        assert p.dialogs == [], p.dialogs
        assert not p.errors, p.errors
    finally:
        p.close()


def test_a_wrong_password_is_refused_and_read_only_shows_no_action(browser, live, tmp_path):
    c, web = live
    p = Page(browser, http_credentials={"username": "ann", "password": "wrong"})
    try:
        response = p.page.goto(web.url + "/")
        assert response.status == 401
    finally:
        p.close()
    ro = Web(c.env, tmp_path, "--read-only", name="ro")
    task = c.proj.add.delay(2, 2).id
    p = Page(browser)
    try:
        assert wait_for(lambda: ro.get(f"/api/task/info/{task}")[0] == 200, 20)
        p.page.goto(f"{ro.url}/task/{task}")
        assert p.page.locator("button.action").count() == 0
        p.page.goto(f"{ro.url}/worker/w1@browser")
        assert p.page.locator("button.action").count() == 0
        status = p.page.evaluate(
            f"""async () => (await fetch('/api/task/revoke/{task}', {{method: 'POST',
                 headers: {{'X-CSRF-Token': document.querySelector(
                 'meta[name=csrf-token]').content}}}})).status""")
        assert status == 403
    finally:
        p.close()
        ro.stop()
