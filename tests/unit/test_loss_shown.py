"""Events lost are shown everywhere: metrics, the exporter's /health, the web dashboard,
the terminal monitor.

Each front door reads the same ``source.losses``; here a source whose
account says some events were lost (a sequence gap, dead letters, an
estimate), and what each one shows of it.
"""

from __future__ import annotations

import asyncio

from starlette.testclient import TestClient

from tidings import App
from tidings.events import State
from tidings.events.source import ReplaySource
from tidings.metrics import ClusterMetrics
from tidings.metrics.exporter import source_health
from tidings.protocol.loss import LOSS_CAUSES
from tidings.top.app import TopApp
from tidings.web import Access, WebMonitor, WebOptions


def lossy_source(tmp_path) -> ReplaySource:
    source = ReplaySource(tmp_path / "none.ndjson", App("t").clock)
    losses = source.losses
    losses.sequence("w1@h/1/a", 0, 1)
    losses.sequence("w1@h/1/a", 11, 1)  # 10 missing
    losses.dead_letter({"x-death": [{"reason": "expired"}]}, 24)
    losses.outage(1.0, 2.0)
    losses.worker_event({"hostname": "cel@h", "processed": 1})
    losses.outage(3.0, 4.0)
    losses.worker_event({"hostname": "cel@h", "processed": 3})  # 2 tasks: 6 events
    return source


def test_metrics_have_every_cause_from_the_start(tmp_path):
    metrics = ClusterMetrics(State())
    quiet = ReplaySource(tmp_path / "none.ndjson", App("t").clock)
    metrics.watch_source(quiet)
    lost = {s.labels["cause"]: s.value for fam in metrics.registry.collect()
            if fam.name == "tidings_events_lost" for s in fam.samples}
    assert lost == dict.fromkeys(LOSS_CAUSES, 0)
    metrics = ClusterMetrics(State())
    metrics.watch_source(lossy_source(tmp_path))
    lost = {s.labels["cause"]: s.value for fam in metrics.registry.collect()
            if fam.name == "tidings_events_lost" for s in fam.samples}
    assert lost == {"sequence-gap": 10, "expired": 24, "overflow": 0, "sender-dropped": 0,
                    "disconnected": 6}


def test_the_web_dashboard_and_health_show_them(tmp_path):
    app = App("t", broker_data_dir=str(tmp_path / "broker"))
    monitor = WebMonitor(app, Access(), WebOptions(max_tasks=50), source=lossy_source(tmp_path))
    with TestClient(monitor.asgi()) as client:
        page = client.get("/").text
        assert '<dd id=lost class=lost>40 (' in page
        assert "disconnected: 6" in page and "expired: 24" in page
        assert '"lost": {"disconnected": 6, "expired": 24, "sequence-gap": 10}' in \
            monitor.summary_json()
    monitor.inspector.close()


def test_the_exporters_health_document_has_them(tmp_path):
    _, details = source_health(lossy_source(tmp_path))
    assert details["lost"] == {"disconnected": 6, "expired": 24, "sequence-gap": 10}


def test_the_terminal_monitor_shows_them_in_its_status_bar(tmp_path):
    source = lossy_source(tmp_path)

    async def go():
        tui = TopApp(State(), source=source, label="x", refresh=0.1)
        async with tui.run_test(size=(160, 40)) as pilot:
            await pilot.pause(0.3)
            status = str(tui.query_one("#status-text").render())
            assert "lost: 40 (" in status and "disconnected: 6 (estimate)" in status
    asyncio.run(go())
