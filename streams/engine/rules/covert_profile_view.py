"""`covert-profile-view`: another user opened the subject's matched profile with no
profile-view notice given to the subject around that time."""

from __future__ import annotations

from typing import Final

from streams.engine.params import EngineParams
from streams.engine.rules.base import Rule, Verdict
from streams.engine.rules.lookups import notice_given, view_context
from streams.engine.state import STAGE_NOTICE, AccountState, SubjectState
from streams.model.events import Event, NoticeDelivered, ProfileViewed

__all__ = ["ID", "RULE"]

ID: Final = "covert-profile-view"
NOTICE_KIND: Final = "PROFILE_VIEW"


class CovertProfileView(Rule[ProfileViewed]):
    def applies(self, trigger: ProfileViewed) -> bool:
        return trigger.viewer_id != trigger.subject_id

    def decide(self, trigger: ProfileViewed, state: SubjectState,
               account: AccountState | None, params: EngineParams) -> Verdict:
        if notice_given(state, NOTICE_KIND, trigger.provider, trigger.meeting_id,
                        trigger.occurred_at, params):
            return None
        return (trigger.event_id,), view_context(trigger)

    def affected_by(self, trigger: ProfileViewed, late: Event) -> bool:
        return isinstance(late, NoticeDelivered) and late.notice_kind == NOTICE_KIND


RULE: Final = CovertProfileView(ID, STAGE_NOTICE, ProfileViewed)
