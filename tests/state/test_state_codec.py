"""The worker's state values: every state the engine builds comes back the same, a value
a pickled value is refused (it never runs code), and damaged bytes are a ValueError."""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.engine import DictStore, Engine
from streams.engine.state import (
    ACCOUNT_FIELDS,
    SUBJECT_FIELDS,
    AccountState,
    SubjectState,
    TriggerRecord,
)
from streams.model.events import Event
from streams.state.state_codec import decode_state, encode_state
from tests.hypothesis_profiles import examples
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


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(events(), max_size=25), st.one_of(st.none(), st.integers(0, 2**41)))
def test_every_state_comes_back_the_same(feed: list[Event], wall_ms: int | None) -> None:
    for state in states_after(feed, wall_ms):
        raw = encode_state(state)
        back = decode_state(raw)
        assert type(back) is type(state)
        assert canonical(back) == canonical(state)
        assert canonical(decode_state(encode_state(back))) == canonical(state)


@settings(max_examples=examples(200), deadline=None)
@given(st.sampled_from([b"S1", b"A1", b"Z9", b""]), st.binary(max_size=120))
def test_damaged_values_are_value_errors(tag: bytes, tail: bytes) -> None:
    with contextlib.suppress(ValueError):  # any other exception fails the test
        decode_state(tag + tail)


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch " + str(_MARK),))


_MARK = Path(tempfile.gettempdir()) / f"consentwatch-unpickled-{os.getpid()}"


def test_a_pickled_value_is_refused_and_runs_nothing() -> None:
    # Anyone who can write to a changelog topic could run code in the worker when its
    # values were unpickled; nothing is unpickled any more.
    _MARK.unlink(missing_ok=True)
    for value in (_RunsCode(), {"not": "a state"}):
        with pytest.raises(ValueError):
            decode_state(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    assert not _MARK.exists()
