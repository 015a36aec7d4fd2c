"""Fuzzing task messages: the parser says BadMessage or gives a usable request, and a
real worker rejects bad messages with a log line and keeps serving."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kombu import Connection, Producer

from tests.fuzz.scale import scaled
from tests.fuzz.strategies import plain, texts
from tests.worker.helpers import cluster
from tidings.protocol.tasks import BadMessage, TaskRequest, build_message, parse_message

HEADER_KEYS = tuple(build_message("proj.add", (1, 2)).headers)
values = st.one_of(plain, st.floats(), st.lists(plain, max_size=3),
                   st.dictionaries(texts, plain, max_size=3))
#: Header names AMQP can carry (RabbitMQ closes the channel on an empty or long one).
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=20)
#: Header values AMQP can carry (RabbitMQ fails on NaN, infinities and odd table keys).
header_values = st.one_of(plain, st.floats(allow_nan=False, allow_infinity=False),
                          st.lists(plain, max_size=3), st.dictionaries(names, plain, max_size=3))
headers = st.dictionaries(st.sampled_from(HEADER_KEYS) | names, header_values, max_size=12)
bodies = st.one_of(
    values,
    st.tuples(values, values, values).map(list),
    st.tuples(st.lists(values, max_size=3), st.dictionaries(texts, values,
                                                            max_size=3)).map(list))


@scaled(2500)
@given(headers=headers | st.none(), body=bodies)
def test_the_parser_gives_a_request_or_bad_message(headers, body):
    try:
        req = parse_message(headers, body)
    except BadMessage as exc:
        assert str(exc)
        return
    assert isinstance(req, TaskRequest)
    assert isinstance(req.id, str) and req.id and isinstance(req.name, str) and req.name
    assert isinstance(req.args, list) and isinstance(req.kwargs, dict)
    assert isinstance(req.retries, int)
    for limit in (req.time_limit, req.soft_time_limit):
        assert limit is None or 0 < limit < float("inf")


@pytest.mark.broker
@settings(max_examples=3, phases=[Phase.generate],  # each example starts a worker:
          # no shrinking (a failure prints the messages it sent)
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(messages=st.lists(st.tuples(headers, bodies, st.sampled_from(
    ["application/json", "application/x-python-serialize", "text/plain"])),
    min_size=15, max_size=15))
def test_a_worker_rejects_bad_messages_and_keeps_serving(messages, amqp_url, tmp_path_factory):
    with cluster(amqp_url, tmp_path_factory.mktemp("w")) as c:
        w = c.worker("-E", "-P", "threads", "-c", "2")
        # confirms: a message the broker refused fails here, not silently
        with Connection(amqp_url, transport_options={"confirm_publish": True}) as conn:
            producer = Producer(conn.default_channel)
            for message_headers, body, content_type in messages:
                producer.publish(json.dumps(body).encode(), routing_key=c.queue,
                                 headers={k: v for k, v in message_headers.items()
                                          if isinstance(k, str)},
                                 content_type=content_type, content_encoding="utf-8")
        good = c.proj.add.delay(20, 22)
        assert c.capture.wait("task-succeeded", good.id, timeout=60)[0]["result"] == "42"
        assert w.proc.poll() is None
        log = w.log  # each bad message got its line before the good task ran (FIFO)
        assert log.count("Rejected") + log.count("unregistered task") == len(messages), log
