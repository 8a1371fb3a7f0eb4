"""The seven events of the contract (spec: "Events"), as immutable records.

Timestamps are epoch milliseconds (UTC). Optional fields are `None` when absent.
Category lists are tuples so an event stays hashable and immutable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "EVENT_TYPES",
    "TRIGGER_TYPES",
    "ConsentChanged",
    "EnrichmentMatched",
    "EnrichmentRequested",
    "Event",
    "FeatureToggled",
    "NoticeDelivered",
    "ParticipantJoined",
    "ProfileViewed",
]


@dataclass(frozen=True, slots=True)
class ParticipantJoined:
    TYPE: ClassVar[str] = "ParticipantJoined"
    event_id: str
    occurred_at: int
    account_id: str
    meeting_id: str
    subject_id: str
    display_name: str
    email: str | None
    is_guest: bool


@dataclass(frozen=True, slots=True)
class EnrichmentRequested:
    TYPE: ClassVar[str] = "EnrichmentRequested"
    event_id: str
    occurred_at: int
    account_id: str
    meeting_id: str
    subject_id: str
    provider: str
    data_use: str
    data_sent: tuple[str, ...]
    trigger: str  # "USER_ACTION" | "AUTOMATIC"
    requested_by: str | None


@dataclass(frozen=True, slots=True)
class EnrichmentMatched:
    TYPE: ClassVar[str] = "EnrichmentMatched"
    event_id: str
    occurred_at: int
    account_id: str
    meeting_id: str
    subject_id: str
    provider: str
    request_event_id: str
    matched: bool
    profile_name: str | None
    data_returned: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ProfileViewed:
    TYPE: ClassVar[str] = "ProfileViewed"
    event_id: str
    occurred_at: int
    account_id: str
    meeting_id: str
    subject_id: str
    viewer_id: str
    provider: str
    data_disclosed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ConsentChanged:
    TYPE: ClassVar[str] = "ConsentChanged"
    event_id: str
    occurred_at: int
    subject_id: str
    consent_record_id: str
    data_use: str
    provider: str | None
    status: str  # "GRANTED" | "WITHDRAWN"
    data_categories: tuple[str, ...]
    expires_at: int | None
    notice_version: str | None
    jurisdiction: str | None


@dataclass(frozen=True, slots=True)
class NoticeDelivered:
    TYPE: ClassVar[str] = "NoticeDelivered"
    event_id: str
    occurred_at: int
    account_id: str
    subject_id: str
    meeting_id: str | None
    notice_kind: str  # "ENRICHMENT" | "PROFILE_VIEW"
    provider: str | None
    channel: str
    notice_version: str


@dataclass(frozen=True, slots=True)
class FeatureToggled:
    TYPE: ClassVar[str] = "FeatureToggled"
    event_id: str
    occurred_at: int
    account_id: str
    meeting_id: str | None
    provider: str
    enabled: bool
    actor_id: str


Event = (
    ParticipantJoined
    | EnrichmentRequested
    | EnrichmentMatched
    | ProfileViewed
    | ConsentChanged
    | NoticeDelivered
    | FeatureToggled
)

EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        ParticipantJoined,
        EnrichmentRequested,
        EnrichmentMatched,
        ProfileViewed,
        ConsentChanged,
        NoticeDelivered,
        FeatureToggled,
    )
}

# The events on which a rule fires (spec: "Rules", column "trigger").
TRIGGER_TYPES: frozenset[str] = frozenset({EnrichmentRequested.TYPE, ProfileViewed.TYPE})
