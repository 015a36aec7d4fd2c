"""Loss accounting: sequence gaps, late messages, dead letters, senders' own counts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tidings.events.loss import LossAccount
from tidings.protocol.loss import (
    DROPPED_FIELD,
    SENDER_HEADER,
    SEQUENCE_HEADER,
    dead_letter_cause,
    read_sequence,
)


def messages(counts: list[int]) -> list[tuple[int, int]]:
    """``(first sequence number, events)`` of consecutive messages."""
    out, seq = [], 0
    for n in counts:
        out.append((seq, n))
        seq += n
    return out


@given(st.lists(st.integers(1, 30), min_size=2, max_size=60), st.data())
def test_the_gap_is_exactly_what_went_missing_whatever_the_order(counts, data):
    msgs = messages(counts)
    rest = msgs[1:]
    kept = [m for m in rest if data.draw(st.booleans())]
    order = data.draw(st.permutations(kept))
    account = LossAccount()
    for seq, n in [msgs[0], *order]:
        account.sequence("w1/1/a", seq, n)
    last_end = max(seq + n for seq, n in [msgs[0], *kept])
    missing = sum(n for seq, n in rest if (seq, n) not in kept and seq < last_end)
    assert account.lost["sequence-gap"] == missing
    assert account.duplicates == 0


def test_a_message_seen_twice_is_a_duplicate_not_a_loss():
    account = LossAccount()
    for seq in (0, 1, 2, 1, 3):
        account.sequence("s", seq, 1)
    assert account.total == 0 and account.duplicates == 1


def test_senders_are_counted_apart_and_a_new_process_is_a_new_sender():
    account = LossAccount()
    account.sequence("w1/10/a", 0, 24)
    account.sequence("w2/11/b", 100, 1)  # first message of a sender: no gap
    account.sequence("w1/10/a", 30, 1)  # 24..29 missing
    account.sequence("w1/12/c", 0, 1)  # restarted: a sender of its own
    assert account.lost["sequence-gap"] == 6


def test_dead_letters_count_once_under_the_brokers_reason():
    account = LossAccount()
    headers = lambda seq, reason: {SENDER_HEADER: "s", SEQUENCE_HEADER: seq,  # noqa: E731
                                   "x-death": [{"reason": reason, "queue": "q"}]}
    account.sequence("s", 0, 1)
    account.sequence("s", 11, 1)  # 1..10 missing: a gap for now
    account.dead_letter(headers(1, "expired"), 4)  # ... of which 1..4 expired
    account.dead_letter(headers(12, "maxlen"), 3)  # before its gap was seen
    account.sequence("s", 15, 1)
    account.dead_letter({"x-death": [{"reason": "expired"}]}, 24)  # a Celery sender's batch
    assert account.as_dict() == {"expired": 28, "overflow": 3, "sequence-gap": 6}


def test_bounds_hold_and_forgetting_only_loses_precision():
    account = LossAccount(max_senders=3, max_open_gaps=5)
    for sender in "abcdef":
        account.sequence(sender, 0, 1)
    assert account.senders == 3
    for i in range(1, 20):
        account.sequence("f", i * 2, 1)  # a gap of 1 each time
    assert account.open_gaps <= 5
    assert account.lost["sequence-gap"] == 19


def test_workers_report_what_they_dropped_themselves():
    account = LossAccount()
    for dropped in (0, 5, 5, 12):
        account.worker_event({"hostname": "w1", "pid": 1, DROPPED_FIELD: dropped})
    account.worker_event({"hostname": "w1", "pid": 2, DROPPED_FIELD: 3})  # a new process
    for bad in (-1, True, "7", None, 2.5):
        account.worker_event({"hostname": "w1", "pid": 1, DROPPED_FIELD: bad})
    account.worker_event({"hostname": "w9", "pid": 1})  # a Celery worker: nothing
    assert account.as_dict() == {"sender-dropped": 15}


@given(st.dictionaries(st.text(max_size=20), st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(), st.floats(), st.lists(st.integers()))))
def test_headers_are_input_like_any_other(headers):
    got = read_sequence(headers)
    if got is not None:
        assert isinstance(got[0], str) and isinstance(got[1], int) and got[1] >= 0
    assert dead_letter_cause(headers) in ("expired", "overflow")
    LossAccount().dead_letter(headers, 1)


def test_malformed_sequence_headers_are_ignored():
    for sender, seq in (("", 1), ("x" * 301, 1), ("s", -1), ("s", 2**63), ("s", True),
                        ("s", "1"), (5, 1)):
        assert read_sequence({SENDER_HEADER: sender, SEQUENCE_HEADER: seq}) is None
    assert read_sequence(None) is None
    assert read_sequence({SENDER_HEADER: "s", SEQUENCE_HEADER: 7}) == ("s", 7)


def test_tasks_finished_while_disconnected_are_estimated_for_celery_senders():
    account = LossAccount()
    beat = lambda host, n: account.worker_event(  # noqa: E731
        {"type": "worker-heartbeat", "hostname": host, "processed": n})
    beat("cel@h", 10)
    beat("tid@h", 10)
    account.sequence("tid@h/1/abc", 0, 1)  # a Tidings sender: counted exactly instead
    for _ in range(3):
        account.task_finished("cel@h")
    beat("cel@h", 13)  # connected all along: nothing estimated
    assert account.total == 0
    account.outage(100.0, 105.0)
    for _ in range(2):
        account.task_finished("cel@h")  # seen after the reconnect
    beat("cel@h", 20)  # 7 processed, 2 seen: 5 tasks' events missed
    beat("tid@h", 20)
    assert account.as_dict() == {"disconnected": 5 * 3}
    assert "disconnected: 15 (estimate)" in str(account)
    assert list(account.outages) == [(100.0, 105.0)]
    beat("cel@h", 25)  # connected again: no more estimates
    beat("cel@h", 2)  # restarted: starts afresh
    assert account.total == 15
