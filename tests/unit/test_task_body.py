"""A worker's decoding of task message bodies gives what kombu's ``message.decode()`` gives."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kombu.exceptions import ContentDisallowed
from kombu.message import Message
from kombu.serialization import dumps as kombu_dumps
from kombu.serialization import registry

from tidings.worker.request import decode_body

JSON_ACCEPT = {"application/json"}


def message(body: bytes | str, content_type: str = "application/json",
            encoding: str = "utf-8", accept: set[str] | None = JSON_ACCEPT) -> Message:
    return Message(body=body, content_type=content_type, content_encoding=encoding,
                   accept=accept)


def same_as_kombu(msg: Message) -> object:
    ours = decode_body(msg)
    theirs = Message(body=msg.body, content_type=msg.content_type,
                     content_encoding=msg.content_encoding, accept=msg.accept).decode()
    assert ours == theirs and type(ours) is type(theirs)
    return ours


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(json_values, json_values)
def test_celery_bodies_decode_as_kombu_decodes_them(args, kwargs):
    body = json.dumps([[args], {"k": kwargs}, {"callbacks": None, "chain": None}])
    same_as_kombu(message(body.encode()))
    same_as_kombu(message(body))  # a transport that gives text


def test_kombus_typed_values_are_kombus():
    """``{"__type__": ...}`` objects (kombu's datetimes, Decimals, bytes) go to kombu."""
    when = datetime(2026, 12, 6, 21, 0, tzinfo=timezone.utc)
    _, _, body = kombu_dumps([[when, Decimal("1.5"), b"raw"], {}, {}], serializer="json")
    assert '"__type__"' in body
    args = same_as_kombu(message(body.encode()))[0]
    assert args == [when, Decimal("1.5"), b"raw"]


def test_integers_past_64_bits_stay_exact():
    big = 2**70 + 1
    assert same_as_kombu(message(json.dumps([[big], {}, {}]).encode()))[0] == [big]


def test_what_the_consumer_does_not_accept_is_refused_as_kombu_refuses_it():
    with pytest.raises(ContentDisallowed):
        decode_body(message(b"[[], {}, {}]", accept={"application/x-yaml"}))


def test_other_content_types_are_kombus():
    body = registry.dumps([[1], {}, {}], serializer="pickle")[2]
    msg = message(body, content_type="application/x-python-serialize", encoding="binary",
                  accept={"application/x-python-serialize"})
    assert decode_body(msg) == [[1], {}, {}]


def test_bad_json_raises_and_is_counted_by_the_worker_as_undecodable():
    with pytest.raises(ValueError):
        decode_body(message(b"{not json"))
