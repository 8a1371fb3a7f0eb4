"""`disclosure-without-consent`: a profile view is a disclosure of its own, so it needs
consent in force at its own time for `third_party_sharing.enrichment`, covering every
category it shows (spec, rule table and the paragraph under it)."""

from __future__ import annotations

from typing import Final

from streams.engine.params import EngineParams
from streams.engine.rules.base import FindingAlert, Rule, Verdict
from streams.engine.rules.lookups import deciding_consent, view_context
from streams.engine.state import STAGE_PAST, AccountState, SubjectState
from streams.engine.taxonomy import uncovered
from streams.model.events import ConsentChanged, Event, ProfileViewed
from streams.model.timestamps import format_ms

__all__ = ["DATA_USE", "ID", "RULE"]

ID: Final = "disclosure-without-consent"
# The data use a profile view discloses under (the spec's rule table).
DATA_USE: Final = "third_party_sharing.enrichment"


class DisclosureWithoutConsent(Rule[ProfileViewed]):
    def applies(self, trigger: ProfileViewed) -> bool:
        return trigger.viewer_id != trigger.subject_id

    def decide(self, trigger: ProfileViewed, state: SubjectState,
               account: AccountState | None, params: EngineParams) -> Verdict:
        t = trigger.occurred_at
        consent = deciding_consent(state, DATA_USE, trigger.provider, t,
                                   trigger.data_disclosed)
        if consent is None:
            context = view_context(trigger)
            context["consent_state"] = "no consent was ever recorded"
            return (trigger.event_id,), context
        if consent.status == "WITHDRAWN":
            state_now = f"consent was withdrawn at {format_ms(consent.occurred_at)}"
        elif consent.expires_at is not None and consent.expires_at <= t:
            state_now = f"the grant expired at {format_ms(consent.expires_at)}"
        else:
            outside = uncovered(consent.data_categories, trigger.data_disclosed)
            if not outside:
                return None
            state_now = f"the consent in force does not cover {', '.join(outside)}"
        context = view_context(trigger)
        context["consent_state"] = state_now
        return (trigger.event_id, consent.event_id), context

    def affected_by(self, trigger: ProfileViewed, late: Event) -> bool:
        return isinstance(late, ConsentChanged) and late.occurred_at <= trigger.occurred_at


RULE: Final = DisclosureWithoutConsent(ID, STAGE_PAST, ProfileViewed, alert=FindingAlert(
    name="ConsentwatchDisclosureWithoutConsentRateHigh",
    why=("Each view without consent is worked by the compliance team in the review desk. "
         "More than 10 in 15 minutes (all providers together) points to a systemic cause "
         "-- profile views no longer check consent, withdrawals are not reaching the "
         "platform -- where every further minute shows more people's profiles to others "
         "without a legal basis."),
    summary="Profile disclosures without consent above 10 findings in 15 minutes",
    description=("{{ $value | humanize }} disclosure-without-consent findings in the last 15 "
                 "minutes (threshold 10): matched profiles are being shown to other users "
                 "without consent in force for the categories shown, at a rate that points "
                 "to a systemic cause."),
    threshold=10, window="15m", by_provider=False))
