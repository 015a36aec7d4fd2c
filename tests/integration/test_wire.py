"""What the Tidings dispatcher puts on the wire equals what Celery 5.7 put there.

The reference is the recorded corpus: for each event type, the routing key,
headers, properties and envelope key order of our message must equal those
of the recorded Celery message of the same type; the only difference is
ours on purpose: the sequence headers of loss accounting
(:mod:`tidings.protocol.loss`), which Celery's tools ignore.
"""

import json
import time

import amqp
import pytest

from tests.conftest import cleanup_broker, make_app
from tidings.events import EventDispatcher
from tidings.protocol.loss import SENDER_HEADER, SEQUENCE_HEADER, read_sequence

pytestmark = pytest.mark.broker

SAMPLE_FIELDS = {
    "worker-online": dict(freq=2.0, active=0, processed=0, loadavg=[0.1, 0.2, 0.3],
                          sw_ident="py-tidings", sw_ver="0.1.0", sw_sys="Linux"),
    "worker-heartbeat": dict(freq=2.0, active=0, processed=0, loadavg=[0.1, 0.2, 0.3],
                             sw_ident="py-tidings", sw_ver="0.1.0", sw_sys="Linux"),
    "worker-offline": dict(freq=2.0, active=0, processed=0, loadavg=[0.1, 0.2, 0.3],
                           sw_ident="py-tidings", sw_ver="0.1.0", sw_sys="Linux"),
    "task-sent": dict(uuid="u", root_id="u", parent_id=None, name="proj.add", args="(2, 3)",
                      kwargs="{}", retries=0, eta=None, expires=None, queue="celery",
                      exchange="", routing_key="celery"),
}
BATCHED = {
    "task-received": dict(uuid="u", name="proj.add", args="(2, 3)", kwargs="{}", root_id="u",
                          parent_id=None, retries=0, eta=None, expires=None),
    "task-started": dict(uuid="u"),
    "task-succeeded": dict(uuid="u", result="5", runtime=0.01),
}


def reference(corpus):
    """First recorded message of each routing key / event type."""
    single, batched = {}, {}
    for message in corpus:
        if message["routing_key"] == "task.multi":
            for event in message["body"]:
                batched.setdefault(event["type"], (message, event))
        else:
            single.setdefault(message["body"]["type"], message)
    return single, batched


def publish_samples(app):
    with app.connection_for_write() as conn:
        d = EventDispatcher(conn, hostname="w1@corpus", app=app)
        for type_, fields in SAMPLE_FIELDS.items():
            d.send(type_, **fields)
        batcher = EventDispatcher(conn, hostname="w1@corpus", app=app, buffer_group=["task"])
        for type_, fields in BATCHED.items():
            batcher.send(type_, **fields)
        batcher.flush()


def test_amqp_messages_match_the_corpus(amqp_url, corpus_rabbitmq):
    app, declared = make_app(amqp_url)
    exchange = app.conf.event_exchange
    conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest")
    conn.connect()
    try:
        ch = conn.channel()
        ch.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
        queue, _, _ = ch.queue_declare("", exclusive=True)
        ch.queue_bind(queue, exchange, "#")
        publish_samples(app)
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 5 and time.monotonic() < deadline:
            message = ch.basic_get(queue, no_ack=True)
            if message is None:
                time.sleep(0.05)
            else:
                got.append(message)
        single, batched = reference(corpus_rabbitmq)
        assert len(got) == 5
        for message in got:
            body = json.loads(message.body)
            rk = message.delivery_info["routing_key"]
            ref = single[body["type"]] if isinstance(body, dict) else None
            if ref is None:
                ref_message, _ = batched[body[0]["type"]]
                assert rk == ref_message["routing_key"] == "task.multi"
                for event in body:
                    assert list(event) == list(batched[event["type"]][1]), event["type"]
                ref = ref_message
            else:
                assert rk == ref["routing_key"]
                if body["type"] != "worker-heartbeat" or ref["body"].get("freq") != 5:
                    assert list(body) == list(ref["body"]), body["type"]
            props = {k: v for k, v in message.properties.items() if k != "application_headers"}
            assert props == ref["properties"]
            assert set(celery_headers(message.properties["application_headers"])) == \
                set(ref["headers"])
            assert celery_headers(message.headers) == {"hostname": "w1@corpus"}
            assert read_sequence(message.headers) is not None
    finally:
        conn.close()
        cleanup_broker(amqp_url, declared)


def celery_headers(headers: dict) -> dict:
    """The headers without our sequence headers (which Celery's tools ignore)."""
    return {k: v for k, v in headers.items() if k not in (SENDER_HEADER, SEQUENCE_HEADER)}


def test_redis_envelopes_match_the_corpus(redis_url, corpus_redis):
    import redis

    app, declared = make_app(redis_url)
    exchange = app.conf.event_exchange
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    db = redis_url.rsplit("/", 1)[1]
    pubsub.psubscribe(f"/{db}.{exchange}/*")
    try:
        pubsub.get_message(timeout=1)  # the subscribe confirmation
        publish_samples(app)
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 5 and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message and message["type"] == "pmessage":
                got.append(message)
        assert len(got) == 5
        ref_by_key = {}
        for ref in corpus_redis:
            ref_by_key.setdefault(ref["routing_key"], ref)
        for message in got:
            envelope = json.loads(message["data"])
            rk = envelope["properties"]["delivery_info"]["routing_key"]
            ref = ref_by_key[rk]["envelope"]
            assert message["channel"].decode() == f"/{db}.{exchange}/{rk}"
            assert list(envelope) == list(ref)
            assert list(envelope["properties"]) == list(ref["properties"])
            assert celery_headers(envelope["headers"]) == {"hostname": "w1@corpus"}
            assert read_sequence(envelope["headers"]) is not None
            for key in ("content-type", "content-encoding"):
                assert envelope[key] == ref[key]
            for key in ("delivery_mode", "priority", "body_encoding"):
                assert envelope["properties"][key] == ref["properties"][key]
            assert envelope["properties"]["delivery_info"]["exchange"] == exchange
    finally:
        pubsub.close()
        client.close()
        cleanup_broker(redis_url, declared)
