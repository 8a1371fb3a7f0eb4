"""`automatic-egress-feature-inactive`: an automatic request sent while the integration
was not enabled for the account, meeting and provider."""

from __future__ import annotations

from typing import Final

from streams.engine.params import EngineParams
from streams.engine.rules.base import FindingAlert, Rule, Verdict
from streams.engine.rules.lookups import deciding_toggle, request_context
from streams.engine.state import STAGE_PAST, AccountState, SubjectState
from streams.model.events import EnrichmentRequested, Event, FeatureToggled
from streams.model.timestamps import format_ms

__all__ = ["ID", "RULE"]

ID: Final = "automatic-egress-feature-inactive"


class AutomaticEgressFeatureInactive(Rule[EnrichmentRequested]):
    def applies(self, trigger: EnrichmentRequested) -> bool:
        return trigger.trigger == "AUTOMATIC"

    def decide(self, trigger: EnrichmentRequested, state: SubjectState,
               account: AccountState | None, params: EngineParams) -> Verdict:
        toggle = deciding_toggle(account, trigger.provider, trigger.meeting_id,
                                 trigger.occurred_at)
        if toggle is not None and toggle.enabled:
            return None
        context = request_context(trigger)
        if toggle is None:
            context["feature_state"] = "it was never turned on"
            return (trigger.event_id,), context
        scope = "meeting" if toggle.meeting_id is not None else "account"
        context["feature_state"] = f"turned off for the {scope} at {format_ms(toggle.occurred_at)}"
        return (trigger.event_id, toggle.event_id), context

    def affected_by(self, trigger: EnrichmentRequested, late: Event) -> bool:
        return (isinstance(late, FeatureToggled) and late.occurred_at <= trigger.occurred_at
                and late.account_id == trigger.account_id and late.provider == trigger.provider
                and (late.meeting_id is None or late.meeting_id == trigger.meeting_id))


RULE: Final = AutomaticEgressFeatureInactive(
    ID, STAGE_PAST, EnrichmentRequested, reads_account=True, alert=FindingAlert(
        name="ConsentwatchAutomaticEgressFeatureInactive",
        why=("Any finding pages: personal data left for a provider automatically while no "
             "host had the integration turned on. That is a defect in the platform, not a "
             "consent question, and it keeps happening until someone stops it."),
        summary="Automatic egress to {{ $labels.provider }} while the feature was off",
        description=("{{ $value | humanize }} new automatic-egress-feature-inactive finding(s) "
                     "for provider {{ $labels.provider }} in the last 10 minutes: enrichment "
                     "requests were sent automatically for an account whose integration was "
                     "not turned on.")))
