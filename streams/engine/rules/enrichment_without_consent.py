"""`enrichment-without-consent`: personal data sent to a provider with no consent in
force for the subject, data use and provider at the request's time."""

from __future__ import annotations

from typing import Final

from streams.engine.params import EngineParams
from streams.engine.rules.base import FindingAlert, Rule, Verdict
from streams.engine.rules.lookups import (
    consent_in_force,
    consent_state,
    deciding_consent,
    request_context,
)
from streams.engine.state import STAGE_PAST, AccountState, SubjectState
from streams.model.events import ConsentChanged, EnrichmentRequested, Event

__all__ = ["ID", "RULE"]

ID: Final = "enrichment-without-consent"


class EnrichmentWithoutConsent(Rule[EnrichmentRequested]):
    def decide(self, trigger: EnrichmentRequested, state: SubjectState,
               account: AccountState | None, params: EngineParams) -> Verdict:
        t = trigger.occurred_at
        consent = deciding_consent(state, trigger.data_use, trigger.provider, t,
                                   trigger.data_sent)
        if consent is not None and consent_in_force(consent, t):
            return None
        context = request_context(trigger)
        if consent is None:
            context["consent_state"] = "none was ever recorded"
            return (trigger.event_id,), context
        context["consent_state"] = consent_state(consent)
        return (trigger.event_id, consent.event_id), context

    def affected_by(self, trigger: EnrichmentRequested, late: Event) -> bool:
        return isinstance(late, ConsentChanged) and late.occurred_at <= trigger.occurred_at


RULE: Final = EnrichmentWithoutConsent(ID, STAGE_PAST, EnrichmentRequested, alert=FindingAlert(
    name="ConsentwatchEnrichmentWithoutConsentRateHigh",
    why=("Single findings are worked by the compliance team from the findings topic and "
         "the evidence ledger, not by paging. More than 10 in 15 minutes (all providers "
         "together) is a systemic cause -- the consent service or its events are missing, "
         "a release dropped the consent check, an integration enriches everyone -- where "
         "each further minute adds people whose data left without consent."),
    summary="Enrichment without consent above 10 findings in 15 minutes",
    description=("{{ $value | humanize }} enrichment-without-consent findings in the last 15 "
                 "minutes (threshold 10): personal data is being sent to enrichment providers "
                 "without a valid consent at a rate that points to a systemic cause."),
    threshold=10, window="15m", by_provider=False))
