"""Each rule of the catalogue as a pure function of a trigger and the state at its time.

A stage evaluator returns, for every rule that applies to the trigger, either
`None` (it does not fire) or `(evidence event ids, explanation context)`.
These are the only implementations of the rules.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Final

from streams.engine.names import is_pseudonym
from streams.engine.params import EngineParams
from streams.engine.state import AccountState, SubjectState
from streams.engine.taxonomy import covers, uncovered
from streams.model.events import (
    ConsentChanged,
    EnrichmentMatched,
    EnrichmentRequested,
    FeatureToggled,
    ParticipantJoined,
    ProfileViewed,
)
from streams.model.timestamps import format_ms

__all__ = [
    "COVERT_VIEW",
    "DISCLOSURE_WITHOUT_CONSENT",
    "EXCEEDS_CONSENT",
    "FEATURE_INACTIVE",
    "PSEUDONYM",
    "RULE_STAGE",
    "WITHOUT_CONSENT",
    "WITHOUT_NOTICE",
    "Verdict",
    "deciding_consent",
    "deciding_toggle",
    "notice_given",
    "request_notice",
    "request_past",
    "view_notice",
    "view_past",
]

WITHOUT_CONSENT: Final = "enrichment-without-consent"
EXCEEDS_CONSENT: Final = "enrichment-exceeds-consent"
WITHOUT_NOTICE: Final = "enrichment-without-notice"
COVERT_VIEW: Final = "covert-profile-view"
PSEUDONYM: Final = "pseudonym-deanonymized"
FEATURE_INACTIVE: Final = "automatic-egress-feature-inactive"
DISCLOSURE_WITHOUT_CONSENT: Final = "disclosure-without-consent"
# The data use a profile view discloses under (the spec's rule table).
DISCLOSURE_USE: Final = "third_party_sharing.enrichment"

RULE_STAGE = {
    WITHOUT_CONSENT: 1,
    EXCEEDS_CONSENT: 1,
    FEATURE_INACTIVE: 1,
    PSEUDONYM: 1,
    DISCLOSURE_WITHOUT_CONSENT: 1,
    WITHOUT_NOTICE: 2,
    COVERT_VIEW: 2,
}

Verdict = tuple[tuple[str, ...], dict[str, Any]] | None


def deciding_consent(
    state: SubjectState, data_use: str, provider: str, at: int
) -> ConsentChanged | None:
    """The latest ConsentChanged at `at` whose data use covers `data_use`, for `provider` or any."""
    best: ConsentChanged | None = None
    best_key: tuple[int, bool, str] | None = None
    for (use, for_provider), events in state.consents.items():
        if (for_provider is not None and for_provider != provider) or not covers(use, data_use):
            continue
        for event in reversed(events):
            if event.occurred_at <= at:
                key = (event.occurred_at, event.status == "WITHDRAWN", event.event_id)
                if best_key is None or key > best_key:
                    best, best_key = event, key
                break
    return best


def deciding_toggle(
    account: AccountState | None, provider: str, meeting: str, at: int
) -> FeatureToggled | None:
    """The latest FeatureToggled of the account and provider at `at`, for the meeting or all."""
    if account is None:
        return None
    best: FeatureToggled | None = None
    best_key: tuple[int, bool, str] | None = None
    for key in ((provider, meeting), (provider, None)):
        for event in reversed(account.toggles.get(key, ())):
            if event.occurred_at <= at:
                order = (event.occurred_at, not event.enabled, event.event_id)
                if best_key is None or order > best_key:
                    best, best_key = event, order
                break
    return best


def notice_given(
    state: SubjectState, kind: str, provider: str, meeting: str, at: int, params: EngineParams
) -> bool:
    notices = state.notices
    if not notices:
        return False
    low, high = at - params.notice_validity_ms, at + params.notice_grace_ms
    for key in ((kind, provider, meeting), (kind, provider, None), (kind, None, meeting),
                (kind, None, None)):
        times = notices.get(key)
        if times:
            index = bisect_left(times, low)
            if index < len(times) and times[index] <= high:
                return True
    return False


def _latest_before(events: list[Any] | None, at: int) -> Any:
    if events:
        # An index loop: mypyc (streams.native) fails on reversed() over a list[Any].
        index = len(events) - 1
        while index >= 0:
            event = events[index]
            if event.occurred_at <= at:
                return event
            index -= 1
    return None


def _request_context(r: EnrichmentRequested) -> dict[str, Any]:
    return {
        "provider": r.provider,
        "data_use": r.data_use,
        "data_sent": ", ".join(r.data_sent) or "no categories",
        "occurred_at": format_ms(r.occurred_at),
        "meeting_id": r.meeting_id,
    }


def request_past(
    r: EnrichmentRequested, state: SubjectState, account: AccountState | None
) -> dict[str, Verdict]:
    """Consent, scope and feature rules for an EnrichmentRequested, at its time."""
    t = r.occurred_at
    verdicts: dict[str, Verdict] = {}
    context: dict[str, Any] = {}  # one explanation context, filled only if a rule fires
    consent = deciding_consent(state, r.data_use, r.provider, t)
    in_force = (
        consent is not None
        and consent.status == "GRANTED"
        and (consent.expires_at is None or consent.expires_at > t)
    )
    if in_force:
        assert consent is not None
        verdicts[WITHOUT_CONSENT] = None
        outside = uncovered(consent.data_categories, r.data_sent)
        if outside:
            context = _request_context(r)
            context["outside"] = ", ".join(outside)
            verdicts[EXCEEDS_CONSENT] = ((r.event_id, consent.event_id), context)
        else:
            verdicts[EXCEEDS_CONSENT] = None
    else:
        context = _request_context(r)
        if consent is None:
            context["consent_state"] = "none was ever recorded"
            evidence: tuple[str, ...] = (r.event_id,)
        else:
            if consent.status == "WITHDRAWN":
                context["consent_state"] = f"withdrawn at {format_ms(consent.occurred_at)}"
            else:
                assert consent.expires_at is not None
                context["consent_state"] = f"the grant expired at {format_ms(consent.expires_at)}"
            evidence = (r.event_id, consent.event_id)
        verdicts[WITHOUT_CONSENT] = (evidence, context)
        verdicts[EXCEEDS_CONSENT] = None
    if r.trigger == "AUTOMATIC":
        toggle = deciding_toggle(account, r.provider, r.meeting_id, t)
        if toggle is not None and toggle.enabled:
            verdicts[FEATURE_INACTIVE] = None
        else:
            context = context or _request_context(r)
            if toggle is None:
                context["feature_state"] = "it was never turned on"
                verdicts[FEATURE_INACTIVE] = ((r.event_id,), context)
            else:
                scope = "meeting" if toggle.meeting_id is not None else "account"
                context["feature_state"] = (
                    f"turned off for the {scope} at {format_ms(toggle.occurred_at)}"
                )
                verdicts[FEATURE_INACTIVE] = ((r.event_id, toggle.event_id), context)
    return verdicts


def request_notice(
    r: EnrichmentRequested, state: SubjectState, params: EngineParams
) -> dict[str, Verdict]:
    if notice_given(state, "ENRICHMENT", r.provider, r.meeting_id, r.occurred_at, params):
        return {WITHOUT_NOTICE: None}
    return {WITHOUT_NOTICE: ((r.event_id,), _request_context(r))}


def _discloses_name(v: ProfileViewed) -> bool:
    """Some disclosed category is one that `user.name` covers (the spec's wording)."""
    for c in v.data_disclosed:  # noqa: SIM110 (a loop is cheaper than any() of a generator)
        if c == "user.name" or c.startswith("user.name."):
            return True
    return False


def _view_context(v: ProfileViewed) -> dict[str, Any]:
    return {
        "provider": v.provider,
        "data_disclosed": ", ".join(v.data_disclosed) or "no categories",
        "occurred_at": format_ms(v.occurred_at),
        "meeting_id": v.meeting_id,
    }


def view_past(v: ProfileViewed, state: SubjectState) -> dict[str, Verdict]:
    if v.viewer_id == v.subject_id:
        return {}
    verdicts: dict[str, Verdict] = {DISCLOSURE_WITHOUT_CONSENT: _view_consent(v, state)}
    if _discloses_name(v):
        verdicts[PSEUDONYM] = _view_pseudonym(v, state)
    return verdicts


def _view_consent(v: ProfileViewed, state: SubjectState) -> Verdict:
    """`disclosure-without-consent`: the view is a disclosure of its own, so it needs
    consent in force at its own time, covering every category it shows."""
    t = v.occurred_at
    consent = deciding_consent(state, DISCLOSURE_USE, v.provider, t)
    if consent is None:
        context = _view_context(v)
        context["consent_state"] = "no consent was ever recorded"
        return (v.event_id,), context
    if consent.status == "WITHDRAWN":
        context = _view_context(v)
        context["consent_state"] = f"consent was withdrawn at {format_ms(consent.occurred_at)}"
        return (v.event_id, consent.event_id), context
    if consent.expires_at is not None and consent.expires_at <= t:
        context = _view_context(v)
        context["consent_state"] = f"the grant expired at {format_ms(consent.expires_at)}"
        return (v.event_id, consent.event_id), context
    outside = uncovered(consent.data_categories, v.data_disclosed)
    if not outside:
        return None
    context = _view_context(v)
    context["consent_state"] = f"the consent in force does not cover {', '.join(outside)}"
    return (v.event_id, consent.event_id), context


def _view_pseudonym(v: ProfileViewed, state: SubjectState) -> Verdict:
    t = v.occurred_at
    join: ParticipantJoined | None = _latest_before(state.joins.get(v.meeting_id), t)
    match: EnrichmentMatched | None = _latest_before(state.matches.get(v.provider), t)
    if join is None or match is None or match.profile_name is None:
        return None
    if not is_pseudonym(join.display_name, match.profile_name):
        return None
    return (join.event_id, match.event_id, v.event_id), _view_context(v)


def view_notice(v: ProfileViewed, state: SubjectState, params: EngineParams) -> dict[str, Verdict]:
    if v.viewer_id == v.subject_id:
        return {}
    if notice_given(state, "PROFILE_VIEW", v.provider, v.meeting_id, v.occurred_at, params):
        return {COVERT_VIEW: None}
    return {COVERT_VIEW: ((v.event_id,), _view_context(v))}
