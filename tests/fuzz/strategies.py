"""Hypothesis strategies for events, built from the protocol's event table.

Good events carry every field of their type with a value of the right
type (numbers include NaN, infinities, huge and negative values, because
the protocol accepts any number); bad events break exactly one rule of
:func:`tidings.protocol.events.validate_event`, so each knows the cause it
must be counted under.
"""

from __future__ import annotations

from hypothesis import strategies as st

from tidings.protocol.events import EVENT_TYPES, FIELD_CHECKS

__all__ = ["CAUSES", "bad_event", "good_event", "json_values"]

#: Every cause the pipeline may count skipped input under.
CAUSES = {"not-json", "content-disallowed", "not-an-object", "missing-type",
          "missing-field", "null-clock", "bad-field-type", "handler-error", "wakeup-failed"}

texts = st.text(max_size=40)
huge_texts = st.text(min_size=0, max_size=5000)
numbers = st.one_of(st.integers(min_value=-2**63, max_value=2**63 - 1),
                    st.floats(allow_nan=True, allow_infinity=True))
ints = st.integers(min_value=-2**63, max_value=2**63 - 1)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, texts),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(texts, children, max_size=5),
    max_leaves=30)

#: A value of the right type for each checked field (None where allowed).
RIGHT = {
    "hostname": texts, "type": texts, "timestamp": numbers,
    "utcoffset": st.none() | numbers, "pid": st.none() | ints, "uuid": texts,
    "name": st.none() | texts, "root_id": st.none() | texts, "parent_id": st.none() | texts,
    "retries": st.none() | ints, "runtime": st.none() | numbers, "freq": st.none() | numbers,
    "active": st.none() | ints, "processed": st.none() | ints,
    "loadavg": st.lists(numbers, max_size=3),
}
#: A value of a wrong type for each checked field.
WRONG = {
    "hostname": st.none() | ints, "type": ints | st.lists(texts, max_size=2),
    "timestamp": texts | st.none() | st.booleans(), "utcoffset": texts,
    "pid": texts | st.floats(allow_nan=False) | st.booleans(), "uuid": st.none() | ints,
    "name": ints, "root_id": ints, "parent_id": st.lists(texts, max_size=1),
    "retries": texts | st.booleans(), "runtime": texts, "freq": texts,
    "active": texts | st.booleans(), "processed": st.floats(), "loadavg": texts | ints,
}
assert set(RIGHT) == set(WRONG) == set(FIELD_CHECKS)


#: Values of the fields nobody type-checks (args, result, sw_ident ...).
plain = st.one_of(st.none(), texts, ints, st.booleans())
#: Keys an attacker might send to reach attributes, with keys of the table.
EXTRA_KEYS = ("__class__", "__dict__", "_fields", "event", "merge", "ready", "info",
              "as_dict", "x-custom", "", "1abc", "heartbeats", "_keys")


def _of_type(type_: str):
    fields = {"hostname": texts, "utcoffset": RIGHT["utcoffset"], "pid": RIGHT["pid"],
              "clock": ints}
    for field in EVENT_TYPES[type_].fields:
        fields[field] = RIGHT.get(field, plain)
    if type_.startswith("task-"):
        fields["uuid"] = texts
    fields["timestamp"] = numbers
    return st.fixed_dictionaries(fields, optional=dict.fromkeys(EXTRA_KEYS, plain)).map(
        lambda event: {**event, "type": type_})


_BY_TYPE = {t: _of_type(t) for t in EVENT_TYPES}


def good_event(types=tuple(EVENT_TYPES)):
    """A valid event of one of ``types``: all its fields, maybe keys that aim at internals."""
    return st.one_of([_BY_TYPE[t] for t in types])


@st.composite
def bad_event(draw):
    """``(event, cause)``: an event broken in one way, and the cause it is counted under."""
    how = draw(st.sampled_from(["not-object", "no-type", "null-clock", "bad-clock",
                                "wrong-field", "no-uuid"]))
    if how == "not-object":
        # (a list is not here: at the top of a message it is a batch)
        return draw(st.one_of(st.none(), numbers, texts, st.booleans())), "not-an-object"
    event = draw(good_event())
    if how == "no-type":
        del event["type"]
        return event, "missing-type"
    if how == "null-clock":
        if event["type"] == "task-sent":
            event["type"] = "task-started"
        event["clock"] = None
        return event, "null-clock"
    if how == "bad-clock":
        event["clock"] = draw(texts | st.floats() | st.booleans())
        return event, "bad-field-type"
    if how == "no-uuid" and event["type"].startswith("task-"):
        del event["uuid"]
        return event, "missing-field"
    field = draw(st.sampled_from(sorted(f for f in WRONG if f in event)))
    event[field] = draw(WRONG[field])
    return event, "bad-field-type"
