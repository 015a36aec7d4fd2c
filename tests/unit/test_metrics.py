"""Metrics from events: celery-exporter's names and values, exact, on the golden corpus."""

import json
import re
import threading
from collections import Counter, defaultdict

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FIXTURES
from tidings import App
from tidings.events.log import replay
from tidings.events.source import ReplaySource
from tidings.events.state import State
from tidings.metrics import ClusterMetrics, LabelGuard, exception_class, host_of

COUNTER_TYPES = ("task-sent", "task-received", "task-started", "task-succeeded",
                 "task-failed", "task-retried", "task-rejected", "task-revoked")


def samples(metrics: ClusterMetrics) -> dict[str, dict[tuple, float]]:
    """Every sample, by sample name, keyed by its sorted label items (parsed, not grepped)."""
    out: dict[str, dict[tuple, float]] = defaultdict(dict)
    text = generate_latest(metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return out


def corpus_events() -> list[dict]:
    events = []
    for line in (FIXTURES / "events-rabbitmq.jsonl").read_text().splitlines():
        body = json.loads(line)["body"]
        events.extend(body if isinstance(body, list) else [body])
    return events


def expected_from_corpus():
    """What celery-exporter's rules give, counted straight from the corpus."""
    counts: Counter = Counter()
    visible: set = set()
    runtime: dict = defaultdict(list)
    name, queue, eta, sent_at = {}, {}, {}, {}
    for e in corpus_events():
        type_ = e["type"]
        if not type_.startswith("task-"):
            continue
        uuid = e["uuid"]
        if e.get("name") is not None:
            name[uuid] = e["name"]
        if type_ == "task-sent":
            queue[uuid] = e.get("queue")
            sent_at[uuid] = e["timestamp"]
        if "eta" in e and e["eta"] is not None:
            eta[uuid] = e["eta"]
        labels = (str(name.get(uuid)), e["hostname"].split("@", 1)[1],
                  queue.get(uuid) or "celery")
        exc = re.match(r"^(\w+)\(", e.get("exception") or "")
        exc_label = exc.group(1) if exc else "UnknownException"
        counts[(type_, *labels, exc_label if type_ == "task-failed" else None)] += 1
        if type_ != "task-sent":
            visible.add(labels)
        if type_ == "task-succeeded":
            runtime[labels].append(e["runtime"])
    return counts, visible, runtime


@pytest.fixture(scope="module")
def corpus_metrics():
    metrics = ClusterMetrics(State(max_tasks_in_memory=1000))
    stats = replay(FIXTURES / "events-rabbitmq.jsonl", metrics.handle, clock=App().clock)
    assert stats.events == 107 and not stats.errors
    return metrics, samples(metrics)


def test_task_counters_match_the_corpus_exactly(corpus_metrics):
    _, got = corpus_metrics
    counts, visible, _ = expected_from_corpus()
    for type_ in COUNTER_TYPES:
        sample = f"celery_{type_.replace('-', '_')}_total"
        want = {}
        for (t, n, h, q, exc), c in counts.items():
            if t != type_:
                continue
            key = {"name": n, "hostname": h, "queue_name": q}
            if type_ == "task-failed":
                key["exception"] = exc
            want[tuple(sorted(key.items()))] = float(c)
        # every label set seen on a non-sent event is visible on every counter, at 0 or more
        for n, h, q in visible:
            key = {"name": n, "hostname": h, "queue_name": q}
            if type_ == "task-failed":
                key["exception"] = ""
            want.setdefault(tuple(sorted(key.items())), 0.0)
        assert got[sample] == want, type_


def test_corpus_figures_are_what_the_cluster_did(corpus_metrics):
    _, got = corpus_metrics
    succeeded = sum(got["celery_task_succeeded_total"].values())
    failed = {dict(k)["exception"]: v for k, v in got["celery_task_failed_total"].items() if v}
    assert succeeded == 9 and sum(got["celery_task_received_total"].values()) == 15
    assert set(failed) <= {"ValueError", "KeyError", "ZeroDivisionError", "RuntimeError",
                           "UnknownException", "TypeError"} and sum(failed.values()) == 2
    sent_hosts = {dict(k)["hostname"] for k, v in got["celery_task_sent_total"].items() if v}
    assert sent_hosts == {"vm"}  # the clients' host part, gen<pid>@vm
    # the workers' host shows on task_sent too, at 0 (celery-exporter's visibility rule)
    assert {dict(k)["hostname"] for k in got["celery_task_sent_total"]} == {"vm", "corpus"}


def test_runtime_histogram_counts_and_sums_per_label_set(corpus_metrics):
    _, got = corpus_metrics
    _, _, runtime = expected_from_corpus()
    for (n, h, q), values in runtime.items():
        key = tuple(sorted({"name": n, "hostname": h, "queue_name": q}.items()))
        assert got["celery_task_runtime_count"][key] == len(values)
        assert got["celery_task_runtime_sum"][key] == pytest.approx(sum(values))
        inf = tuple(sorted({"name": n, "hostname": h, "queue_name": q, "le": "+Inf"}.items()))
        assert got["celery_task_runtime_bucket"][inf] == len(values)


def test_worker_gauges_and_health_after_the_corpus(corpus_metrics):
    metrics, got = corpus_metrics
    # both workers (host part "corpus") ended with worker-offline
    assert got["celery_worker_up"] == {(("hostname", "corpus"),): 0.0}
    assert got["celery_worker_tasks_active"] == {(("hostname", "corpus"),): 0.0}
    received = {dict(k)["type"]: v for k, v in got["tidings_events_received_total"].items()}
    assert received == dict(Counter(e["type"] for e in corpus_events()))
    uuids = {e["uuid"] for e in corpus_events() if "uuid" in e}
    assert got["tidings_state_tasks"][()] == len(metrics.state.tasks) == len(uuids)
    assert got["tidings_event_receive_lag_seconds_count"][()] == 107


def test_queue_wait_time_from_sent_to_started_without_eta():
    state = State()
    metrics = ClusterMetrics(state)
    base = {"utcoffset": 0, "pid": 1, "local_received": 1000.0}
    for i, (eta, wait) in enumerate([(None, 0.25), (None, 3.0), ("2026-01-01T00:00:00", 9.0)]):
        uuid = f"t{i}"
        metrics.handle({**base, "type": "task-sent", "hostname": "gen1@client", "clock": 1,
                        "uuid": uuid, "name": "proj.add", "queue": "celery", "eta": eta,
                        "timestamp": 100.0})
        metrics.handle({**base, "type": "task-started", "hostname": "w1@box", "clock": 2,
                        "uuid": uuid, "timestamp": 100.0 + wait})
    got = samples(metrics)
    key = tuple(sorted({"name": "proj.add", "hostname": "box", "queue_name": "celery"}.items()))
    assert got["celery_task_queue_wait_time_count"][key] == 2  # the ETA task is left out
    assert got["celery_task_queue_wait_time_sum"][key] == pytest.approx(3.25)


def test_five_thousand_task_names_stay_within_the_bound():
    metrics = ClusterMetrics(State(max_tasks_in_memory=100), max_label_values=1000)
    for i in range(5000):
        metrics.handle({"type": "task-received", "hostname": "w1@box", "clock": i,
                        "uuid": f"u{i}", "name": f"proj.task_{i}", "timestamp": 1.0,
                        "local_received": 1.0, "utcoffset": 0, "pid": 1})
    got = samples(metrics)
    names = {dict(k)["name"] for k in got["celery_task_received_total"]}
    assert len(names) == 1001 and "other" in names  # 1000 kept, the rest under "other"
    other = tuple(sorted({"name": "other", "hostname": "box", "queue_name": "celery"}.items()))
    assert got["celery_task_received_total"][other] == 4000
    assert got["tidings_metric_label_overflow_total"][(("label", "name"),)] == 4000


def test_malformed_input_is_counted_and_the_rest_still_measured(tmp_path):
    path = tmp_path / "bad.ndjson"
    good = {"type": "task-received", "hostname": "w1@box", "clock": 1, "uuid": "a",
            "name": "proj.add", "timestamp": 1.0, "local_received": 1.0}
    path.write_text("\n".join([
        "{not json", json.dumps([1, 2]), json.dumps({**good, "clock": None}),
        json.dumps({**good, "timestamp": "soon"}), json.dumps(good)]) + "\n")
    metrics = ClusterMetrics(State())
    source = ReplaySource(path, App().clock)
    metrics.watch_source(source)
    source.run(metrics.handle, threading.Event())
    got = samples(metrics)
    skipped = {dict(k)["cause"]: v for k, v in got["tidings_events_skipped_total"].items()}
    assert skipped == {"not-json": 1, "not-an-object": 1, "null-clock": 1, "bad-field-type": 1}
    key = tuple(sorted({"name": "proj.add", "hostname": "box", "queue_name": "celery"}.items()))
    assert got["celery_task_received_total"][key] == 1


def test_silent_workers_go_down_then_their_series_are_purged():
    now = [1000.0]
    metrics = ClusterMetrics(State(), worker_timeout=300, purge_offline_after=600,
                             clock=lambda: now[0])
    hb = {"type": "worker-heartbeat", "hostname": "w1@box", "clock": 1, "timestamp": 1000.0,
          "local_received": 1000.0, "freq": 2.0, "active": 3, "utcoffset": 0, "pid": 1}
    metrics.handle(hb)
    metrics.handle({"type": "task-received", "hostname": "w1@box", "clock": 2, "uuid": "a",
                    "name": "n", "timestamp": 1000.0, "local_received": 1000.0})
    got = samples(metrics)
    assert got["celery_worker_tasks_active"] == {(("hostname", "box"),): 3.0}
    now[0] += 301
    metrics.before_scrape()
    got = samples(metrics)
    assert got["celery_worker_up"] == {(("hostname", "box"),): 0.0}
    assert got["celery_worker_tasks_active"] == {(("hostname", "box"),): 0.0}
    now[0] += 300
    metrics.before_scrape()
    got = samples(metrics)
    assert "celery_worker_up" not in got and "celery_task_received_total" not in got


def test_static_labels_prefix_and_generic_sent_hostname():
    metrics = ClusterMetrics(State(), prefix="jobs_", static_labels={"cluster": "eu1"},
                             generic_hostname_task_sent=True)
    metrics.handle({"type": "task-sent", "hostname": "gen9@web-7f9c", "clock": 1, "uuid": "a",
                    "name": "n", "queue": "q1", "timestamp": 1.0, "local_received": 1.0})
    got = samples(metrics)
    assert got["jobs_task_sent_total"] == {
        tuple(sorted({"name": "n", "hostname": "generic", "queue_name": "q1",
                      "cluster": "eu1"}.items())): 1.0}
    assert "jobs_task_received_total" not in got  # a task-sent shows no worker counters


def test_label_helpers():
    assert host_of("w1@example.com") == "example.com" and host_of("solo") == "solo"
    assert exception_class("KeyError('x')") == "KeyError"
    assert exception_class("<weird>") == exception_class(None) == "UnknownException"
    guard = LabelGuard(2)
    assert [guard("l", v) for v in ("a", "b", "c", "a")] == ["a", "b", "other", "a"]
    assert guard("m", "x" * 10_000) == "x" * 200


def test_odd_field_values_become_bounded_text_labels():
    metrics = ClusterMetrics(State())
    metrics.handle({"type": "task-sent", "hostname": "gen1@c", "clock": 1, "uuid": "a",
                    "name": "n", "queue": ["not", "a", "name"], "timestamp": 1.0,
                    "local_received": 1.0})
    metrics.handle({"type": "task-received", "hostname": "w@box", "clock": 2, "uuid": "a",
                    "name": "n" * 5000, "timestamp": 1.0, "local_received": 1.0})
    got = samples(metrics)
    sent = {dict(k)["queue_name"] for k in got["celery_task_sent_total"]}
    assert sent == {"['not', 'a', 'name']"}
    names = {dict(k)["name"] for k in got["celery_task_received_total"]}
    assert names == {"n" * 200}
