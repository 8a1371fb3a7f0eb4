"""The worker's state values: every state the engine builds comes back the same, a value
pickled by an earlier version still reads, and damaged bytes are a ValueError."""

from __future__ import annotations

import contextlib
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.engine import DictStore, Engine
from streams.engine import state as state_module
from streams.engine.state import (
    ACCOUNT_FIELDS,
    SUBJECT_FIELDS,
    AccountState,
    SubjectState,
    TriggerRecord,
)
from streams.model.events import Event
from streams.model.validate import event_from_record
from streams.pipeline.state_codec import decode_state, encode_state
from tests.builders import requested
from tests.strategies import events


def canonical(state: SubjectState | AccountState) -> object:
    """Everything a state holds, as plain values (the state classes have no __eq__)."""
    def plain(value: object) -> object:
        if isinstance(value, TriggerRecord):
            return ("record", value.event, value.pending, value.outcomes, value.decided_at,
                    value.received_at)
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list):
            return [plain(item) for item in value]
        return value

    names = SUBJECT_FIELDS if type(state) is SubjectState else ACCOUNT_FIELDS
    return (type(state).__name__, {name: plain(getattr(state, name)) for name in names})


def states_after(feed: list[Event], wall_ms: int | None) -> list[SubjectState | AccountState]:
    store = DictStore()
    engine = Engine(store)
    for position, event in enumerate(feed):
        engine.process(event, wall_ms=wall_ms, position=position)
    engine.advance_to(max((e.occurred_at for e in feed), default=0) - 1)
    return [state for _, state in store.subjects()] + [state for _, state in store.accounts()]


@settings(max_examples=60, deadline=None)
@given(st.lists(events(), max_size=25), st.one_of(st.none(), st.integers(0, 2**41)))
def test_every_state_comes_back_the_same(feed: list[Event], wall_ms: int | None) -> None:
    for state in states_after(feed, wall_ms):
        raw = encode_state(state)
        back = decode_state(raw)
        assert type(back) is type(state)
        assert canonical(back) == canonical(state)
        assert canonical(decode_state(encode_state(back))) == canonical(state)


@settings(max_examples=25, deadline=None)
@given(st.lists(events(), min_size=1, max_size=15))
def test_a_pickled_state_still_reads(feed: list[Event]) -> None:
    for state in states_after(feed, None):
        back = decode_state(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
        assert canonical(back) == canonical(state)


def test_a_trigger_pickled_before_received_at_existed_still_reads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    feed = [event_from_record(requested(0))]
    [state] = [s for s in states_after(feed, None) if type(s) is SubjectState]
    [(event_id, record)] = state.triggers.items()

    class TriggerRecord:  # as it was: no `received_at`, pickled by pickle's default
        __slots__ = ("decided_at", "event", "outcomes", "pending")

    TriggerRecord.__module__ = "streams.engine.state"
    TriggerRecord.__qualname__ = "TriggerRecord"
    old = TriggerRecord()
    old.event, old.pending, old.outcomes, old.decided_at = (
        record.event, record.pending, {"enrichment-without-consent": None}, 7)
    state.triggers = {event_id: old}  # type: ignore[dict-item]
    with monkeypatch.context() as patch:  # pickle names the class by module and name
        patch.setattr(state_module, "TriggerRecord", TriggerRecord)
        raw = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    back = decode_state(raw)
    assert type(back) is SubjectState
    loaded = back.triggers[event_id]
    assert type(loaded) is state_module.TriggerRecord
    assert (loaded.event, loaded.pending, loaded.outcomes, loaded.decided_at,
            loaded.received_at) == (record.event, record.pending,
                                    {"enrichment-without-consent": None}, 7, None)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([b"S1", b"A1", b"Z9", b""]), st.binary(max_size=120))
def test_damaged_values_are_value_errors(tag: bytes, tail: bytes) -> None:
    with contextlib.suppress(ValueError):  # any other exception fails the test
        decode_state(tag + tail)


def test_a_pickle_of_anything_else_is_refused() -> None:
    with pytest.raises(ValueError):
        decode_state(pickle.dumps({"not": "a state"}, protocol=pickle.HIGHEST_PROTOCOL))
