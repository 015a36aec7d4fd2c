"""The live terminal monitor (``tidings events`` with no mode flag), built with Textual.

Events are consumed in a thread of their own into a :class:`State`; the
screen is rebuilt a few times a second from a snapshot (see
:mod:`tidings.top.view`), so a busy cluster never slows the keys down and
the screen never slows ingest down.
"""

from __future__ import annotations

import threading
from typing import Any

from rich.text import Text
from textual import events as tevents
from textual.app import App as TextualApp
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Input, Sparkline, Static

from ..events.source import EventSource
from ..events.state import State, Task
from ..protocol import states
from ..protocol.events import TASK_TIME_FIELDS
from .view import STATE_ORDER, Filter, View, ViewBuilder, fmt_runtime, fmt_time

STATE_STYLES = {
    states.PENDING: "grey62",
    states.RECEIVED: "cyan",
    states.STARTED: "yellow",
    states.SUCCESS: "green",
    states.FAILURE: "bold red",
    states.RETRY: "dark_orange",
    states.REVOKED: "magenta",
    states.REJECTED: "red",
}

#: Task attributes holding epoch times, shown as clock times in the details.
TIME_FIELDS = (*TASK_TIME_FIELDS, "timestamp")
#: The details view, top to bottom (times last).
DETAIL_FIELDS = ("name", "state", "worker", "client", "args", "kwargs", "result",
                 "exception", "runtime", "retries", "eta", "expires", "root_id", "parent_id",
                 "exchange", "routing_key", *TIME_FIELDS)

HELP = """\
[b]Keys[/b]
  ↑ ↓ j k        move            PgUp PgDn Home End   page / ends
  Enter, i       task details    t   traceback         r   result
  /              filter (words match name, uuid, worker, state;
                 state:failure name:proj.add worker:w1 uuid:7f1c)
  Esc            clear the filter
  c              revoke the selected task (asks first)
  w              show or hide the workers panel
  ?              this help       q, Ctrl-C            quit
The mouse wheel scrolls, a click selects, a double click opens details.
"""


#: Rows searched for the selected task and the first task the user saw when a
#: new view arrives (the selection is kept; beyond this many new tasks, the
#: cursor keeps its index instead).
FOLLOW_SCAN = 20_000


class TaskTable(Widget, can_focus=True):
    """The task list: renders only the visible window of the (sorted) view.

    On the first row it *follows*: new tasks appear at the top and the
    selection stays on the newest (as ``top`` and ``less +F`` do).  Moved
    down, it keeps its place: the selected task stays on the same screen
    line while new tasks arrive above, and :attr:`new_above` counts them
    (shown in the status bar) until the user goes back up (Home).
    """

    DEFAULT_CSS = "TaskTable { height: 1fr; }"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rows: list[Task] = []
        self.cursor = 0
        self.top = 0
        self.selected_uuid: str | None = None
        self.follow = True
        self.new_above = 0  # tasks that arrived above since the user left the top
        self._first_seen: str | None = None  # the newest task when the user left the top
        self._lines: list[tuple] = []

    @property
    def page(self) -> int:
        return max(1, self.size.height - 1)

    def set_rows(self, rows: list[Task], state: State) -> None:
        line = self.cursor - self.top  # where the selection is on the screen
        self.rows = rows
        if self.follow:
            self.cursor = self.top = 0
        else:
            wanted = {self.selected_uuid, self._first_seen}
            for i, task in enumerate(rows[:FOLLOW_SCAN]):
                if task.uuid not in wanted:
                    continue
                if task.uuid == self._first_seen:
                    self.new_above = i
                if task.uuid == self.selected_uuid:
                    self.cursor = i
                    self.top = max(0, i - line)
        self._clamp()
        self._snapshot(state)

    def follow_newest(self) -> None:
        """Back to the first row, following new tasks."""
        self.move(to=0)

    def _snapshot(self, state: State) -> None:
        visible = self.rows[self.top:self.top + self.page]
        self._lines = state.read_tasks(visible, _table_row)  # rows read at one instant
        self.refresh()

    def _clamp(self) -> None:
        n = len(self.rows)
        self.cursor = max(0, min(self.cursor, n - 1)) if n else 0
        if self.cursor < self.top:
            self.top = self.cursor
        elif self.cursor >= self.top + self.page:
            self.top = self.cursor - self.page + 1
        self.top = max(0, min(self.top, max(0, n - self.page)))
        self.selected_uuid = self.rows[self.cursor].uuid if n else None

    def move(self, delta: int | None = None, to: int | None = None) -> None:
        self.cursor = to if to is not None else self.cursor + (delta or 0)
        if to is not None and to < 0:
            self.cursor = len(self.rows) - 1
        self._clamp()
        following = self.cursor == 0
        if self.follow and not following:  # leaving the top: count what comes above
            self._first_seen = self.rows[0].uuid if self.rows else None
        if following:
            self._first_seen = None
            self.new_above = 0
        self.follow = following
        app = self.app
        if isinstance(app, TopApp):
            self._snapshot(app.state)

    @property
    def selected(self) -> Task | None:
        return self.rows[self.cursor] if self.rows else None

    def render(self) -> Text:
        width = max(self.size.width, 40)
        fixed = 9 + 10 + 9 + 9 + 5
        flex = max(width - fixed, 20)
        name_w = flex * 3 // 5
        worker_w = flex - name_w
        text = Text(no_wrap=True, overflow="ellipsis")
        header = (f"{'UUID':<8} {'NAME':<{name_w}} {'WORKER':<{worker_w}} {'STATE':<9} "
                  f"{'RECEIVED':<8} {'RUNTIME':>8}")
        text.append(header[:width] + "\n", style="bold underline")
        if not self.rows:
            text.append("No tasks yet." if not self.app.query("#filter").first().value
                        else "No task matches the filter.", style="dim")
            return text
        for i, (uuid, name, worker, state, received, runtime) in enumerate(self._lines):
            row = Text(no_wrap=True)
            row.append(f"{uuid[:8]:<8} ")
            row.append(f"{_cut(name, name_w):<{name_w}} ")
            row.append(f"{_cut(worker, worker_w):<{worker_w}} ")
            row.append(f"{state:<9}", style=STATE_STYLES.get(state, "white"))
            row.append(f" {received:<8} {runtime:>8}")
            if self.top + i == self.cursor:
                row.stylize("reverse")
            text.append_text(row)
            text.append("\n")
        return text

    def on_mouse_scroll_down(self, event: tevents.MouseScrollDown) -> None:
        self.move(3)
        event.stop()

    def on_mouse_scroll_up(self, event: tevents.MouseScrollUp) -> None:
        self.move(-3)
        event.stop()

    def on_click(self, event: tevents.Click) -> None:
        if event.y >= 1:
            index = self.top + event.y - 1
            if index < len(self.rows):
                self.move(to=index)
                if event.chain >= 2 and isinstance(self.app, TopApp):
                    self.app.action_details()


def _table_row(t: Task) -> tuple[str, str, str, str, str, str]:
    return (t.uuid or "", t.name or "", t.worker.hostname if t.worker else "",
            t.state or "", fmt_time(t.received or t.sent or t.timestamp),
            fmt_runtime(t.runtime))


def _details(task: Task) -> tuple[dict[str, Any], str | None]:
    info = {"name": task.name, "state": task.state,
            "worker": task.worker.hostname if task.worker else None, "client": task.client}
    info.update(task.info(extra=TIME_FIELDS))
    return info, task.traceback


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


class WorkersPanel(Static):
    DEFAULT_CSS = "WorkersPanel { height: auto; max-height: 12; border-top: solid $primary; }"

    def show(self, view: View) -> None:
        text = Text(no_wrap=True)
        text.append(f"{'WORKER':<32} {'STATUS':<8} {'ACTIVE':>6} {'PROCESSED':>10} "
                    f"{'LOAD':<18} {'LAST BEAT':>9}\n", style="bold")
        if not view.workers:
            text.append("No workers seen yet.", style="dim")
        for hostname, alive, active, processed, loadavg, ago in view.workers:
            load = " ".join(f"{x:.2f}" for x in loadavg) if isinstance(loadavg, list) else ""
            text.append(f"{_cut(hostname, 32):<32} ")
            text.append(f"{'online' if alive else 'offline':<8}",
                        style="green" if alive else "red")
            text.append(f" {active if active is not None else '':>6} "
                        f"{processed if processed is not None else '':>10} {load:<18} "
                        f"{'' if ago is None else f'{ago:.0f}s ago':>9}\n")
        self.update(text)


class TextScreen(ModalScreen):
    """Scrollable text (details, traceback, result, help, replies); any of Esc/q closes it."""

    BINDINGS = [Binding("escape,q,enter", "app.pop_screen", "Close")]
    DEFAULT_CSS = """
    TextScreen { align: center middle; }
    TextScreen > VerticalScroll { width: 90%; height: 85%; border: thick $primary;
                                  background: $surface; padding: 0 1; }
    """

    def __init__(self, title: str, body: Any) -> None:
        super().__init__()
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="text-scroll"):
            yield Static(Text(self.title_text, style="bold"), id="text-title")
            yield Static(self.body, id="text-body")


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Static { width: 70; border: thick $warning; background: $surface;
                             padding: 1 2; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        yield Static(f"{self.question}\n\n[b]y[/b] yes   [b]n[/b] no", id="question")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class TopApp(TextualApp):
    """``TopApp(state, app=None, source=None, label=None, refresh=0.5, exit_after=None)``.

    ``source`` (an :class:`~tidings.events.source.EventSource`) supplies the
    skipped-input counts and connection status, and names what is watched
    unless ``label`` does; ``app`` is used to revoke tasks (none for
    replayed events).
    """

    TITLE = "tidings events"
    CSS = """
    #title { height: 1; background: $primary; color: $text; padding: 0 1; }
    #status { height: 2; }
    #status-text { width: 1fr; }
    #rate { width: 30; height: 2; }
    #filter { display: none; }
    #filter.active { display: block; }
    #keys { height: 1; color: $text-muted; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", priority=True),
        Binding("down,j", "move(1)", "Down", show=False),
        Binding("up,k", "move(-1)", "Up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("home", "ends(0)", "First", show=False),
        Binding("end", "ends(-1)", "Last", show=False),
        Binding("enter,i", "details", "Details"),
        Binding("t", "traceback", "Traceback"),
        Binding("r", "result", "Result"),
        Binding("slash", "filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("c", "revoke", "Revoke"),
        Binding("w", "toggle_workers", "Workers"),
        Binding("question_mark", "help", "Help"),
    ]

    def __init__(self, state: State, app: Any = None, source: EventSource | None = None,
                 label: str | None = None, refresh: float = 0.5,
                 exit_after: float | None = None) -> None:
        super().__init__()
        self.exit_after = exit_after
        self.state = state
        self.tidings_app = app
        self.source = source
        if label is None:
            label = source.label if source is not None else ""
        self.broker_label = label
        self.refresh_every = refresh
        self.builder = ViewBuilder(state)
        self.view: View | None = None
        self._building = threading.Lock()

    def compose(self) -> ComposeResult:
        yield Static(f"tidings events — {self.broker_label}", id="title")
        yield Input(placeholder="filter: words, or state:failure name:… worker:… uuid:…",
                    id="filter")
        yield TaskTable(id="tasks")
        yield WorkersPanel(id="workers")
        with Horizontal(id="status"):
            yield Static(id="status-text")
            yield Sparkline([0], id="rate")
        yield Static("q quit  ↑↓ move  Enter details  t traceback  r result  / filter  "
                     "c revoke  w workers  ? help", id="keys")

    def on_mount(self) -> None:
        self.query_one(TaskTable).focus()
        self.rebuild()
        self.set_interval(self.refresh_every, self.rebuild)
        if self.exit_after:
            self.set_timer(self.exit_after, self.exit)

    # -- refreshing ----------------------------------------------------------------------

    def rebuild(self) -> None:
        """Take a new view in a worker thread; the screen is updated when it is ready."""
        if not self._building.acquire(blocking=False):
            return  # the previous one is still being built: skip this tick
        self.run_worker(self._build, thread=True, exclusive=False, group="view")

    def _build(self) -> None:
        try:
            view = self.builder.build()
        finally:
            self._building.release()
        self.call_from_thread(self.show_view, view)

    def show_view(self, view: View) -> None:
        if not self.is_running or not self.screen_stack:
            return  # built while the monitor was closing: nothing left to show it on
        base = self.screen_stack[0]  # the main screen, also under a dialog
        tables = base.query(TaskTable)
        if not tables:
            return
        self.view = view
        table = tables.first()
        table.set_rows(view.tasks, self.state)
        workers = base.query_one(WorkersPanel)
        if workers.display:
            workers.show(view)
        base.query_one("#status-text", Static).update(self._status_text(view, table.new_above))
        base.query_one("#title", Static).update(self._title_text())
        rates = self.builder.rate.per_second() or [0.0]
        base.query_one("#rate", Sparkline).data = rates

    def _status_text(self, view: View, new_above: int = 0) -> Text:
        rates = self.builder.rate.per_second()
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{rates[-1] if rates else 0:,.0f} events/s  ", style="bold")
        text.append(f"{view.event_count:,} events  {view.total:,} tasks: ")
        for state in STATE_ORDER:
            n = view.counts.get(state)
            if n:
                text.append(f"{state.lower()} {n:,}  ", style=STATE_STYLES[state])
        shown = len(view.tasks)
        if self.builder.filter:
            text.append(f"(filter: {shown:,} shown)  ", style="italic")
        if new_above:
            text.append(f"↑ {new_above:,} new above (Home)  ", style="bold reverse")
        text.append("\n")
        errors = dict(self.source.errors) if self.source is not None else {}
        skipped = sum(errors.values())
        text.append(f"broker {self.broker_label}  ")
        text.append(f"skipped malformed: {skipped}"
                    + (f" ({', '.join(f'{k} {v}' for k, v in sorted(errors.items()))})"
                       if skipped else ""),
                    style="yellow" if skipped else "dim")
        losses = self.source.losses if self.source is not None else None
        if losses:
            text.append(f"  lost: {losses.total:,} ({losses})", style="bold red")
        return text

    def _title_text(self) -> Text:
        """The title line, with the receiver's trouble (if any) in plain sight."""
        text = Text(f"tidings events — {self.broker_label}", no_wrap=True,
                    overflow="ellipsis")
        status = self.source.status if self.source is not None else None
        if status is not None and not status.ok:
            label = self.source.label  # type: ignore[union-attr]
            trouble = status.text.replace(f" to {label}", "")  # already on this line
            text.append(f"   ⚠ {trouble}", style="bold white on red")
        return text

    # -- actions -------------------------------------------------------------------------

    @property
    def table(self) -> TaskTable:
        return self.query_one(TaskTable)

    def action_move(self, delta: int) -> None:
        self.table.move(delta)

    def action_page(self, direction: int) -> None:
        self.table.move(direction * self.table.page)

    def action_ends(self, where: int) -> None:
        self.table.move(to=where)

    def _selected(self) -> Task | None:
        task = self.table.selected
        if task is None:
            self.bell()
        return task

    def action_details(self) -> None:
        task = self._selected()
        if task is None:
            return
        info, tb = self.state.read_tasks([task], _details)[0]
        body = Text()
        for key in DETAIL_FIELDS:
            value = info.get(key)
            if value is None:
                continue
            if key in TIME_FIELDS:
                value = f"{fmt_time(value)} ({value})"
            body.append(f"{key:>12}: ", style="bold")
            body.append(f"{value}\n", style=STATE_STYLES.get(value, "") if key == "state"
                        else "")
        if tb:
            body.append("\n   traceback:\n", style="bold")
            body.append(tb)
        self.push_screen(TextScreen(f"Task {task.uuid}", body))

    def action_traceback(self) -> None:
        task = self._selected()
        if task is None:
            return
        tb = task.traceback
        if not tb:
            self.notify("This task has no traceback.", severity="warning")
            return
        self.push_screen(TextScreen(f"Traceback of {task.uuid}", Text(tb)))

    def action_result(self) -> None:
        task = self._selected()
        if task is None:
            return
        value = task.result if task.result is not None else task.exception
        if value is None:
            self.notify("This task has no result yet.", severity="warning")
            return
        self.push_screen(TextScreen(f"Result of {task.uuid}", Text(str(value))))

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.add_class("active")
        field.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.builder.filter = Filter.parse(event.value)
        if not event.value:
            event.input.remove_class("active")
        self.table.focus()
        self.table.follow_newest()
        self.rebuild()

    def action_clear_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.value = ""
        field.remove_class("active")
        self.builder.filter = Filter()
        self.table.focus()
        self.rebuild()

    def action_toggle_workers(self) -> None:
        panel = self.query_one(WorkersPanel)
        panel.display = not panel.display
        if panel.display and self.view is not None:
            panel.show(self.view)

    def action_help(self) -> None:
        self.push_screen(TextScreen("Help", Text.from_markup(HELP)))

    def action_revoke(self) -> None:
        task = self._selected()
        if task is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(lambda: self._revoke(task.uuid), thread=True, group="control")

        self.push_screen(ConfirmScreen(f"Revoke task {task.uuid}\n({task.name})?"), answered)

    def _revoke(self, uuid: str) -> None:
        if self.tidings_app is None:
            replies: Any = "No broker (replayed events): nothing to revoke."
        else:
            try:
                replies = self.tidings_app.control.revoke(uuid, terminate=True, reply=True,
                                                          timeout=2.0)
            except Exception as exc:
                replies = f"Revoke failed: {exc}"
        self.call_from_thread(self._show_replies, uuid, replies)

    def _show_replies(self, uuid: str, replies: Any) -> None:
        body = Text()
        if isinstance(replies, str):
            body.append(replies)
        elif not replies:
            body.append("No worker replied within 2 seconds.", style="yellow")
        else:
            for reply in replies:
                for node, answer in reply.items():
                    body.append(f"{node}: ", style="bold")
                    if isinstance(answer, dict) and "error" in answer:
                        body.append(f"{answer['error']}\n", style="red")
                    else:
                        body.append(f"{(answer or {}).get('ok', answer)}\n", style="green")
        self.push_screen(TextScreen(f"Revoke {uuid}: replies", body))
