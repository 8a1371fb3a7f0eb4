"""The worker's state values: every state the engine builds comes back the same, a value
a pickled value is refused (it never runs code), and damaged bytes are a DamagedState (a
ValueError) with the same message in both builds."""

from __future__ import annotations

import contextlib
import marshal
import os
import pickle
import re
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
from streams.errors import InvalidEvent
from streams.model.events import Event
from streams.state.state_codec import DamagedState, decode_state, encode_state
from tests.builders import LATENESS, SEC, consent, feed, joined, make_engine, requested
from tests.hypothesis_profiles import examples
from tests.strategies import events


def canonical(state: SubjectState | AccountState) -> object:
    """Everything a state holds, as plain values (the state classes have no __eq__)."""
    def plain(value: object) -> object:
        if isinstance(value, TriggerRecord):
            return ("record", value.event, value.pending, value.outcomes, value.decided_at,
                    value.received_at, value.amended)
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
        with contextlib.suppress(InvalidEvent):  # a trigger beyond the horizon: not applied
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


_MESSAGE = re.compile(r"damaged state value \([a-z_ ]+\)")


def refused(raw: bytes) -> DamagedState:
    """The error decoding `raw` raises; any other exception, or none, fails the test."""
    with pytest.raises(DamagedState) as caught:
        decode_state(raw)
    assert isinstance(caught.value, ValueError)
    assert _MESSAGE.fullmatch(str(caught.value)), str(caught.value)
    return caught.value


@settings(max_examples=examples(200), deadline=None)
@given(st.sampled_from([b"S1", b"A1", b"Z9", b""]), st.binary(max_size=120))
def test_damaged_values_are_value_errors(tag: bytes, tail: bytes) -> None:
    try:
        decode_state(tag + tail)
    except DamagedState as error:  # any other exception fails the test
        assert _MESSAGE.fullmatch(str(error)), str(error)


# Plain values marshal writes: most random bytes are not even marshal, these are.
_plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (st.lists(inner, max_size=4) | st.lists(inner, max_size=8).map(tuple)
                   | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3)),
    max_leaves=12)


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from([b"S1", b"A1"]), _plain)
def test_plain_values_that_are_no_state_are_refused(tag: bytes, values: object) -> None:
    try:
        decode_state(tag + marshal.dumps(values))
    except DamagedState as error:
        assert _MESSAGE.fullmatch(str(error)), str(error)


def test_a_value_of_the_wrong_shape_is_refused_alike_in_both_builds() -> None:
    # From the sources this raised AttributeError, compiled a ValueError naming TypeError.
    assert str(refused(b"A1" + b"Z\x04\0\0\0\0")) == "damaged state value (account)"
    assert str(refused(b"A1" + marshal.dumps(("x", {}, {}, {})))) == (
        "damaged state value (account pruned_at)")  # the sources took it
    assert str(refused(b"Z9")) == "damaged state value (not a state value)"
    assert str(refused(b"S1(")) == "damaged state value (unreadable)"


def _parts(value: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """The path of every value inside `value` (dict values, list and tuple items)."""
    inner: list[tuple[object, object]] = []
    if isinstance(value, dict):
        inner = list(value.items())
    elif isinstance(value, list | tuple):
        inner = list(enumerate(value))
    found = [path]
    for key, item in inner:
        found += _parts(item, (*path, key))
    return found


def _replaced(value: object, path: tuple[object, ...], new: object) -> object:
    if not path:
        return new
    key, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: _replaced(v, rest, new) if k == key else v for k, v in value.items()}
    assert isinstance(value, list | tuple) and isinstance(key, int)
    items = [_replaced(v, rest, new) if i == key else v for i, v in enumerate(value)]
    return tuple(items) if isinstance(value, tuple) else items


@settings(max_examples=examples(150), deadline=None)
@given(st.lists(events(), min_size=1, max_size=25), st.data())
def test_any_part_of_a_state_of_the_wrong_type_is_refused(feed: list[Event],
                                                          data: st.DataObject) -> None:
    # No part of a state is ever a float: every part replaced by one must be refused,
    # the compiled state classes' own type checks must never be what catches it.
    for state in states_after(feed, None):
        raw = encode_state(state)
        values = marshal.loads(raw[2:])
        path = data.draw(st.sampled_from(_parts(values)))
        refused(raw[:2] + marshal.dumps(_replaced(values, path, 0.5)))


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


def test_what_late_events_amended_is_kept_apart_and_older_values_still_read() -> None:
    """A trigger's record keeps what its decisions raised (`outcomes`) and what late
    events changed since (`amended`); a value written before `amended` existed (six
    fields to a trigger) reads as amended by nothing."""
    engine = make_engine()
    r = requested(0)
    feed(engine, [r, joined(LATENESS + 1, subject_id="u-other"),
                  consent(-10 * SEC, status="WITHDRAWN")])
    state = engine.store.subject(r["subject_id"])
    assert state is not None
    record = state.triggers[r["event_id"]]
    assert record.outcomes["enrichment-without-consent"] == (r["event_id"],)
    assert set(record.amended) == {"enrichment-without-consent"}
    raw = encode_state(state)
    assert canonical(decode_state(raw)) == canonical(state)
    values = marshal.loads(raw[2:])
    triggers = {event_id: trigger[:6] for event_id, trigger in values[6].items()}
    older = decode_state(raw[:2] + marshal.dumps((*values[:6], triggers)))
    assert isinstance(older, SubjectState)
    assert older.triggers[r["event_id"]].amended == {}
    assert older.triggers[r["event_id"]].outcomes == record.outcomes
    # A trigger no late event changed is written in the six fields a release before
    # `amended` reads.
    record.amended = {}
    assert {len(t) for t in marshal.loads(encode_state(state)[2:])[6].values()} == {6}
