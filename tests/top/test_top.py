"""The live monitor, driven headless with Textual's pilot."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import FIXTURES
from tidings import App
from tidings.events import State
from tidings.events.log import replay
from tidings.top.app import ConfirmScreen, TaskTable, TextScreen, TopApp, WorkersPanel


@pytest.fixture
def corpus_state():
    app = App(broker="memory://")
    state = State()
    stats = replay(FIXTURES / "events-rabbitmq.jsonl", state.event,
                   clock=app.clock)
    assert stats.events == 107
    return state


def run(coro):
    return asyncio.run(coro)


def screen_text(tui: TopApp) -> str:
    return tui.query_one(TaskTable).render().plain


def body_text(tui: TopApp) -> str:
    return str(tui.screen.query_one("#text-body").render())


def test_shows_tasks_newest_first_with_states_and_status(corpus_state):
    async def go():
        tui = TopApp(corpus_state, label="amqp://guest:***@h//", refresh=0.1)
        async with tui.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            table = tui.query_one(TaskTable)
            expected = [u for u, _ in corpus_state.tasks_by_time()]
            assert [t.uuid for t in table.rows] == expected
            text = screen_text(tui)
            assert text.splitlines()[0].split()[:6] == ["UUID", "NAME", "WORKER", "STATE",
                                                        "RECEIVED", "RUNTIME"]
            assert "proj.retry_once" in text and "FAILURE" in text and "REVOKED" in text
            status = str(tui.query_one("#status-text").render())
            assert "107 events" in status and "15 tasks" in status
            assert "success 9" in status and "failure 2" in status
            assert "amqp://guest:***@h//" in status and "skipped malformed: 0" in status
            workers = str(tui.query_one(WorkersPanel).render())
            assert "w1@corpus" in workers and "offline" in workers
    run(go())


def test_navigation_keys(corpus_state):
    async def go():
        tui = TopApp(corpus_state, refresh=0.1)
        async with tui.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            table = tui.query_one(TaskTable)
            rows = [t.uuid for t in table.rows]
            await pilot.press("j", "down", "j")
            assert table.cursor == 3 and table.selected.uuid == rows[3]
            await pilot.press("k", "up")
            assert table.cursor == 1
            await pilot.press("end")
            assert table.cursor == len(rows) - 1
            await pilot.press("home")
            assert table.cursor == 0
            await pilot.press("pagedown")
            assert table.cursor == len(rows) - 1  # 15 tasks fit in one page
            await pilot.pause(0.3)  # a refresh keeps the selection on the same task
            assert table.selected.uuid == rows[-1]
    run(go())


def test_details_traceback_result(corpus_state):
    async def go():
        tui = TopApp(corpus_state, refresh=0.1)
        async with tui.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            table = tui.query_one(TaskTable)
            failed = next(i for i, t in enumerate(table.rows) if t.name == "proj.fail")
            table.move(to=failed)
            await pilot.press("enter")
            assert isinstance(tui.screen, TextScreen)
            details = body_text(tui)
            assert "proj.fail" in details and "FAILURE" in details and "(7,)" in details
            assert "intentional failure for x=7" in details and "Traceback" in details
            await pilot.press("escape")
            await pilot.press("t")
            assert isinstance(tui.screen, TextScreen)
            assert body_text(tui).startswith("Traceback (most recent call last)")
            await pilot.press("escape")
            await pilot.press("r")  # a failed task: its exception
            assert "ValueError('intentional failure for x=7" in body_text(tui)
            await pilot.press("q")
            ok = next(i for i, t in enumerate(table.rows) if t.state == "SUCCESS")
            table.move(to=ok)
            await pilot.press("r")
            assert body_text(tui) == table.rows[ok].result
            await pilot.press("escape")
            await pilot.press("t")  # no traceback: a notice, no screen
            assert not isinstance(tui.screen, TextScreen)
            await pilot.press("i")
            assert isinstance(tui.screen, TextScreen)
    run(go())


def test_filter(corpus_state):
    async def go():
        tui = TopApp(corpus_state, refresh=0.1)
        async with tui.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("slash")
            await pilot.press(*"state:failure")
            await pilot.press("enter")
            await pilot.pause(0.3)
            table = tui.query_one(TaskTable)
            assert sorted(t.name for t in table.rows) == ["proj.fail", "proj.reject_me"]
            assert "2 shown" in str(tui.query_one("#status-text").render())
            await pilot.press("escape")
            await pilot.pause(0.3)
            assert len(table.rows) == 15
            await pilot.press("slash", *"spawn", "enter")
            await pilot.pause(0.3)
            assert {t.name for t in table.rows} == {"proj.spawn"} and len(table.rows) == 3
            await pilot.press("slash")
            tui.query_one("#filter").value = ""
            await pilot.press(*"zzz-nothing", "enter")
            await pilot.pause(0.3)
            assert table.rows == [] and "No task matches" in screen_text(tui)
    run(go())


def test_workers_toggle_help_and_quit(corpus_state):
    async def go():
        tui = TopApp(corpus_state, refresh=0.1)
        async with tui.run_test(size=(80, 24)) as pilot:  # the smallest supported size
            await pilot.pause(0.3)
            panel = tui.query_one(WorkersPanel)
            assert panel.display
            await pilot.press("w")
            assert not panel.display
            await pilot.press("w")
            assert panel.display
            await pilot.press("question_mark")
            assert isinstance(tui.screen, TextScreen) and "filter" in body_text(tui)
            await pilot.press("escape")
            await pilot.press("q")
        assert tui.return_code in (0, None)
    run(go())


def test_revoke_asks_first_and_shows_the_reply(corpus_state):
    async def go():
        tui = TopApp(corpus_state, refresh=0.1)
        async with tui.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("c")
            assert isinstance(tui.screen, ConfirmScreen)
            await pilot.press("n")
            assert not isinstance(tui.screen, ConfirmScreen)
            await pilot.press("c", "y")
            await pilot.pause(0.5)
            assert isinstance(tui.screen, TextScreen)
            assert "nothing to revoke" in body_text(tui)
    run(go())


def test_mouse_scroll_and_click(corpus_state):
    async def go():
        tui = TopApp(corpus_state, refresh=0.1)
        async with tui.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            table = tui.query_one(TaskTable)
            await pilot.click(TaskTable, offset=(5, 4))  # header is line 0
            assert table.cursor == 3
            from textual import events

            table.post_message(events.MouseScrollDown(table, 5, 3, 0, 1, 0, False, False,
                                                      False))
            await pilot.pause(0.1)
            assert table.cursor == 6
            await pilot.double_click(TaskTable, offset=(5, 2))
            assert isinstance(tui.screen, TextScreen)
            assert table.rows[1].uuid in str(tui.screen.query_one("#text-title").render())
            await pilot.press("escape")
            await pilot.resize_terminal(80, 24)  # resizes cleanly down to 80x24
            await pilot.pause(0.3)
            assert len(screen_text(tui).splitlines()) <= 24
    run(go())
