"""The event contract of the spec, the findings it leads to, and the helpers both use."""

from streams.model.events import (
    EVENT_TYPES,
    TRIGGER_TYPES,
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
    "EVENT_TYPES",
    "TRIGGER_TYPES",
    "Amendment",
    "ConsentChanged",
    "DeadLetter",
    "EnrichmentMatched",
    "EnrichmentRequested",
    "Event",
    "FeatureToggled",
    "Finding",
    "NoticeDelivered",
    "ParticipantJoined",
    "ProfileViewed",
]
