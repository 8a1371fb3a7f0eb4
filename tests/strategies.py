"""Hypothesis strategies for the contract's records: valid events, findings, dead letters.

Reusable from any test:

    from tests.strategies import event_of, events
    @given(events())                    # any of the seven events
    @given(event_of(ConsentChanged))    # one type

Every event drawn here passes `streams.model.validate.event_from_record`.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any, TypeVar

from hypothesis import strategies as st

from streams.model.events import (
    EVENT_TYPES,
    ConsentChanged,
    EnrichmentMatched,
    EnrichmentRequested,
    Event,
    FeatureToggled,
    NoticeDelivered,
    ParticipantJoined,
    ProfileViewed,
)
from streams.model.findings import Amendment, DeadLetter, Finding

__all__ = [
    "EVENT_CLASSES",
    "amendments",
    "category_lists",
    "dead_letters",
    "event_of",
    "events",
    "findings",
    "ids",
    "providers",
    "taxonomy_keys",
    "texts",
    "timestamps_ms",
]

T = TypeVar("T")

EVENT_CLASSES: tuple[type[Event], ...] = tuple(EVENT_TYPES.values())

# 1970-01-01 .. 2100-01-01: a sane range of event times, epoch ms.
timestamps_ms = st.integers(min_value=0, max_value=4_102_444_800_000)

# Any Unicode text (hypothesis leaves out surrogates, so it is valid UTF-8).
texts = st.text(max_size=40)

# Event ids, subject ids, ...: any non-empty string.
ids = st.one_of(
    st.from_regex(r"[a-z]{1,3}-[0-9a-f]{1,8}", fullmatch=True),
    st.text(min_size=1, max_size=24),
)

_NO_SPACE = re.compile(r"\S+")
_visible = st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"))

# Provider keys: non-empty, no whitespace.
providers = st.one_of(
    st.sampled_from(["linkedin_sales_navigator", "zoominfo", "clearbit", "apollo.io"]),
    st.text(_visible, min_size=1, max_size=20).filter(lambda s: bool(_NO_SPACE.fullmatch(s))),
)

_segment = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="."),
    min_size=1,
    max_size=10,
).filter(lambda s: bool(_NO_SPACE.fullmatch(s)))

# Dotted taxonomy keys such as user.contact.email: non-empty segments, no whitespace.
taxonomy_keys = st.one_of(
    st.sampled_from(
        [
            "user",
            "user.name",
            "user.contact",
            "user.contact.email",
            "user.job_title",
            "user.workplace",
            "user.location.imprecise",
            "user.social",
            "third_party_sharing",
            "third_party_sharing.enrichment",
        ]
    ),
    st.lists(_segment, min_size=1, max_size=4).map(".".join),
)

category_lists = st.lists(taxonomy_keys, max_size=5).map(tuple)


def _optional(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.none() | strategy


# Per field name: the strategy of a valid value. Names are shared across events
# with the same meaning; an optional field gets `None | strategy` on top.
_FIELD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "event_id": ids,
    "occurred_at": timestamps_ms,
    "account_id": ids,
    "meeting_id": ids,
    "subject_id": ids,
    "display_name": texts,
    "email": texts,
    "is_guest": st.booleans(),
    "provider": providers,
    "data_use": taxonomy_keys,
    "data_sent": category_lists,
    "trigger": st.sampled_from(["USER_ACTION", "AUTOMATIC"]),
    "requested_by": ids,
    "request_event_id": ids,
    "matched": st.booleans(),
    "profile_name": texts,
    "data_returned": category_lists,
    "viewer_id": ids,
    "data_disclosed": category_lists,
    "consent_record_id": ids,
    "status": st.sampled_from(["GRANTED", "WITHDRAWN"]),
    "data_categories": category_lists,
    "expires_at": timestamps_ms,
    "notice_version": texts,
    "jurisdiction": texts,
    "notice_kind": st.sampled_from(["ENRICHMENT", "PROFILE_VIEW"]),
    "channel": st.sampled_from(["in_meeting", "email"]) | texts,
    "enabled": st.booleans(),
    "actor_id": ids,
}


def _builds(cls: type[T], per_field: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[T]:
    kwargs: dict[str, st.SearchStrategy[Any]] = {}
    for field in fields(cls):  # type: ignore[arg-type]
        try:
            strategy = per_field[field.name]
        except KeyError:
            raise AssertionError(
                f"tests/strategies.py has no strategy for {cls.__name__}.{field.name}"
            ) from None
        if str(field.type).endswith("| None"):
            strategy = _optional(strategy)
        kwargs[field.name] = strategy
    return st.builds(cls, **kwargs)


_EVENT_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    cls: _builds(cls, _FIELD_STRATEGIES) for cls in EVENT_CLASSES
}


def event_of(cls: type[T]) -> st.SearchStrategy[T]:
    """Valid events of one type, e.g. `event_of(ConsentChanged)`."""
    strategy: st.SearchStrategy[T] = _EVENT_STRATEGIES[cls]
    return strategy


def events() -> st.SearchStrategy[Event]:
    """A valid event of any of the seven types."""
    return st.one_of(
        event_of(ParticipantJoined),
        event_of(EnrichmentRequested),
        event_of(EnrichmentMatched),
        event_of(ProfileViewed),
        event_of(ConsentChanged),
        event_of(NoticeDelivered),
        event_of(FeatureToggled),
    )


_hex64 = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)
_rules = st.sampled_from(
    [
        "enrichment-without-consent",
        "enrichment-exceeds-consent",
        "enrichment-without-notice",
        "covert-profile-view",
        "pseudonym-deanonymized",
        "automatic-egress-feature-inactive",
    ]
)
_id_lists = st.lists(ids, max_size=4).map(tuple)
# Raw evidence events, as the engine emits them (serialisers pseudonymise them).
_evidence = st.deferred(lambda: st.lists(events(), max_size=3).map(tuple))


def findings() -> st.SearchStrategy[Finding]:
    return _builds(
        Finding,
        {
            "finding_id": _hex64,
            "rule": _rules,
            "severity": st.sampled_from(["CRITICAL", "HIGH", "MEDIUM", "LOW"]),
            "subject_id": ids,
            "account_id": ids,
            "meeting_id": ids,
            "provider": providers,
            "trigger_event_id": ids,
            "evidence_event_ids": _id_lists,
            "occurred_at": timestamps_ms,
            "detected_at": timestamps_ms,
            "explanation": texts,
            "evidence": _evidence,
        },
    )


def amendments() -> st.SearchStrategy[Amendment]:
    return _builds(
        Amendment,
        {
            "amendment_id": _hex64,
            "kind": st.sampled_from(["RETRACTED", "EVIDENCE_CHANGED", "WOULD_RAISE"]),
            "finding_id": _hex64,
            "rule": _rules,
            "subject_id": ids,
            "trigger_event_id": ids,
            "late_event_id": ids,
            "evidence_event_ids": _id_lists,
            "occurred_at": timestamps_ms,
            "detected_at": timestamps_ms,
            "explanation": texts,
            "evidence": _evidence,
            "late_event": events(),
        },
    )


def dead_letters() -> st.SearchStrategy[DeadLetter]:
    return _builds(
        DeadLetter,
        {
            "source": st.sampled_from(["events.avro", "consentwatch.events"]) | texts,
            "partition": st.integers(min_value=0, max_value=2**31 - 1),
            "position": st.integers(min_value=0, max_value=2**63 - 1),
            "reason_code": st.sampled_from(["invalid_field", "missing_field", "corrupt_container"]),
            "reason": texts,
            "payload": st.binary(max_size=64),
            "dead_lettered_at": timestamps_ms,
        },
    )
