"""The HTML pages: server-rendered from :mod:`.views`, every value escaped here, once.

No template engine: the pages are few and small, and building them in
Python keeps one rule visible — anything that came from an event goes
through :func:`e` (``html.escape`` with quotes) before it meets markup.
Scripts are never inline (the Content-Security-Policy forbids it): pages
load ``static/tidings.js``, which reads its settings from ``data-``
attributes and writes event data with ``textContent`` only.
"""

from __future__ import annotations

import datetime
import html
import json
import urllib.parse
from typing import Any

from .views import Dashboard

__all__ = ["broker_page", "dashboard_page", "failures_page", "layout", "task_page_html",
           "tasks_page", "worker_page"]

#: Depth classes the stylesheet indents (deeper rows share the last one).
MAX_DEPTH_CLASS = 12
NAV = (("/", "Dashboard"), ("/tasks", "Tasks"), ("/failures", "Failures"),
       ("/broker", "Broker"))


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def when(ts: Any) -> str:
    if not isinstance(ts, int | float) or ts != ts or abs(ts) > 1e11:
        return ""
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def quote(value: Any) -> str:
    return urllib.parse.quote(str(value), safe="")


def layout(title: str, body: str, *, prefix: str, csrf: str, read_only: bool, page: str,
           extra: dict[str, str] | None = None) -> str:
    nav = "".join(f'<a href="{e(prefix + path)}"{" class=current" if path == page else ""}>'
                  f"{e(label)}</a>" for path, label in NAV)
    data = {"prefix": prefix, "page": page, "read-only": "1" if read_only else "0",
            **(extra or {})}
    attrs = " ".join(f'data-{k}="{e(v)}"' for k, v in data.items())
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><meta name="csrf-token" content="{e(csrf)}">'
            f"<title>{e(title)} · Tidings</title>"
            f'<link rel="stylesheet" href="{e(prefix)}/static/tidings.css">'
            f'<script defer src="{e(prefix)}/static/tidings.js"></script></head>'
            f"<body {attrs}><header><strong>Tidings</strong><nav>{nav}</nav>"
            f'<span id="live" class="live">connecting…</span></header>'
            f'<main><h1>{e(title)}</h1><div id="message" role="status"></div>{body}</main>'
            f"</body></html>")


def _table(headers: list[str], rows: list[list[str]], table_id: str = "") -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    tid = f' id="{e(table_id)}"' if table_id else ""
    return f"<table{tid}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _chart(points: list[tuple[float, float]]) -> str:
    """Events/s as an SVG polyline (no script needed to draw it)."""
    width, height = 600, 120
    if len(points) < 2:
        return (f'<svg id="rate-chart" class="chart" viewBox="0 0 {width} {height}" '
                f'role="img" aria-label="events per second"><text x="10" y="60">'
                "collecting…</text></svg>")
    t0, t1 = points[0][0], points[-1][0]
    top = max(max(r for _, r in points), 1.0)
    coords = " ".join(f"{(t - t0) / max(t1 - t0, 1) * width:.1f},"
                      f"{height - r / top * (height - 10):.1f}" for t, r in points)
    return (f'<svg id="rate-chart" class="chart" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="events per second"><polyline points="{coords}"/>'
            f'<text x="4" y="12">{top:,.0f}/s</text></svg>')


def _action(label: str, path: str, confirm: str, params: str = "", danger: bool = False
            ) -> str:
    cls = "action danger" if danger else "action"
    return (f'<button type="button" class="{cls}" data-post="{e(path)}" '
            f'data-params="{e(params)}" data-confirm="{e(confirm)}">{e(label)}</button>')


def dashboard_page(d: Dashboard, prefix: str) -> str:
    rows = []
    for w in d.workers:
        load = w["loadavg"]
        rows.append([
            f'<a href="{e(prefix)}/worker/{e(quote(w["hostname"]))}">{e(w["hostname"])}</a>',
            '<span class="state online">online</span>' if w["online"]
            else '<span class="state offline">offline</span>',
            e(w["active"]), e(w["processed"]), e(w.get("succeeded", 0)),
            e(w.get("failed", 0)), e(w.get("retried", 0)),
            e(", ".join(f"{x:.2f}" for x in load if isinstance(x, int | float)))
            if isinstance(load, list) else "",
            e(when(w["last_heartbeat"]))])
    states = "".join(f'<li><span class="state s-{e(s.lower())}">{e(s)}</span> '
                     f'<b data-state-count="{e(s)}">{n:,}</b></li>'
                     for s, n in d.by_state.items()) or "<li>no tasks yet</li>"
    skipped = ", ".join(f"{e(k)}: {v:,}" for k, v in sorted(d.skipped.items())) or "none"
    lost = (f"{sum(d.lost.values()):,} ("
            + ", ".join(f"{e(k)}: {v:,}" for k, v in d.lost.items()) + ")"
            if d.lost else "none")
    return (
        "<section><h2>Workers</h2>"
        + _table(["Worker", "Status", "Active", "Processed", "Succeeded", "Failed",
                  "Retried", "Load average", "Last heartbeat"], rows, "workers")
        + "</section><section class=cols><div><h2>Tasks by state</h2>"
        f'<ul id="by-state" class="counts">{states}</ul></div>'
        f"<div><h2>Events per second, last 15 minutes</h2>{_chart(d.rates)}</div>"
        "</section><section><h2>Monitor health</h2><dl id=health>"
        f"<dt>Broker connection</dt><dd>{e(d.connection)}</dd>"
        f"<dt>Events received</dt><dd id=events>{d.events:,}</dd>"
        f"<dt>Tasks in memory</dt><dd>{d.tasks:,}</dd>"
        f"<dt>Skipped input</dt><dd>{skipped}</dd>"
        '<dt title="events that never reached this monitor, by cause">Events lost</dt>'
        f'<dd id=lost{" class=lost" if d.lost else ""}>{lost}</dd>'
        f"<dt>Reconnects</dt><dd>{d.reconnects:,}</dd>"
        f"<dt>Tasks evicted (bound)</dt><dd>{sum(d.evicted.values()):,}</dd>"
        "</dl></section>")


def tasks_page() -> str:
    columns = [("name", "Name"), ("uuid", "UUID"), ("state", "State"), ("args", "args"),
               ("kwargs", "kwargs"), ("result", "Result"), ("received", "Received"),
               ("started", "Started"), ("runtime", "Runtime"), ("worker", "Worker")]
    head = "".join(f'<th><button type="button" class="sort" data-sort="{k}">{e(label)}'
                   f"</button></th>" for k, label in columns)
    return (
        '<form id="search-form" class="toolbar" role="search">'
        '<input id="search" name="search" type="search" size="60" '
        'placeholder="state:failure name:proj.add kwargs:user=42 -state:success '
        'received:&gt;10m" aria-label="search">'
        '<select id="page-size" aria-label="page size">'
        + "".join(f'<option value="{n}"{" selected" if n == 15 else ""}>{n}</option>'
                  for n in (15, 30, 50, 100))
        + '</select><button type="submit">Search</button></form>'
        '<p id="search-error" class="error" role="alert"></p>'
        f'<table id="tasks"><thead><tr>{head}</tr></thead><tbody></tbody></table>'
        '<p class="pager"><button type="button" id="prev">← Newer</button> '
        '<span id="page-info"></span> <button type="button" id="next">Older →</button></p>')


def task_page_html(detail: dict[str, Any], prefix: str, read_only: bool) -> str:
    f = detail["fields"]
    uuid = f["uuid"]
    long_fields = ("args", "kwargs", "result", "exception", "traceback")

    def value(k: str, v: Any) -> str:
        if k == "worker" and v:
            return f'<a href="{e(prefix)}/worker/{e(quote(v))}">{e(v)}</a>'
        if k in ("root", "root_id", "parent", "parent_id") and v:
            return f'<a href="{e(prefix)}/task/{e(quote(v))}"><code>{e(v)}</code></a>'
        return f"<code>{e(json.dumps(v, default=str) if isinstance(v, list) else v)}</code>"

    rows = [[e(k), value(k, v)]
            for k, v in f.items() if v is not None and k not in long_fields
            and (k not in ("received", "sent", "started", "succeeded", "failed", "retried",
                           "revoked", "rejected", "timestamp"))]
    for k in ("received", "sent", "started", "succeeded", "failed", "retried", "revoked",
              "rejected", "timestamp"):
        if f.get(k) is not None:
            rows.append([e(k), e(f"{when(f[k])} ({f[k]})")])
    blocks = "".join(f"<h2>{e(k)}</h2><pre>{e(f[k])}</pre>" for k in long_fields
                     if f.get(k) not in (None, ""))
    timeline = _table(["Event", "At", "After the previous"],
                      [[e(t["event"]), e(when(t["at"])),
                        e(f"+{t['after']:.3f} s" if t["after"] is not None else "")]
                       for t in detail["timeline"]], "timeline")
    tree = "".join(
        f'<li class="depth-{min(t["depth"], MAX_DEPTH_CLASS)}'
        f'{" current" if t["current"] else ""}">'
        f'<a href="{e(prefix)}/task/{e(quote(t["uuid"]))}">{e(t["name"] or t["uuid"])}</a> '
        f'<span class="state s-{e(str(t["state"]).lower())}">{e(t["state"])}</span></li>'
        for t in detail["tree"])
    actions = "" if read_only else (
        '<p class="actions">'
        + _action("Revoke", f"/api/task/revoke/{quote(uuid)}", f"Revoke task {uuid}?")
        + _action("Terminate", f"/api/task/revoke/{quote(uuid)}",
                  f"Terminate task {uuid} (kill the process running it)?",
                  "terminate=true&signal=SIGTERM", danger=True) + "</p>")
    return (actions + '<section class="cols"><div><h2>Timeline</h2>' + timeline
            + f'</div><div><h2>Workflow</h2><ul class="tree" id="tree">{tree}</ul></div>'
            "</section><h2>Fields</h2>" + _table(["Field", "Value"], rows, "fields") + blocks)


def worker_page(name: str, info: dict[str, Any] | None, events: dict[str, Any] | None,
                prefix: str, read_only: bool, inspect_error: str | None) -> str:
    q = quote(name)
    actions = "" if read_only else (
        '<p class="actions">'
        + _action("Grow pool", f"/api/worker/pool/grow/{q}", f"Add a process to {name}?",
                  "n=1")
        + _action("Shrink pool", f"/api/worker/pool/shrink/{q}",
                  f"Remove a process from {name}?", "n=1")
        + _action("Enable events", f"/api/worker/events/enable/{q}",
                  f"Enable task events on {name}?")
        + _action("Disable events", f"/api/worker/events/disable/{q}",
                  f"Disable task events on {name}?")
        + _action("Shut down", f"/api/worker/shutdown/{q}", f"Shut {name} down?",
                  danger=True) + "</p>"
        '<form class="toolbar" id="limits"><input name="taskname" placeholder="task name" '
        'aria-label="task name" required><input name="ratelimit" placeholder="rate, e.g. 10/m" '
        'aria-label="rate limit"><button type="button" class="action" data-form-post='
        f'"/api/task/rate-limit/" data-worker="{e(name)}" data-field="ratelimit">'
        'Set rate limit</button><input name="soft" placeholder="soft s" aria-label="soft '
        'limit" size=6><input name="hard" placeholder="hard s" aria-label="hard limit" '
        'size=6><button type="button" class="action" data-form-post="/api/task/timeout/" '
        f'data-worker="{e(name)}" data-field="soft,hard">Set time limits</button></form>')
    parts = [actions]
    if events:
        parts.append("<h2>What its events say</h2>" + _table(
            ["Field", "Value"], [[e(k), f"<code>{e(v)}</code>"] for k, v in events.items()],
            "worker-events"))
    if inspect_error:
        parts.append(f'<p class="error">Inspect: {e(inspect_error)}</p>')
    if info:
        for key in ("stats", "active", "reserved", "scheduled", "registered", "revoked",
                    "active_queues", "conf"):
            if key in info:
                parts.append(f'<h2>{e(key)}</h2><pre id="inspect-{e(key)}">'
                             f"{e(json.dumps(info[key], indent=2, default=str))}</pre>")
    elif not inspect_error:
        parts.append("<p>The worker did not answer inspect; only its events are shown.</p>")
    return "".join(parts)


def failures_page(groups: list[dict[str, Any]], prefix: str) -> str:
    if not groups:
        return "<p>No failed task in memory.</p>"
    rows = [[e(g["exception"]), e(g["name"]), f'{g["count"]:,}', e(when(g["first"])),
             e(when(g["last"])),
             f'<a href="{e(prefix)}/task/{e(quote(g["example"]))}">{e(g["example"])}</a>']
            for g in groups]
    examples = "".join(f"<details><summary>{e(g['exception'])} in {e(g['name'])}: "
                       f"{e(g['message'])}</summary><pre>{e(g['traceback'])}</pre></details>"
                       for g in groups)
    return (_table(["Exception", "Task", "Count", "First seen", "Last seen", "Latest"],
                   rows, "failures") + "<h2>Example tracebacks</h2>" + examples)


def broker_page(queues: list[tuple[str, int | None]], broker: str) -> str:
    rows = [[e(name), e("" if n is None else f"{n:,}")] for name, n in queues]
    return (f"<p>Broker: <code>{e(broker)}</code></p>"
            + (_table(["Queue", "Messages"], rows, "queues") if rows
               else "<p>No queue known yet (they are learned from task events and the "
                    "workers' answers, every 15 s).</p>"))
