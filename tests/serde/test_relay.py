"""The correlate topic's relayed events: every event comes back equal; damage is an
InvalidEvent, never a crash; the Avro framing and the watermark marker cannot be
mistaken for it."""

from __future__ import annotations

import marshal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.errors import InvalidEvent
from streams.model.events import Event
from streams.pipeline.control import encode_control, is_control
from streams.pipeline.watermarks import encode_marker, is_marker
from streams.serde.relay import RELAY_MAGIC, decode_relayed, encode_relayed, is_relayed
from streams.serde.wire import SingleObjectFraming
from tests.hypothesis_profiles import examples
from tests.strategies import events


@settings(max_examples=examples(300), deadline=None)
@given(events())
def test_every_event_comes_back_equal(event: Event) -> None:
    value = encode_relayed(event)
    assert is_relayed(value)
    back = decode_relayed(value)
    assert back == event
    assert type(back) is type(event)
    assert hash(back) == hash(event)


@settings(max_examples=examples(50), deadline=None)
@given(events())
def test_the_other_records_of_the_topics_are_not_relayed(event: Event) -> None:
    assert not is_relayed(SingleObjectFraming().encode(event))
    assert not is_relayed(encode_marker({"t:0": (1, "active")}))
    assert not is_relayed(encode_control()) and not is_marker(encode_control())
    assert not is_control(encode_relayed(event)) and not is_control(encode_marker({}))
    assert not is_control(SingleObjectFraming().encode(event))
    assert not is_marker(encode_relayed(event))
    assert not is_relayed(None)


@settings(max_examples=examples(500), deadline=None)
@given(st.binary(max_size=200))
def test_damaged_records_are_invalid_events(tail: bytes) -> None:
    try:
        decode_relayed(RELAY_MAGIC + tail)
    except InvalidEvent as error:
        assert error.code == "bad_relay"


@settings(max_examples=examples(100), deadline=None)
@given(events(), st.data())
def test_truncated_or_reshaped_records_are_refused(event: Event, data: st.DataObject) -> None:
    value = encode_relayed(event)
    cut = data.draw(st.integers(min_value=len(RELAY_MAGIC), max_value=len(value) - 1))
    with pytest.raises(InvalidEvent):
        decode_relayed(value[:cut])
    values = marshal.loads(value[len(RELAY_MAGIC):])
    for shape in (values[:-1], (*values, None), ("NoSuchEvent", *values[1:]), list(values),
                  (1, *values[1:])):
        with pytest.raises(InvalidEvent):
            decode_relayed(RELAY_MAGIC + marshal.dumps(shape))


@pytest.mark.parametrize("field, value", [
    ("is_guest", 1),  # an int where the contract says bool
    ("email", 5),  # an int where it says an optional string
    ("display_name", None),  # null where it says a string
    ("occurred_at", "2026-01-01T00:00:00Z"),  # text where it says epoch ms
])
def test_a_relayed_value_of_another_type_is_refused(field: str, value: object) -> None:
    """Rebuilt by position without the validator, such an event would be stored as state
    and written to the changelog, which then could not be read back."""
    from dataclasses import fields

    from streams.model.validate import event_from_record
    from tests.builders import joined

    event = event_from_record(joined(0))
    values = [event.TYPE, *(getattr(event, f.name) for f in fields(event))]
    values[1 + [f.name for f in fields(event)].index(field)] = value
    with pytest.raises(InvalidEvent) as caught:
        decode_relayed(RELAY_MAGIC + marshal.dumps(tuple(values), 4))
    assert caught.value.code == "bad_relay"
