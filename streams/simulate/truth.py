"""The ground truth of a simulated story: the findings the spec says must follow.

Written from the rule catalogue of the spec (../shared/spec/events.md, "Rules"),
over the facts one story unit created, and on purpose independent of
`streams.engine`: the engine is what the truth is checked against, so the truth
must not come from it. A story touches fresh subjects and a fresh meeting, so the
facts of one story are all that can decide its triggers; the only shared facts
are the account-wide feature toggles, which the generator fixes at the start.

Whether a join is under a pseudonym is decided by the generator (see
`people.py`), not computed here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.model.events import (
    ConsentChanged,
    EnrichmentMatched,
    EnrichmentRequested,
    FeatureToggled,
    NoticeDelivered,
    ParticipantJoined,
    ProfileViewed,
)

__all__ = ["ORACLES", "Expected", "Story", "TruthParams", "expected_findings"]

# The spec's rule ids, written here rather than taken from the engine: the truth must
# not inherit a mistake of the code it checks.
WITHOUT_CONSENT = "enrichment-without-consent"
EXCEEDS_CONSENT = "enrichment-exceeds-consent"
WITHOUT_NOTICE = "enrichment-without-notice"
COVERT_VIEW = "covert-profile-view"
PSEUDONYM = "pseudonym-deanonymized"
FEATURE_INACTIVE = "automatic-egress-feature-inactive"
DISCLOSURE_WITHOUT_CONSENT = "disclosure-without-consent"


@dataclass(frozen=True, slots=True)
class TruthParams:
    """The spec's parameters the truth depends on (defaults as in the spec)."""

    notice_grace_ms: int = 300_000
    notice_validity_ms: int = 365 * 86_400_000


@dataclass(frozen=True, slots=True)
class Expected:
    """One finding the spec requires: the ground-truth line."""

    rule: str
    subject_id: str
    trigger_event_id: str
    evidence_event_ids: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "subject_id": self.subject_id,
                "trigger_event_id": self.trigger_event_id,
                "evidence_event_ids": list(self.evidence_event_ids)}


@dataclass(slots=True)
class Story:
    """What happened to one subject in one story unit."""

    subject_id: str
    consents: list[ConsentChanged] = field(default_factory=list)
    notices: list[NoticeDelivered] = field(default_factory=list)
    # Each join with the generator's decision: is its display name a pseudonym?
    joins: list[tuple[ParticipantJoined, bool]] = field(default_factory=list)
    matches: list[EnrichmentMatched] = field(default_factory=list)
    triggers: list[EnrichmentRequested | ProfileViewed] = field(default_factory=list)


def _covers(general: str, specific: str) -> bool:
    """Spec: a key covers another when equal to it or a dot-separated prefix of it."""
    return specific == general or specific.startswith(general + ".")


def _consent(story: Story, use: str, provider: str, t: int, categories: Sequence[str]
             ) -> ConsentChanged | None:
    """The latest ConsentChanged at t whose data use covers `use`, for `provider` or any;
    at equal times the more restrictive wins: a withdrawal, then a grant not in force at
    t, then the grant that leaves more of `categories` (what the trigger sent or showed)
    outside its scope."""
    candidates = [c for c in story.consents
                  if c.occurred_at <= t and _covers(c.data_use, use)
                  and c.provider in (None, provider)]
    if not candidates:
        return None

    def restriction(c: ConsentChanged) -> tuple[int, bool, bool, int, str]:
        withdrawn = c.status == "WITHDRAWN"
        lapsed = not withdrawn and not _in_force(c, t)
        left_out = 0 if withdrawn or lapsed else _left_out(c.data_categories, categories)
        # Two events alike in all of that: the engine's order ends with the event id.
        return (c.occurred_at, withdrawn, lapsed, left_out, c.event_id)

    return max(candidates, key=restriction)


def _toggle(toggles: Iterable[FeatureToggled], account: str, meeting: str, provider: str,
            t: int) -> FeatureToggled | None:
    """The latest FeatureToggled of the account and provider at t, for the meeting or
    account-wide; at equal times `enabled = false` wins."""
    candidates = [g for g in toggles
                  if g.account_id == account and g.provider == provider
                  and g.meeting_id in (None, meeting) and g.occurred_at <= t]
    if not candidates:
        return None
    return max(candidates, key=lambda g: (g.occurred_at, not g.enabled, g.event_id))


def _notice_given(story: Story, kind: str, provider: str, meeting: str, t: int,
                  params: TruthParams) -> bool:
    return any(n.notice_kind == kind and n.provider in (None, provider)
               and n.meeting_id in (None, meeting)
               and t - params.notice_validity_ms <= n.occurred_at <= t + params.notice_grace_ms
               for n in story.notices)


def _latest(items: Sequence[Any], t: int) -> Any:
    before = [item for item in items if item.occurred_at <= t]
    return max(before, key=lambda item: (item.occurred_at, item.event_id)) if before else None


# One oracle per rule, written from the spec's rule table: the trigger type it judges, and
# a function giving the finding's evidence ids, or None when the rule does not fire.
Oracle = Callable[[Any, Story, Sequence[FeatureToggled], TruthParams], tuple[str, ...] | None]


def _in_force(consent: ConsentChanged | None, t: int) -> bool:
    return (consent is not None and consent.status == "GRANTED"
            and (consent.expires_at is None or consent.expires_at > t))


def _outside(scope: Sequence[str], categories: Sequence[str]) -> bool:
    return _left_out(scope, categories) > 0


def _left_out(scope: Sequence[str], categories: Sequence[str]) -> int:
    return sum(1 for c in categories if not any(_covers(key, c) for key in scope))


def _without_consent(r: EnrichmentRequested, story: Story, toggles: Sequence[FeatureToggled],
                     params: TruthParams) -> tuple[str, ...] | None:
    consent = _consent(story, r.data_use, r.provider, r.occurred_at, r.data_sent)
    if _in_force(consent, r.occurred_at):
        return None
    return (r.event_id,) if consent is None else (r.event_id, consent.event_id)


def _exceeds_consent(r: EnrichmentRequested, story: Story, toggles: Sequence[FeatureToggled],
                     params: TruthParams) -> tuple[str, ...] | None:
    consent = _consent(story, r.data_use, r.provider, r.occurred_at, r.data_sent)
    if consent is None or not _in_force(consent, r.occurred_at):
        return None
    return (r.event_id, consent.event_id) if _outside(consent.data_categories,
                                                       r.data_sent) else None


def _without_notice(r: EnrichmentRequested, story: Story, toggles: Sequence[FeatureToggled],
                    params: TruthParams) -> tuple[str, ...] | None:
    if _notice_given(story, "ENRICHMENT", r.provider, r.meeting_id, r.occurred_at, params):
        return None
    return (r.event_id,)


def _feature_inactive(r: EnrichmentRequested, story: Story, toggles: Sequence[FeatureToggled],
                      params: TruthParams) -> tuple[str, ...] | None:
    if r.trigger != "AUTOMATIC":
        return None
    toggle = _toggle(toggles, r.account_id, r.meeting_id, r.provider, r.occurred_at)
    if toggle is not None and toggle.enabled:
        return None
    return (r.event_id,) if toggle is None else (r.event_id, toggle.event_id)


def _covert_view(v: ProfileViewed, story: Story, toggles: Sequence[FeatureToggled],
                 params: TruthParams) -> tuple[str, ...] | None:
    if v.viewer_id == v.subject_id or _notice_given(story, "PROFILE_VIEW", v.provider,
                                                    v.meeting_id, v.occurred_at, params):
        return None
    return (v.event_id,)


def _disclosure_without_consent(v: ProfileViewed, story: Story,
                                toggles: Sequence[FeatureToggled],
                                params: TruthParams) -> tuple[str, ...] | None:
    if v.viewer_id == v.subject_id:
        return None
    consent = _consent(story, "third_party_sharing.enrichment", v.provider, v.occurred_at,
                       v.data_disclosed)
    if consent is None:
        return (v.event_id,)
    if (not _in_force(consent, v.occurred_at)
            or _outside(consent.data_categories, v.data_disclosed)):
        return (v.event_id, consent.event_id)
    return None


def _pseudonym(v: ProfileViewed, story: Story, toggles: Sequence[FeatureToggled],
               params: TruthParams) -> tuple[str, ...] | None:
    if v.viewer_id == v.subject_id or not any(_covers("user.name", c)
                                              for c in v.data_disclosed):
        return None
    joins = [(j, pseudonym) for j, pseudonym in story.joins
             if j.meeting_id == v.meeting_id and j.occurred_at <= v.occurred_at]
    named = [m for m in story.matches
             if m.provider == v.provider and m.matched and m.profile_name is not None]
    match = _latest(named, v.occurred_at)
    if not joins or match is None:
        return None
    join, pseudonym = max(joins, key=lambda item: (item[0].occurred_at, item[0].event_id))
    return (join.event_id, match.event_id, v.event_id) if pseudonym else None


# Keyed by rule id; tests/simulate/test_simulate.py checks it covers the engine's registry.
ORACLES: dict[str, tuple[type, Oracle]] = {
    WITHOUT_CONSENT: (EnrichmentRequested, _without_consent),
    EXCEEDS_CONSENT: (EnrichmentRequested, _exceeds_consent),
    WITHOUT_NOTICE: (EnrichmentRequested, _without_notice),
    FEATURE_INACTIVE: (EnrichmentRequested, _feature_inactive),
    COVERT_VIEW: (ProfileViewed, _covert_view),
    DISCLOSURE_WITHOUT_CONSENT: (ProfileViewed, _disclosure_without_consent),
    PSEUDONYM: (ProfileViewed, _pseudonym),
}


def expected_findings(story: Story, toggles: Sequence[FeatureToggled],
                      params: TruthParams) -> list[Expected]:
    """Every finding the spec requires for the story's triggers, in trigger order."""
    out: list[Expected] = []
    for trigger in story.triggers:
        for rule_id, (kind, oracle) in ORACLES.items():
            if type(trigger) is kind:
                evidence = oracle(trigger, story, toggles, params)
                if evidence is not None:
                    out.append(Expected(rule_id, trigger.subject_id, trigger.event_id, evidence))
    return out
