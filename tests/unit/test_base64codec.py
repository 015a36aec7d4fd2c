"""Base64 decoding gives the standard library's result, with pybase64 or without."""

import base64
import binascii

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import run_without
from tidings.utils import base64codec


def _outcome(decode, text):
    try:
        return decode(text)
    except ValueError as exc:  # binascii.Error is one
        return type(exc)


@given(st.binary(max_size=200))
def test_what_kombu_writes_decodes_as_the_standard_library_does(data):
    text = base64.b64encode(data).decode()
    assert base64codec.decode(text) == data == binascii.a2b_base64(text)


# the alphabet, padding, and what a2b_base64 skips or refuses
_TEXT = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefgh+/=\n \t*-_é", max_size=40)


@given(_TEXT)
def test_any_text_decodes_or_fails_as_the_standard_library_does(text):
    assert _outcome(base64codec.decode, text) == _outcome(binascii.a2b_base64, text)
    raw = text.encode()
    assert _outcome(base64codec.decode, raw) == _outcome(binascii.a2b_base64, raw)


@pytest.mark.parametrize("text", ["YQ", "YR==", "YQ==\n", "Y Q = =", "YQ===", "=YQ==", ""])
def test_edge_cases(text):
    assert _outcome(base64codec.decode, text) == _outcome(binascii.a2b_base64, text)


def test_without_pybase64_the_standard_library_decodes():
    assert run_without("pybase64", "from tidings.utils import base64codec\n"
                                   "assert not base64codec.FAST\n"
                                   "print(base64codec.decode('YWJj\\n').decode())\n") == "abc"


def test_the_speedups_extra_is_in_use_here():
    # the test environment installs it, so the pybase64 path is the one tested above
    assert base64codec.FAST
