"""The monitor on a real cluster: pilot-driven, and in a real terminal (tmux)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time

import pytest

from tests.cli.helpers import TIDINGS
from tests.worker.helpers import cluster, wait_for
from tidings.events import State
from tidings.top import Ingest
from tidings.top.app import ConfirmScreen, TaskTable, TextScreen, TopApp

pytestmark = pytest.mark.broker


def test_live_worker_states_and_revoke(amqp_url, tmp_path):
    with cluster(amqp_url, tmp_path) as c:
        c.worker("-E", "-P", "prefork", "-c", "2", name="top@test")
        state = State()
        ingest = Ingest(c.app, state).start()
        try:
            assert wait_for(lambda: "top@test" in state.workers, 20)
            ok = c.proj.add.delay(2, 3)
            bad = c.proj.fail.delay(7)
            long = c.proj.sleep.delay(30)
            assert wait_for(lambda: all(
                u in state.tasks and state.tasks[u].state in ("SUCCESS", "FAILURE", "STARTED")
                for u in (ok.id, bad.id, long.id)), 20)

            async def go():
                tui = TopApp(state, app=c.app, source=ingest.source, label="live",
                             refresh=0.2)
                async with tui.run_test(size=(120, 40)) as pilot:
                    await pilot.pause(0.5)
                    text = tui.query_one(TaskTable).render().plain
                    assert "SUCCESS" in text and "FAILURE" in text and "STARTED" in text
                    table = tui.query_one(TaskTable)
                    index = next(i for i, t in enumerate(table.rows) if t.uuid == long.id)
                    table.move(to=index)
                    await pilot.press("c")
                    assert isinstance(tui.screen, ConfirmScreen)
                    await pilot.press("y")
                    for _ in range(100):  # the reply screen, once composed
                        await pilot.pause(0.1)
                        if isinstance(tui.screen, TextScreen) and tui.screen.query("#text-body"):
                            break
                    reply = str(tui.screen.query_one("#text-body").render())
                    assert f"top@test: terminate: {long.id}" in reply
                    await pilot.press("escape")
                    for _ in range(50):
                        await pilot.pause(0.1)
                        if state.tasks[long.id].state == "REVOKED":
                            break
                    await pilot.pause(0.5)
                    assert "REVOKED" in tui.query_one(TaskTable).render().plain
            asyncio.run(go())
        finally:
            ingest.close()


def test_the_table_follows_new_tasks_at_the_top_and_keeps_its_place_below(amqp_url,
                                                                            tmp_path):
    with cluster(amqp_url, tmp_path) as c:
        c.worker("-E", "-P", "threads", "-c", "4", name="top@test")
        state = State()
        ingest = Ingest(c.app, state).start()
        sending = threading.Event()

        def client() -> None:  # a live stream: a task every 50 ms
            i = 0
            while not sending.is_set():
                c.proj.add.delay(i, i)
                i += 1
                sending.wait(0.05)

        sender = threading.Thread(target=client, daemon=True)
        sender.start()
        try:
            assert wait_for(lambda: len(state.tasks) >= 5, 20)

            async def go():
                tui = TopApp(state, app=c.app, source=ingest.source, label="live",
                             refresh=0.2)
                async with tui.run_test(size=(120, 40)) as pilot:
                    table = tui.query_one(TaskTable)
                    status = tui.query_one("#status-text")
                    await pilot.pause(0.5)
                    first = table.rows[0].uuid
                    await pilot.pause(1.0)
                    # at the top: the first row is a newer task, and it is selected
                    assert table.rows[0].uuid != first and table.cursor == 0
                    assert table.selected.uuid == table.rows[0].uuid
                    assert abs(len(state.tasks) - len(table.rows)) < 40
                    await pilot.press("down", "down", "down")
                    chosen, line = table.selected.uuid, table.cursor - table.top
                    await pilot.pause(1.0)
                    # moved down: same task, same screen line, new tasks counted above
                    assert table.selected.uuid == chosen
                    assert table.cursor - table.top == line
                    assert table.new_above >= 5
                    assert f"↑ {table.new_above:,} new above (Home)" in \
                        str(status.render())
                    await pilot.press("home")
                    await pilot.pause(1.0)
                    assert table.new_above == 0 and table.cursor == 0
                    assert "new above" not in str(status.render())
                    latest = table.rows[0].uuid
                    await pilot.pause(0.8)
                    assert table.rows[0].uuid != latest  # following again

            asyncio.run(go())
        finally:
            sending.set()
            sender.join(5)
            ingest.close()


class Terminal:
    """A command in a detached 120x40 tmux session; its exit status lands in a file."""

    def __init__(self, command: str, tmp_path) -> None:
        self.session = f"tidings-test-{int(time.time() * 1000) % 10**8}"
        self.exit_file = tmp_path / "exit-code"
        # COLUMNS/LINES from the test's own environment would override the pane's size
        subprocess.run(["tmux", "new-session", "-d", "-s", self.session, "-x", "120", "-y",
                        "40", f"env -u COLUMNS -u LINES {command}; "
                              f"echo $? > {self.exit_file}"], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.session],
                              capture_output=True, text=True).stdout

    def quit_status(self) -> str:
        """Press q and return the command's exit status."""
        subprocess.run(["tmux", "send-keys", "-t", self.session, "q"], check=True)
        assert wait_for(self.exit_file.exists, 15), self.screen()
        return self.exit_file.read_text().strip()

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)


needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")


@needs_tmux
def test_in_a_real_terminal(amqp_url, tmp_path):
    with cluster(amqp_url, tmp_path) as c:
        c.worker("-E", "-P", "solo", name="tmux@test")
        env_args = [f"{k}={v}" for k, v in c.env.items() if k.startswith(("TIDINGS_", "PYTHON"))]
        term = Terminal(f"env {' '.join(env_args)} {TIDINGS} -b {amqp_url} events "
                        f"--refresh 0.3", tmp_path)
        try:
            assert wait_for(lambda: "tidings events" in term.screen(), 20), term.screen()
            time.sleep(1.5)  # let the receiver bind its queue
            ok = c.proj.add.delay(2, 3)
            bad = c.proj.fail.delay(7)
            assert wait_for(lambda: "SUCCESS" in term.screen() and "FAILURE" in term.screen(),
                            30), term.screen()
            text = term.screen()
            assert ok.id[:8] in text and bad.id[:8] in text
            assert "proj.add" in text and "proj.fail" in text and "tmux@test" in text
            assert term.quit_status() == "0"
        finally:
            term.close()


@needs_tmux
def test_unreachable_broker_is_shown_and_retried(tmp_path):
    term = Terminal(f"{TIDINGS} -b amqp://guest:secret@127.0.0.1:1// events", tmp_path)
    try:
        assert wait_for(lambda: "amqp://guest:***@127.0.0.1:1//   ⚠ Cannot connect"
                        in term.screen() and "retrying" in term.screen(), 20), term.screen()
        assert "secret" not in term.screen()
        time.sleep(2.5)
        assert "Cannot connect" in term.screen()  # still up, still trying
        assert term.quit_status() == "0"
    finally:
        term.close()


@needs_tmux
def test_replay_in_the_monitor_honours_the_filters(tmp_path):
    """--replay with --type in monitor mode shows only what the filter keeps (it used not to)."""
    from tests.conftest import FIXTURES

    corpus = FIXTURES / "events-rabbitmq.jsonl"
    term = Terminal(f"{TIDINGS} -b memory:// events --replay {corpus} --type task-failed "
                    f"--refresh 0.2", tmp_path)
    try:
        assert wait_for(lambda: "FAILURE" in term.screen(), 20), term.screen()
        time.sleep(0.5)
        text = term.screen()
        assert "350c241d" in text and "9269de98" in text
        rows = [line for line in text.split("events/s")[0].splitlines()[1:]
                if "UUID" not in line]  # the title and the column header aside
        for other in ("SUCCESS", "STARTED", "RECEIVED", "REVOKED", "RETRY"):
            assert not any(other in row for row in rows), text
        assert "2 tasks" in text, text
        assert term.quit_status() == "0"
    finally:
        term.close()


@needs_tmux
def test_the_monitor_keeps_its_history_in_a_database(amqp_url, tmp_path):
    """``events --db``: quit, start again, and the tasks from before are on screen."""
    with cluster(amqp_url, tmp_path) as c:
        c.worker("-E", "-P", "solo", name="hist@test")
        db = f"sqlite:///{tmp_path / 'history.sqlite'}"
        env_args = [f"{k}={v}" for k, v in c.env.items() if k.startswith(("TIDINGS_", "PYTHON"))]
        command = (f"env {' '.join(env_args)} {TIDINGS} -b {amqp_url} events --db {db} "
                   "--refresh 0.3")
        term = Terminal(command, tmp_path)
        try:
            assert wait_for(lambda: "tidings events" in term.screen(), 20), term.screen()
            time.sleep(1.5)
            ok = c.proj.add.delay(2, 3)
            assert wait_for(lambda: "SUCCESS" in term.screen(), 30), term.screen()
            time.sleep(1.5)  # one write interval
            assert term.quit_status() == "0"
        finally:
            term.close()
        term.exit_file.unlink()
        again = Terminal(command, tmp_path)
        try:
            assert wait_for(lambda: ok.id[:8] in again.screen(), 20), again.screen()
            assert "SUCCESS" in again.screen() and "proj.add" in again.screen()
            assert again.quit_status() == "0"
        finally:
            again.close()
