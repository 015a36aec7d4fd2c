"""Redis's prepared publishing (transport/publish_redis.py): kombu's messages, byte for
byte, kombu's path wherever it does not apply, and the replies it reads late."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
import time
import uuid
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kombu import Connection, Exchange, Producer

from tests.conftest import unique
from tidings import App
from tidings.events import EventDispatcher
from tidings.protocol.loss import SEQUENCE_HEADER
from tidings.transport import publish_prepared
from tidings.transport import publish_redis as module
from tidings.transport.publish_redis import publish_redis

pytestmark = pytest.mark.broker

TAG = re.compile(rb'"delivery_tag": "[0-9a-f-]{36}"')
keys = st.text(max_size=30)
values = st.one_of(st.text(max_size=100), st.integers(min_value=-(2**63), max_value=2**63),
                   st.floats(allow_nan=False), st.booleans(), st.none())


@contextmanager
def _listening(url: str, pattern: str):
    """A raw subscriber to ``pattern`` (subscribed when entered), closed on exit."""
    import redis

    with redis.Redis.from_url(url) as client, client.pubsub() as pubsub:
        pubsub.psubscribe(pattern)
        assert pubsub.get_message(timeout=2)["type"] == "psubscribe"
        yield pubsub


def _take(pubsub, count: int, timeout: float = 10) -> list[dict]:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message and message["type"] == "pmessage":
            got.append(message)
    return got


def _prefix(channel) -> str:
    """The channel's fanout prefix, its database number filled in (with the pool)."""
    assert channel.pool is not None
    return channel.keyprefix_fanout


def _bulk(data: bytes, at: int) -> tuple[bytes, int]:
    """The RESP bulk string at ``at``, read by its length (its bytes may hold CRLF),
    and where the next element starts."""
    end = data.index(b"\r\n", at)
    assert data[at:at + 1] == b"$"
    start = end + 2
    stop = start + int(data[at + 1:end])
    assert data[stop:stop + 2] == b"\r\n"
    return data[start:stop], stop + 2


def _payload(command: bytes) -> tuple[bytes, bytes]:
    """The topic and payload of a packed ``PUBLISH``, checked against redis-py's packer."""
    from redis.connection import PythonRespSerializer

    assert command.startswith(b"*3\r\n")
    verb, at = _bulk(command, 4)
    topic, at = _bulk(command, at)
    payload, at = _bulk(command, at)
    assert verb == b"PUBLISH" and at == len(command)
    packed = b"".join(PythonRespSerializer(6000, lambda v: v).pack("PUBLISH", topic, payload))
    assert packed == command
    return topic, payload


@pytest.fixture
def redis_channel(redis_url):
    with Connection(redis_url) as conn:
        yield conn, conn.default_channel


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(headers=st.dictionaries(keys, values, max_size=4), last=keys,
       seq=st.integers(min_value=0, max_value=2**63 - 1), body=st.binary(max_size=300),
       content_type=st.sampled_from(["application/json", "é/ü"]),
       delivery_mode=st.sampled_from([1, 2]), name=st.text(max_size=20),
       routing_key=st.text(max_size=20))
@example(headers={}, last="", seq=0, body=b"", content_type="application/json",
         delivery_mode=1, name="", routing_key="\x00seq")  # a placeholder's text
@example(headers={}, last="", seq=0, body=b"", content_type="application/json",
         delivery_mode=1, name="", routing_key="\r\n")  # CRLF in the topic
def test_the_message_is_kombus(redis_url, redis_channel, headers, last, seq, body,
                               content_type, delivery_mode, name, routing_key):
    """kombu publishes a message; ours for the same event is the same bytes, to the same
    topic (the delivery tag aside: a fresh uuid4 in both)."""
    _, channel = redis_channel
    headers = {k: v for k, v in headers.items() if k != last}
    exchange = Exchange(f"tidings-test-prep-{name}", "fanout")
    exchange(channel).declare()
    with _listening(redis_url, f"{_prefix(channel)}tidings-test-prep-*") as pubsub:
        Producer(channel).publish(body, exchange=exchange, routing_key=routing_key,
                                  headers={**headers, last: seq}, content_type=content_type,
                                  content_encoding="utf-8", delivery_mode=delivery_mode)
        (theirs,) = _take(pubsub, 1)
    prefix = channel.keyprefix_fanout
    topic = f"{prefix}{exchange.name}/{routing_key}" if routing_key else prefix + exchange.name
    try:
        template = module._template(topic, exchange.name, routing_key, content_type, "utf-8",
                                    tuple(headers.items()), last, delivery_mode)
    except ValueError:  # a text that is one of the template's placeholders: refused,
        # and publish_redis then leaves the message to kombu (test_it_stands_aside...)
        texts = {routing_key, exchange.name, content_type, last, *headers,
                 *(v for v in headers.values() if isinstance(v, str))}
        assert texts & {module._BODY, module._SEQ, module._TAG}
        return
    ours_topic, ours = _payload(template.command(body, seq))
    assert ours_topic == theirs["channel"]
    assert TAG.sub(b"", ours) == TAG.sub(b"", theirs["data"])
    assert TAG.search(ours)


def test_it_stands_aside_where_kombu_must_publish(redis_url):
    exchange = Exchange(unique("tidings-test-prep"), "fanout")
    args = ("task.started", b"{}", {"hostname": "h"}, SEQUENCE_HEADER, 1,
            "application/json", "utf-8", 1)
    with Connection(redis_url) as conn:
        channel = conn.default_channel
        assert publish_redis(channel, exchange, *args)
        assert not publish_redis(channel, Exchange(exchange.name, "topic"), *args)
        assert not publish_redis(channel, exchange, "k", b"{}", {"h": "\x00seq"},
                                 SEQUENCE_HEADER, 1, "application/json", "utf-8", 1)
        channel.close()
        assert not publish_redis(channel, exchange, *args)
    with Connection(redis_url, transport_options={"global_keyprefix": "p:"}) as conn:
        assert not publish_redis(conn.default_channel, exchange, *args)
    with Connection("memory://") as conn:
        assert not publish_redis(conn.default_channel, exchange, *args)


def test_a_dispatcher_publishes_through_it(redis_url, monkeypatch):
    """Every event after kombu's first (which declares) takes the prepared path, on one
    connection; the events arrive in order, numbered on across both paths."""
    taken: list[bool] = []

    def spy(*args, **kwargs):
        taken.append(publish_prepared(*args, **kwargs))
        return taken[-1]

    monkeypatch.setattr("tidings.events.dispatcher.publish_prepared", spy)
    app = App("prep", broker=redis_url, event_exchange=unique("tidings-test-prep"))
    count = 200
    with Connection(redis_url) as probe:
        prefix = _prefix(probe.default_channel)
    with _listening(redis_url, f"{prefix}{app.conf.event_exchange}/*") as pubsub:
        conn = app.connection_for_write()
        d = EventDispatcher(conn, app=app)
        for n in range(count):
            d.send("task-started", uuid=f"t{n}", n=n)
        got = _take(pubsub, count)
        outlet = module._outlets.get(d.producer.channel)  # this dispatcher's (others may live)
        owed = outlet is not None and outlet.connection.can_read(timeout=0.2)
        d.close()
        conn.release()
    assert taken[0] is False and all(taken[1:])
    assert outlet is not None and not owed  # Redis's replies are off: nothing to read
    envelopes = [json.loads(m["data"]) for m in got]
    assert [json.loads(base64.b64decode(e["body"]))["n"] for e in envelopes] \
        == list(range(count))
    seqs = [e["headers"][SEQUENCE_HEADER] for e in envelopes]
    assert seqs == list(range(seqs[0], seqs[0] + count))
    assert len({e["properties"]["delivery_tag"] for e in envelopes}) == count


def test_a_connection_closed_while_idle_loses_nothing(redis_url, monkeypatch):
    """The server closes the publishing connection; after :data:`IDLE_CHECK` the next
    publish sees it closed and opens a new one, so the events after it all arrive."""
    import redis

    monkeypatch.setattr(module, "IDLE_CHECK", 0.05)
    exchange = Exchange(unique("tidings-test-prep"), "fanout")
    args = (b"{}", {"hostname": "h"}, SEQUENCE_HEADER)
    with Connection(redis_url) as conn:
        channel = conn.default_channel
        with redis.Redis.from_url(redis_url) as killer, \
                _listening(redis_url, f"{_prefix(channel)}{exchange.name}/*") as pubsub:
            assert publish_redis(channel, exchange, "a", *args, 0, "application/json",
                                 "utf-8", 1)
            name = f"tidings-test-{uuid.uuid4().hex[:8]}"
            outlet = module._outlets[channel]
            outlet.connection.send_command("CLIENT", "SETNAME", name)  # no reply: quiet
            time.sleep(0.1)
            assert _kill_named(killer, name) == 1
            time.sleep(0.1)
            for n in range(1, 6):
                assert publish_redis(channel, exchange, "a", *args, n, "application/json",
                                     "utf-8", 1)
            got = _take(pubsub, 6)
    assert [json.loads(m["data"])["headers"][SEQUENCE_HEADER] for m in got] == list(range(6))


def _kill_named(client, name: str) -> int:
    ids = [c["id"] for c in client.client_list() if c.get("name") == name]
    return sum(int(client.execute_command("CLIENT", "KILL", "ID", i)) for i in ids)


@contextmanager
def _redis_user(redis_url: str, **rules):
    """The URL of a Redis user with these ACL rules, deleted afterwards."""
    import redis

    admin = redis.Redis.from_url(redis_url)
    user, password = f"tidings-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], **rules)
    try:
        yield redis_url.replace("redis://", f"redis://{user}:{password}@")
    finally:
        admin.acl_deluser(user)
        admin.close()


def test_a_refused_publish_raises_as_kombus_does(redis_url):
    """An ACL that allows one channel and not another: the refused topic's publish
    raises Redis's error each time (kombu's path raises it too), and the allowed one
    goes on through the quiet connection."""
    from redis.exceptions import ResponseError

    exchange = Exchange(unique("tidings-test-prep"), "fanout")
    with Connection(redis_url) as probe:
        prefix = _prefix(probe.default_channel)
    args = (b"{}", {}, SEQUENCE_HEADER)
    with _redis_user(redis_url, channels=[f"{prefix}{exchange.name}/ok"],
                     commands=["+@all"]) as url, Connection(url) as conn, \
            _listening(redis_url, f"{prefix}{exchange.name}/*") as pubsub:
        channel = conn.default_channel
        for n in range(3):
            with pytest.raises(ResponseError, match=r"(?i)permission|channel"):
                publish_redis(channel, exchange, "no", *args, n, "application/json",
                              "utf-8", 1)
            assert publish_redis(channel, exchange, "ok", *args, n, "application/json",
                                 "utf-8", 1)
        got = _take(pubsub, 3)
    assert [m["channel"].decode().rpartition("/")[2] for m in got] == ["ok"] * 3


def test_a_server_that_refuses_client_reply_gets_kombus_path(redis_url, caplog):
    """Replies cannot be turned off (an ACL without ``CLIENT``): it says so once, and
    kombu's path publishes every event, which arrives."""
    exchange = Exchange(unique("tidings-test-prep"), "fanout")
    with Connection(redis_url) as probe:
        prefix = _prefix(probe.default_channel)
    with _redis_user(redis_url, channels=["*"], commands=["+@all", "-client"]) as url:
        app = App("prep", broker=url, event_exchange=exchange.name)
        with _listening(redis_url, f"{prefix}{exchange.name}/*") as pubsub:
            with caplog.at_level(logging.WARNING, module.__name__), \
                    app.connection_for_write() as conn:
                d = EventDispatcher(conn, app=app)
                for n in range(5):
                    d.send("task-started", uuid=f"t{n}")
                assert not publish_redis(conn.default_channel, exchange, "k", b"{}", {},
                                         SEQUENCE_HEADER, 9, "application/json", "utf-8", 1)
            got = _take(pubsub, 5)
    assert len(got) == 5
    assert len([r for r in caplog.records if "CLIENT REPLY" in r.getMessage()]) == 1


def _hold_redis(redis_url: str, seconds: float) -> threading.Thread:
    """Keep Redis busy (a Lua loop) for about ``seconds``: what is written meanwhile
    waits unread in its socket."""
    import redis

    def hold():
        with redis.Redis.from_url(redis_url) as client:
            client.eval("local t = redis.call('TIME') local e = t[1] * 1e6 + t[2] + ARGV[1] "
                        "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] >= e",
                        0, int(seconds * 1e6))

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    time.sleep(seconds / 4)
    return thread


def test_events_sent_just_before_the_connection_closes_all_arrive(redis_url):
    """Events published, then the connection closed at once (``with
    connection_for_write()`` and no ``dispatcher.close()``, as Celery's documentation
    writes it), while Redis has not read them yet: every one arrives.  A socket closed
    with replies unread in it is reset rather than closed, and Redis then drops what it
    had not read; the publisher leaves no reply unread."""
    app = App("prep", broker=redis_url, event_exchange=unique("tidings-test-prep"))
    with Connection(redis_url) as probe:
        prefix = _prefix(probe.default_channel)
    with _listening(redis_url, f"{prefix}{app.conf.event_exchange}/*") as pubsub:
        with app.connection_for_write() as conn:
            d = EventDispatcher(conn, app=app)
            for n in range(10):
                d.send("task-started", uuid=f"t{n}")
            time.sleep(0.2)  # their replies (the old path's) have come
            holder = _hold_redis(redis_url, 0.4)
            for n in range(10, 60):
                d.send("task-started", uuid=f"t{n}")
        holder.join(10)
        got = _take(pubsub, 60, timeout=5)
    assert [json.loads(base64.b64decode(json.loads(m["data"])["body"]))["uuid"]
            for m in got] == [f"t{n}" for n in range(60)]


def test_delivery_tags_are_uuid4_text_unique_and_drawn_again_in_a_forked_child():
    tags = module._DeliveryTags()
    got = [tags.next() for _ in range(1000)]
    assert len(set(got)) == len(got)
    for tag in (got[0], got[-1]):
        assert str(uuid.UUID(tag.decode())) == tag.decode()
        assert uuid.UUID(tag.decode()).version == 4
    assert module._DeliveryTags().next()[:24] != got[0][:24]  # 80 random bits each
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its tag, then out at once
        os.write(write, module._tags.next())
        os._exit(0)
    os.close(write)
    assert os.waitpid(pid, 0)[1] == 0
    child = os.read(read, 64)
    os.close(read)
    parent = module._tags.next()
    assert len(child) == 36 and child[:24] != parent[:24]
