"""How the worker's state objects are written to its table and changelog.

A subject's or an account's state becomes plain values (the events it keeps as
tuples of their fields, in the dataclass field order) written with `marshal`, behind a
two-byte tag. This replaces pickle, which called a Python `__reduce__` for every
event kept: serialising the state was the worker's largest cost after Avro decoding.
marshal builds only plain values and never runs code; `decode_state` rebuilds the
objects and turns damaged bytes into a ValueError.

Nothing here unpickles: a value on a changelog topic is data, and whoever can write to
that topic must not be able to run code in the worker (pickle calls what the bytes name).
"""

from __future__ import annotations

import marshal
from collections.abc import Callable
from typing import Any, cast

from streams.engine.state import AccountState, SubjectState, TriggerRecord
from streams.model.events import (
    EVENT_MAKERS,
    EVENT_VALUES,
    ConsentChanged,
    EnrichmentMatched,
    EnrichmentRequested,
    FeatureToggled,
    ParticipantJoined,
    ProfileViewed,
)

__all__ = ["decode_state", "encode_state"]

_SUBJECT = b"S1"
_ACCOUNT = b"A1"
_MARSHAL_VERSION = 4  # read by every Python since 3.4

_CONSENT, _JOIN, _MATCH, _TOGGLE = (EVENT_VALUES[cls] for cls in (
    ConsentChanged, ParticipantJoined, EnrichmentMatched, FeatureToggled))
_TRIGGER_VALUES = {EnrichmentRequested: (0, EVENT_VALUES[EnrichmentRequested]),
                   ProfileViewed: (1, EVENT_VALUES[ProfileViewed])}
_make_consent = cast(Callable[..., ConsentChanged], EVENT_MAKERS[ConsentChanged.TYPE])
_make_join = cast(Callable[..., ParticipantJoined], EVENT_MAKERS[ParticipantJoined.TYPE])
_make_match = cast(Callable[..., EnrichmentMatched], EVENT_MAKERS[EnrichmentMatched.TYPE])
_make_toggle = cast(Callable[..., FeatureToggled], EVENT_MAKERS[FeatureToggled.TYPE])
_MAKE_TRIGGER = cast(tuple[Callable[..., EnrichmentRequested], Callable[..., ProfileViewed]],
                     (EVENT_MAKERS[EnrichmentRequested.TYPE], EVENT_MAKERS[ProfileViewed.TYPE]))


def encode_state(state: SubjectState | AccountState) -> bytes:
    if type(state) is SubjectState:
        return _SUBJECT + marshal.dumps(_subject_values(state), _MARSHAL_VERSION)
    if type(state) is AccountState:
        return _ACCOUNT + marshal.dumps(_account_values(state), _MARSHAL_VERSION)
    raise TypeError(f"not a state object: {type(state).__name__}")


def decode_state(raw: bytes) -> SubjectState | AccountState:
    """The state object of `raw`; ValueError when it is not one."""
    tag = raw[:2]
    try:
        values = marshal.loads(memoryview(raw)[2:])
        if tag == _SUBJECT:
            return _subject_from(values)
        if tag == _ACCOUNT:
            return _account_from(values)
    except (EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise ValueError(f"damaged state value ({type(exc).__name__})") from None
    raise ValueError("not a state value")


# -- subjects -------------------------------------------------------------------------------


def _subject_values(state: SubjectState) -> tuple[Any, ...]:
    return (
        state.pruned_at,
        state.seen,  # str -> int: marshal writes it as it is
        {key: [_CONSENT(e) for e in events] for key, events in state.consents.items()},
        state.notices,  # tuple key -> list of int
        {key: [_JOIN(e) for e in events] for key, events in state.joins.items()},
        {key: [_MATCH(e) for e in events] for key, events in state.matches.items()},
        {event_id: _trigger_values(record) for event_id, record in state.triggers.items()},
    )


def _trigger_values(record: TriggerRecord) -> tuple[Any, ...]:
    kind, values = _TRIGGER_VALUES[type(record.event)]
    return (kind, values(record.event), record.pending, record.outcomes, record.decided_at,
            record.received_at)


def _subject_from(values: tuple[Any, ...]) -> SubjectState:
    pruned_at, seen, consents, notices, joins, matches, triggers = values
    state = SubjectState()
    state.pruned_at = pruned_at
    state.seen = seen
    state.consents = {key: [_make_consent(*e) for e in events] for key, events in consents.items()}
    state.notices = notices
    state.joins = {key: [_make_join(*e) for e in events] for key, events in joins.items()}
    state.matches = {key: [_make_match(*e) for e in events] for key, events in matches.items()}
    state.triggers = {event_id: _trigger_from(record) for event_id, record in triggers.items()}
    return state


def _trigger_from(values: tuple[Any, ...]) -> TriggerRecord:
    kind, event, pending, outcomes, decided_at, received_at = values
    record = TriggerRecord(_MAKE_TRIGGER[kind](*event), pending, received_at)
    record.outcomes = outcomes
    record.decided_at = decided_at
    return record


# -- accounts -------------------------------------------------------------------------------


def _account_values(state: AccountState) -> tuple[Any, ...]:
    return (
        state.pruned_at,
        state.seen,
        {key: [_TOGGLE(e) for e in events] for key, events in state.toggles.items()},
        state.automatic,
    )


def _account_from(values: tuple[Any, ...]) -> AccountState:
    pruned_at, seen, toggles, automatic = values
    state = AccountState()
    state.pruned_at = pruned_at
    state.seen = seen
    state.toggles = {key: [_make_toggle(*e) for e in events] for key, events in toggles.items()}
    state.automatic = automatic
    return state
