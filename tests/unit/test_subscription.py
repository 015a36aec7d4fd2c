"""``--queue``/``--stream`` options: offsets, sizes, and what each broker can do."""

from __future__ import annotations

import datetime as dt

import pytest

from tidings.config import ImproperlyConfigured
from tidings.events.subscription import Subscription, parse_offset, parse_size

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(("text", "expected"), [
    ("first", "first"), ("LAST", "last"), ("next", "next"), ("42", 42),
    ("-1h", NOW - dt.timedelta(hours=1)), ("-30m", NOW - dt.timedelta(minutes=30)),
    ("-2d", NOW - dt.timedelta(days=2)),
    ("2026-12-01T08:00:00+00:00", dt.datetime(2026, 12, 1, 8, tzinfo=dt.timezone.utc)),
])
def test_offsets(text, expected):
    assert parse_offset(text, now=NOW) == expected


def test_a_naive_time_is_local_time():
    assert parse_offset("2026-12-01T08:00").tzinfo is not None


@pytest.mark.parametrize("text", ["yesterday", "-1x", "1h", "", "first last"])
def test_bad_offsets_say_what_is_accepted(text):
    with pytest.raises(ValueError, match="first, last, next"):
        parse_offset(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("5GB", 5 * 10**9), ("500MiB", 500 * 2**20), ("1000", 1000), (" 2 gib ", 2 * 2**30)])
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["0", "5XB", "-1GB", "GB"])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_one_source_at_a_time_and_stream_options_need_a_stream():
    with pytest.raises(ImproperlyConfigured, match="cannot both"):
        Subscription(queue="a", stream="b")
    with pytest.raises(ImproperlyConfigured, match="only with --stream"):
        Subscription(queue="a", max_bytes=10)
    assert Subscription(stream="s", max_age=86400).max_age_argument == "86400s"


def test_durable_reading_needs_rabbitmq():
    Subscription(queue="a").check("amqp")
    Subscription().check("redis")  # the transient queue works everywhere
    for driver in ("redis", "filesystem"):
        with pytest.raises(ImproperlyConfigured, match="need RabbitMQ"):
            Subscription(stream="s").check(driver)


def test_a_stream_resumes_after_what_it_applied():
    sub = Subscription(stream="s", offset="first").after(41)
    assert sub.offset == 42 and sub.stream == "s"
