"""`enrichment-without-notice`: no enrichment notice given to the subject for the
provider and meeting around the request's time."""

from __future__ import annotations

from typing import Final

from streams.engine.params import EngineParams
from streams.engine.rules.base import Rule, Verdict
from streams.engine.rules.lookups import notice_given, request_context
from streams.engine.state import STAGE_NOTICE, AccountState, SubjectState
from streams.model.events import EnrichmentRequested, Event, NoticeDelivered

__all__ = ["ID", "RULE"]

ID: Final = "enrichment-without-notice"
NOTICE_KIND: Final = "ENRICHMENT"


class EnrichmentWithoutNotice(Rule[EnrichmentRequested]):
    def decide(self, trigger: EnrichmentRequested, state: SubjectState,
               account: AccountState | None, params: EngineParams) -> Verdict:
        if notice_given(state, NOTICE_KIND, trigger.provider, trigger.meeting_id,
                        trigger.occurred_at, params):
            return None
        return (trigger.event_id,), request_context(trigger)

    def affected_by(self, trigger: EnrichmentRequested, late: Event) -> bool:
        return isinstance(late, NoticeDelivered) and late.notice_kind == NOTICE_KIND


RULE: Final = EnrichmentWithoutNotice(ID, STAGE_NOTICE, EnrichmentRequested)
