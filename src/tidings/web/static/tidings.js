// Tidings web monitor: live updates, the tasks table, and actions.
// Everything that came from an event is written with textContent, never as HTML.
"use strict";

(function () {
  const body = document.body;
  const prefix = body.dataset.prefix || "";
  const page = body.dataset.page || "/";
  const readOnly = body.dataset.readOnly === "1";
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const message = document.getElementById("message");

  function text(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function when(ts) {
    if (typeof ts !== "number" || !isFinite(ts)) return "";
    const d = new Date(ts * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function cell(row, value, href) {
    const td = document.createElement("td");
    if (href) {
      const a = document.createElement("a");
      a.href = href;
      a.textContent = text(value);
      td.appendChild(a);
    } else {
      td.textContent = text(value);
    }
    row.appendChild(td);
    return td;
  }

  function stateBadge(td, state) {
    td.textContent = "";
    const span = document.createElement("span");
    span.className = "state s-" + text(state).toLowerCase().replace(/[^a-z]/g, "");
    span.textContent = text(state);
    td.appendChild(span);
  }

  function say(textValue, isError) {
    if (!message) return;
    message.textContent = textValue;
    message.className = isError ? "error" : "ok";
  }

  // -- actions ----------------------------------------------------------------------------
  async function post(path, params) {
    const response = await fetch(prefix + path, {
      method: "POST",
      headers: {"Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": csrf},
      body: params,
      credentials: "same-origin",
    });
    let data;
    try { data = await response.json(); } catch (e) { data = {error: response.statusText}; }
    say((data.message || data.error || JSON.stringify(data)), !response.ok);
    return response.ok;
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("button");
    if (!button || readOnly) return;
    if (button.dataset.post) {
      if (!window.confirm(button.dataset.confirm || "Are you sure?")) return;
      post(button.dataset.post, button.dataset.params || "");
    } else if (button.dataset.formPost) {
      const form = button.closest("form");
      const taskname = form.elements.taskname.value.trim();
      if (!taskname) { say("Give a task name", true); return; }
      const params = new URLSearchParams({workername: button.dataset.worker});
      for (const field of button.dataset.field.split(",")) {
        const value = form.elements[field].value.trim();
        if (value) params.set(field, value);
      }
      const what = button.textContent + " for " + taskname + " on " + button.dataset.worker;
      if (!window.confirm(what + "?")) return;
      post(button.dataset.formPost + encodeURIComponent(taskname), params.toString());
    }
  });

  // -- the tasks table --------------------------------------------------------------------
  const table = document.getElementById("tasks");
  const view = {offset: 0, limit: 15, sort: "", search: ""};
  let fetching = false, again = false;

  async function loadTasks() {
    if (!table) return;
    if (fetching) { again = true; return; }
    fetching = true;
    try {
      const q = new URLSearchParams({limit: view.limit, offset: view.offset});
      if (view.sort) q.set("sort_by", view.sort);
      if (view.search) q.set("search", view.search);
      const response = await fetch(prefix + "/api/tasks?" + q.toString(),
                                   {credentials: "same-origin"});
      const data = await response.json();
      const error = document.getElementById("search-error");
      if (!response.ok) { error.textContent = data.error || response.statusText; return; }
      error.textContent = "";
      const tbody = table.tBodies[0];
      const rows = document.createDocumentFragment();
      for (const [uuid, task] of Object.entries(data)) {
        const tr = document.createElement("tr");
        tr.dataset.uuid = uuid;
        cell(tr, task.name, prefix + "/task/" + encodeURIComponent(uuid));
        cell(tr, uuid, prefix + "/task/" + encodeURIComponent(uuid));
        stateBadge(cell(tr, ""), task.state);
        cell(tr, task.args);
        cell(tr, task.kwargs);
        cell(tr, task.result);
        cell(tr, when(task.received));
        cell(tr, when(task.started));
        cell(tr, typeof task.runtime === "number" ? task.runtime.toFixed(3) + " s" : "");
        cell(tr, task.worker);
        rows.appendChild(tr);
      }
      tbody.replaceChildren(rows);
      const count = Object.keys(data).length;
      document.getElementById("page-info").textContent = count
        ? (view.offset + 1) + "–" + (view.offset + count) : "no task";
      document.getElementById("next").disabled = count < view.limit;
      document.getElementById("prev").disabled = view.offset === 0;
    } finally {
      fetching = false;
      if (again) { again = false; setTimeout(loadTasks, 250); }
    }
  }

  if (table) {
    document.getElementById("search-form").addEventListener("submit", function (event) {
      event.preventDefault();
      view.search = document.getElementById("search").value;
      view.offset = 0;
      loadTasks();
    });
    document.getElementById("page-size").addEventListener("change", function (event) {
      view.limit = Number(event.target.value);
      view.offset = 0;
      loadTasks();
    });
    document.getElementById("next").addEventListener("click", function () {
      view.offset += view.limit; loadTasks();
    });
    document.getElementById("prev").addEventListener("click", function () {
      view.offset = Math.max(0, view.offset - view.limit); loadTasks();
    });
    for (const button of table.querySelectorAll("button.sort")) {
      button.addEventListener("click", function () {
        const key = button.dataset.sort;
        view.sort = view.sort === key ? "-" + key : (view.sort === "-" + key ? "" : key);
        view.offset = 0;
        loadTasks();
      });
    }
    loadTasks();
  }

  // -- live updates -----------------------------------------------------------------------
  function updateDashboard(summary) {
    const list = document.getElementById("by-state");
    if (list) {
      const items = document.createDocumentFragment();
      for (const [state, count] of Object.entries(summary.by_state)) {
        const li = document.createElement("li");
        const badge = document.createElement("span");
        badge.className = "state s-" + state.toLowerCase().replace(/[^a-z]/g, "");
        badge.textContent = state;
        const b = document.createElement("b");
        b.dataset.stateCount = state;
        b.textContent = " " + count.toLocaleString();
        li.append(badge, b);
        items.appendChild(li);
      }
      list.replaceChildren(items);
    }
    const events = document.getElementById("events");
    if (events) events.textContent = summary.events.toLocaleString();
    const lost = document.getElementById("lost");
    if (lost && summary.lost) {
      const causes = Object.entries(summary.lost);
      const total = causes.reduce((n, [, v]) => n + v, 0);
      lost.textContent = total ? total.toLocaleString() + " (" +
        causes.map(([k, v]) => k + ": " + v.toLocaleString()).join(", ") + ")" : "none";
      lost.classList.toggle("lost", total > 0);
    }
    const workers = document.getElementById("workers");
    if (workers) {
      const rows = document.createDocumentFragment();
      for (const w of summary.workers) {
        const tr = document.createElement("tr");
        cell(tr, w.hostname, prefix + "/worker/" + encodeURIComponent(w.hostname));
        const status = cell(tr, "");
        const badge = document.createElement("span");
        badge.className = "state " + (w.online ? "online" : "offline");
        badge.textContent = w.online ? "online" : "offline";
        status.appendChild(badge);
        for (const key of ["active", "processed", "succeeded", "failed", "retried"]) {
          cell(tr, w[key] === undefined ? 0 : w[key]);
        }
        cell(tr, Array.isArray(w.loadavg) ? w.loadavg.map((x) => Number(x).toFixed(2)).join(", ") : "");
        cell(tr, when(w.last_heartbeat));
        rows.appendChild(tr);
      }
      workers.tBodies[0].replaceChildren(rows);
    }
  }

  function updateTask(tasks) {
    const uuid = body.dataset.task;
    const task = uuid && tasks[uuid];
    if (!task) return;
    for (const tr of document.querySelectorAll("#fields tr")) {
      const key = tr.cells[0] && tr.cells[0].textContent;
      if (key && key in task && tr.cells[1]) {
        const value = ["received", "sent", "started", "succeeded", "failed", "retried",
                       "revoked", "rejected", "timestamp"].includes(key)
          ? when(task[key]) + " (" + text(task[key]) + ")" : text(task[key]);
        tr.cells[1].textContent = value;
      }
    }
    document.getElementById("live").textContent = "live · updated " + when(Date.now() / 1000);
  }

  if (window.EventSource) {
    const live = document.getElementById("live");
    const source = new EventSource(prefix + "/api/live");
    source.addEventListener("open", function () { live.textContent = "live"; live.className = "live on"; });
    source.addEventListener("error", function () { live.textContent = "reconnecting…"; live.className = "live off"; });
    source.addEventListener("summary", function (event) {
      if (page === "/") updateDashboard(JSON.parse(event.data));
    });
    source.addEventListener("tasks", function (event) {
      if (table) loadTasks();
      if (body.dataset.task) updateTask(JSON.parse(event.data));
    });
    source.addEventListener("resync", function () {
      if (table) loadTasks();
      else if (body.dataset.task) window.location.reload();
    });
  }
})();
