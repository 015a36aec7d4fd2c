"""The JSON decoder gives the standard library's result, with orjson or without."""

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import run_without
from tidings.utils import jsoncodec


def _same(a, b) -> bool:
    """Equal as decoded values: types included (1 is not 1.0), NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b)) or False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                     st.text(), st.integers(min_value=-2**80, max_value=2**80))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=12)


@given(_VALUES)
def test_encoded_values_decode_as_json_decodes_them(value):
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        for form in (text, text.encode("utf-8", "surrogatepass")):
            assert _same(jsoncodec.loads(form), json.loads(form))


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_fail_as_json_does(data):
    try:
        expected = json.loads(data)
    except jsoncodec.DECODE_ERRORS as exc:
        with pytest.raises(type(exc)):
            jsoncodec.loads(data)
    else:
        assert _same(jsoncodec.loads(data), expected)


@pytest.mark.parametrize("text", [
    b'{"clock": 18446744073709551616}', b'{"clock": -9223372036854775809}',
    b"[NaN, Infinity, -Infinity]", b"1e400", b'"\\ud800"', b"\xef\xbb\xbf{}",
    b'{"a": 1, "a": 2}', "{\"t\": 1795600000.123456}", b'"\\u0000"',
])
def test_where_the_decoders_differ_the_standard_library_wins(text):
    assert _same(jsoncodec.loads(text), json.loads(text))


_FITTING = st.recursive(  # integers of 64 bits at most: where only exactness could differ
    st.one_of(st.none(), st.booleans(), st.floats(), st.text(),
              st.integers(min_value=-2**63, max_value=2**64 - 1)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=12)


@given(_FITTING)
def test_inexact_ints_decode_as_json_does_within_64_bits(value):
    text = json.dumps(value)
    assert _same(jsoncodec.loads_inexact_ints(text), json.loads(text))
    assert _same(jsoncodec.loads_inexact_ints(text.encode()), json.loads(text))


def test_inexact_ints_keep_the_standard_librarys_other_readings():
    for text in (b"[NaN, Infinity]", b"1e400", b'"\\ud800"', b"\xef\xbb\xbf{}"):
        assert _same(jsoncodec.loads_inexact_ints(text), json.loads(text))
    big = jsoncodec.loads_inexact_ints(b'{"seq": 18446744073709551616}')["seq"]
    assert big == 18446744073709551616  # a float where orjson reads it, equal in value
    for bad in (b"{", b"\xff"):
        with pytest.raises(jsoncodec.DECODE_ERRORS):
            jsoncodec.loads_inexact_ints(bad)


def test_text_that_no_decoder_takes_raises_a_decode_error():
    for bad in (b"{", b"\xff", "[1,]", b"[" * 100_000):
        with pytest.raises(jsoncodec.DECODE_ERRORS):
            jsoncodec.loads(bad)


def test_memoryview_input():
    assert jsoncodec.loads(memoryview(b'{"a": [1]}')) == {"a": [1]}


def test_without_orjson_the_standard_library_decodes():
    assert run_without("orjson", "from tidings.utils import jsoncodec\n"
                                 "assert not jsoncodec.FAST\n"
                                 "assert jsoncodec.loads(b'[NaN, 18446744073709551616]')[1]"
                                 " == 2**64\n"
                                 "try:\n    jsoncodec.loads(b'{')\n"
                                 "except jsoncodec.DECODE_ERRORS:\n    print('ok')\n") == "ok"


def test_the_speedups_extra_is_in_use_here():
    # the test environment installs it, so the orjson path is the one tested above
    assert jsoncodec.FAST


@given(_VALUES)
def test_dumps_writes_the_standard_librarys_text(value):
    assert jsoncodec.dumps(value) == json.dumps(value)


def test_dumps_refuses_what_json_cannot_hold():
    with pytest.raises(TypeError):
        jsoncodec.dumps({"a": object()})
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(jsoncodec.ENCODE_ERRORS):
        jsoncodec.dumps({"a": cycle})


_EVENTS = st.dictionaries(st.text(max_size=8), _VALUES, max_size=6)


@given(st.one_of(_EVENTS, st.lists(_EVENTS, max_size=4)))
def test_encoded_events_hold_the_values_json_dumps_writes(value):
    encoded = jsoncodec.encode_event(value)
    assert isinstance(encoded, bytes)
    assert _same(json.loads(encoded), json.loads(json.dumps(value)))


def test_plain_events_are_written_compactly_when_orjson_is_there():
    event = {"type": "task-sent", "clock": 3, "timestamp": 1.5, "name": "é", "eta": None}
    encoded = jsoncodec.encode_event([event])
    assert json.loads(encoded) == [event]
    if jsoncodec.FAST:
        assert encoded == b'[{"type":"task-sent","clock":3,"timestamp":1.5,"name":"\xc3\xa9",' \
                          b'"eta":null}]'
    else:
        assert encoded == json.dumps([event]).encode()


def test_encode_event_refuses_what_json_refuses():
    for bad in ({"a": object()}, [{"a": 1}, {"b": {1, 2}}]):
        with pytest.raises(TypeError):
            jsoncodec.encode_event(bad)
    assert json.loads(jsoncodec.encode_event({"a": float("nan")}))["a"] != 0  # NaN kept
