"""How the worker's state objects are written to its table and changelog.

A subject's or an account's state becomes plain values (the events it keeps as
tuples of their fields, in the dataclass field order) written with `marshal`, behind a
two-byte tag. This replaces pickle, which called a Python `__reduce__` for every
event kept: serialising the state was the worker's largest cost after Avro decoding.
marshal builds only plain values and never runs code; `decode_state` checks every value
against the type the state classes and the events declare before it builds anything, and
turns damaged bytes into `DamagedState` (a ValueError). The check is what makes both
builds agree: the compiled state classes (streams/native.py) check the types of what
they are given and the interpreted ones do not, so an unchecked value would fail one way
compiled, another way from the sources, or not at all.

Nothing here unpickles: a value on a changelog topic is data, and whoever can write to
that topic must not be able to run code in the worker (pickle calls what the bytes name).
"""

from __future__ import annotations

import marshal
from collections.abc import Callable
from typing import Any, cast

from streams.engine.state import AccountState, SubjectState, TriggerRecord
from streams.model.event_values import only, values_check
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

__all__ = ["DamagedState", "decode_state", "encode_state"]

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


class DamagedState(ValueError):
    """A table or changelog value that is not a state this module wrote.

    Its message is `damaged state value (<where>)`, `<where>` a fixed description of the
    part that does not fit (never a value from the bytes): the same in both builds.
    """

    def __init__(self, where: str) -> None:
        super().__init__(f"damaged state value ({where})")
        self.where = where


def encode_state(state: SubjectState | AccountState) -> bytes:
    if type(state) is SubjectState:
        return _SUBJECT + marshal.dumps(_subject_values(state), _MARSHAL_VERSION)
    if type(state) is AccountState:
        return _ACCOUNT + marshal.dumps(_account_values(state), _MARSHAL_VERSION)
    raise TypeError(f"not a state object: {type(state).__name__}")


def decode_state(raw: bytes) -> SubjectState | AccountState:
    """The state object of `raw`; DamagedState (a ValueError) when it is not one."""
    tag = raw[:2]
    if tag not in (_SUBJECT, _ACCOUNT):
        raise DamagedState("not a state value")
    try:
        values = marshal.loads(memoryview(raw)[2:])
    except (EOFError, ValueError, TypeError):
        raise DamagedState("unreadable") from None
    if tag == _SUBJECT:
        return _subject_from(values)
    return _account_from(values)


# -- what a value must be (checked before anything is built) --------------------------------
# The checks compare exact types (`set(map(type, ...))`): one C loop per container, where
# a Python call per item would more than double the time of a decode.

_NONE = type(None)
_TEXT: frozenset[type] = frozenset({str})
_INT: frozenset[type] = frozenset({int})
_OPTIONAL_TEXT: frozenset[type] = frozenset({str, _NONE})


def _require(ok: bool, where: str) -> None:
    if not ok:
        raise DamagedState(where)


def _record(values: object, count: int, where: str) -> tuple[Any, ...]:
    if type(values) is not tuple or len(values) != count:
        raise DamagedState(where)
    return values


def _is_events_map(value: object, key: Callable[[object], bool],
                   event: Callable[[object], bool]) -> bool:
    """A dict of key -> list of an event's values."""
    return (type(value) is dict and all(map(key, value))
            and only(value.values(), frozenset({list}))
            and all(all(map(event, events)) for events in value.values()))


def _is_text_map(value: object, items: frozenset[type]) -> bool:
    return type(value) is dict and only(value, _TEXT) and only(value.values(), items)


def _is_text(value: object) -> bool:  # meeting_id, provider
    return type(value) is str


def _is_pair(value: object) -> bool:  # (data_use, provider), (provider, meeting_id)
    return (type(value) is tuple and len(value) == 2 and type(value[0]) is str
            and type(value[1]) in _OPTIONAL_TEXT)


def _is_notice_key(value: object) -> bool:  # (notice_kind, provider, meeting_id)
    return (type(value) is tuple and len(value) == 3 and type(value[0]) is str
            and only(value[1:], _OPTIONAL_TEXT))


def _is_times(value: object) -> bool:
    return type(value) is list and only(value, _INT)


_is_consent, _is_join, _is_match, _is_toggle = (values_check(cls) for cls in (
    ConsentChanged, ParticipantJoined, EnrichmentMatched, FeatureToggled))
_IS_TRIGGER = (values_check(EnrichmentRequested), values_check(ProfileViewed))  # by kind


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
    written = (kind, values(record.event), record.pending, record.outcomes, record.decided_at,
               record.received_at)
    # `amended` only where a late event changed something: the other triggers stay in the
    # six fields a release before it reads (one rolled back to).
    return (*written, record.amended) if record.amended else written


def _subject_from(values: object) -> SubjectState:
    pruned_at, seen, consents, notices, joins, matches, triggers = _record(values, 7, "subject")
    _require(type(pruned_at) is int, "subject pruned_at")
    _require(_is_text_map(seen, _INT), "subject seen")
    _require(_is_events_map(consents, _is_pair, _is_consent), "subject consents")
    _require(type(notices) is dict and all(map(_is_notice_key, notices))
             and all(map(_is_times, notices.values())), "subject notices")
    _require(_is_events_map(joins, _is_text, _is_join), "subject joins")
    _require(_is_events_map(matches, _is_text, _is_match), "subject matches")
    _require(_is_text_map(triggers, frozenset({tuple})), "subject triggers")
    state = SubjectState()
    state.pruned_at = pruned_at
    state.seen = seen
    state.consents = {key: [_make_consent(*e) for e in events] for key, events in consents.items()}
    state.notices = notices
    state.joins = {key: [_make_join(*e) for e in events] for key, events in joins.items()}
    state.matches = {key: [_make_match(*e) for e in events] for key, events in matches.items()}
    state.triggers = {event_id: _trigger_from(record) for event_id, record in triggers.items()}
    return state


def _trigger_from(values: object) -> TriggerRecord:
    if type(values) is tuple and len(values) == 6:  # written before `amended` existed
        values = (*values, {})
    kind, event, pending, outcomes, decided_at, received_at, amended = _record(
        values, 7, "trigger")
    _require(type(kind) is int and kind in (0, 1), "trigger kind")
    _require(_IS_TRIGGER[kind](event), "trigger event")
    _require(type(pending) is int and type(decided_at) is int
             and type(received_at) in (int, _NONE), "trigger times")
    _require(_is_text_map(outcomes, frozenset({tuple, _NONE}))
             and all(only(evidence, _TEXT) for evidence in outcomes.values() if evidence),
             "trigger outcomes")
    _require(_is_text_map(amended, frozenset({tuple, _NONE}))
             and all(only(evidence, _TEXT) for evidence in amended.values() if evidence),
             "trigger amended")
    record = TriggerRecord(_MAKE_TRIGGER[kind](*event), pending, received_at)
    record.outcomes = outcomes
    record.amended = amended
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


def _account_from(values: object) -> AccountState:
    pruned_at, seen, toggles, automatic = _record(values, 4, "account")
    _require(type(pruned_at) is int, "account pruned_at")
    _require(_is_text_map(seen, _INT), "account seen")
    _require(_is_events_map(toggles, _is_pair, _is_toggle), "account toggles")
    _require(_is_text_map(automatic, _INT), "account automatic")
    state = AccountState()
    state.pruned_at = pruned_at
    state.seen = seen
    state.toggles = {key: [_make_toggle(*e) for e in events] for key, events in toggles.items()}
    state.automatic = automatic
    return state
