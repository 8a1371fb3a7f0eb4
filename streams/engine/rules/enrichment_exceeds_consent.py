"""`enrichment-exceeds-consent`: consent is in force, but the request sent a category
that no category of the consent's scope covers."""

from __future__ import annotations

from typing import Final

from streams.engine.params import EngineParams
from streams.engine.rules.base import Rule, Verdict
from streams.engine.rules.lookups import consent_in_force, deciding_consent, request_context
from streams.engine.state import STAGE_PAST, AccountState, SubjectState
from streams.engine.taxonomy import uncovered
from streams.model.events import ConsentChanged, EnrichmentRequested, Event

__all__ = ["ID", "RULE"]

ID: Final = "enrichment-exceeds-consent"


class EnrichmentExceedsConsent(Rule[EnrichmentRequested]):
    def decide(self, trigger: EnrichmentRequested, state: SubjectState,
               account: AccountState | None, params: EngineParams) -> Verdict:
        t = trigger.occurred_at
        consent = deciding_consent(state, trigger.data_use, trigger.provider, t,
                                   trigger.data_sent)
        if consent is None or not consent_in_force(consent, t):
            return None  # enrichment-without-consent's case
        outside = uncovered(consent.data_categories, trigger.data_sent)
        if not outside:
            return None
        context = request_context(trigger)
        context["outside"] = ", ".join(outside)
        return (trigger.event_id, consent.event_id), context

    def affected_by(self, trigger: EnrichmentRequested, late: Event) -> bool:
        return isinstance(late, ConsentChanged) and late.occurred_at <= trigger.occurred_at


RULE: Final = EnrichmentExceedsConsent(ID, STAGE_PAST, EnrichmentRequested)
