"""`pseudonym-deanonymized`: a profile view showed the name the provider matched for a
participant who had joined the meeting under a pseudonym."""

from __future__ import annotations

from typing import Final

from streams.engine.names import is_pseudonym
from streams.engine.params import EngineParams
from streams.engine.rules.base import FindingAlert, Rule, Verdict
from streams.engine.rules.lookups import discloses_name, latest_before, view_context
from streams.engine.state import STAGE_PAST, AccountState, SubjectState
from streams.model.events import EnrichmentMatched, Event, ParticipantJoined, ProfileViewed

__all__ = ["ID", "RULE"]

ID: Final = "pseudonym-deanonymized"


class PseudonymDeanonymized(Rule[ProfileViewed]):
    def applies(self, trigger: ProfileViewed) -> bool:
        return trigger.viewer_id != trigger.subject_id and discloses_name(trigger)

    def decide(self, trigger: ProfileViewed, state: SubjectState,
               account: AccountState | None, params: EngineParams) -> Verdict:
        t = trigger.occurred_at
        join: ParticipantJoined | None = latest_before(state.joins.get(trigger.meeting_id), t)
        # state.matches holds only named, successful matches (the engine's state)
        match: EnrichmentMatched | None = latest_before(state.matches.get(trigger.provider), t)
        if join is None or match is None or match.profile_name is None:
            return None
        if not is_pseudonym(join.display_name, match.profile_name):
            return None
        return (join.event_id, match.event_id, trigger.event_id), view_context(trigger)

    def affected_by(self, trigger: ProfileViewed, late: Event) -> bool:
        return (isinstance(late, ParticipantJoined | EnrichmentMatched)
                and late.occurred_at <= trigger.occurred_at)


RULE: Final = PseudonymDeanonymized(ID, STAGE_PAST, ProfileViewed, alert=FindingAlert(
    name="ConsentwatchPseudonymDeanonymized",
    why=("Any finding pages: a pseudonymous participant's profile was opened under the "
         "real name the provider matched. One finding is one person de-anonymised."),
    summary="Pseudonym de-anonymised through provider {{ $labels.provider }}",
    description=("{{ $value | humanize }} new pseudonym-deanonymized finding(s) for provider "
                 "{{ $labels.provider }} in the last 10 minutes: a participant who joined "
                 "under a pseudonym had their matched real name disclosed to another user.")))
