"""Fuzzing the receive path: whatever arrives, nothing raises, good events are applied
and every bad one is counted under its cause (Celery's ``capture()`` stops on the first
malformed message)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.scale import scaled
from tests.fuzz.strategies import CAUSES, bad_event, good_event, json_values
from tidings.events.ingest import EventPipeline
from tidings.events.state import State
from tidings.protocol.clock import default_clock

MAX_TASKS = 50
MAX_WORKERS = 10


def pipeline_into_state() -> tuple[EventPipeline, State, list]:
    state = State(max_tasks_in_memory=MAX_TASKS, max_workers_in_memory=MAX_WORKERS)
    applied: list = []

    def dispatch(type_, event):
        applied.append(type_)
        state.event(event)

    return EventPipeline(default_clock(), dispatch), state, applied


def encode(body) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


mixed = st.lists(st.one_of(good_event().map(lambda e: (e, None)), bad_event()),
                 min_size=1, max_size=8)


@scaled(2000)
@given(elements=mixed, batched=st.booleans())
def test_good_elements_are_applied_and_bad_ones_counted(elements, batched):
    pipeline, state, applied = pipeline_into_state()
    bodies = [[e for e, _ in elements]] if batched else [e for e, _ in elements]
    for body in bodies:
        ok, decoded = pipeline.decode(encode(body))
        assert ok
        pipeline.feed(decoded)
    good = sum(1 for _, cause in elements if cause is None)
    assert len(applied) == good == pipeline.event_count
    assert pipeline.handled == good, pipeline.errors  # State raised on none of them
    expected: dict[str, int] = {}
    for _, cause in elements:
        if cause is not None:
            expected[cause] = expected.get(cause, 0) + 1
    assert dict(pipeline.errors) == expected
    assert len(state.tasks) <= MAX_TASKS and len(state.workers) <= MAX_WORKERS


@scaled(3000)
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw):
    pipeline, _, _applied = pipeline_into_state()
    ok, decoded = pipeline.decode(raw)
    if ok:
        pipeline.feed(decoded)
    else:
        assert dict(pipeline.errors) == {"not-json": 1}
    assert set(pipeline.errors) <= CAUSES


@scaled(1500)
@given(body=json_values | st.lists(json_values | good_event(), max_size=10))
def test_arbitrary_json_never_raises_and_every_element_is_accounted_for(body):
    pipeline, _, _applied = pipeline_into_state()
    pipeline.feed(body)
    elements = len(body) if isinstance(body, list) else 1
    assert pipeline.event_count + pipeline.skipped == elements
    assert pipeline.handled == pipeline.event_count  # applied events never raise in State
    assert set(pipeline.errors) <= CAUSES


@scaled(200)
@given(depth=st.integers(min_value=1, max_value=5000), size=st.integers(0, 200_000))
def test_deep_nesting_and_huge_strings(depth, size):
    pipeline, _state, applied = pipeline_into_state()
    nested = "[" * depth + "]" * depth
    text = json.dumps({"type": "task-received", "uuid": "x" * size, "clock": 1,
                       "timestamp": 1.0, "args": "a" * size, "hostname": "w"})
    for raw in (nested, text, "{" * depth):
        ok, decoded = pipeline.decode(raw)
        if ok:
            pipeline.feed(decoded)
    assert pipeline.handled == 1 and len(applied) == 1
    assert set(pipeline.errors) <= CAUSES
