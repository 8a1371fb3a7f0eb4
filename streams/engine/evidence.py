"""The events behind a decision's evidence ids, taken from the state the engine keeps.

The rules name their evidence by event id (ids are what a decision records, in
`TriggerRecord.outcomes`, and what amendments compare). A finding also carries
the events themselves: the trigger (held by its `TriggerRecord`), the deciding
consent, the join and the match (in the subject's state) and the deciding toggle
(in the account's state). Looking them up by id, rather than having each rule
return them, gives a finding re-sent after a restart (`Engine.decided_since`) and
an amendment the very events of the original decision, through the same code.
Only references are taken here; nothing is copied or serialised.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from streams.engine.state import AccountState, SubjectState
from streams.model.events import EnrichmentRequested, Event, ProfileViewed

__all__ = ["evidence_events"]


def evidence_events(
    ids: tuple[str, ...],
    trigger: EnrichmentRequested | ProfileViewed,
    state: SubjectState,
    account_of: Callable[[str], AccountState | None],
) -> tuple[Event, ...]:
    """The events of `ids`, in that order. `account_of` (the store's account lookup) is
    called only for an id the subject's state does not hold (a toggle).

    An id found nowhere (its event pruned) is left out; the engine keeps every event a
    decision it can still re-send or amend may cite, so that does not happen.
    """
    trigger_id = trigger.event_id
    if len(ids) == 1 and ids[0] == trigger_id:  # most findings cite the trigger alone
        return (trigger,)
    found: list[Event] = []
    for event_id in ids:
        if event_id == trigger_id:
            found.append(trigger)
            continue
        event = _where_rules_look(event_id, trigger, state, account_of)
        if event is None:
            event = _anywhere(event_id, trigger, state, account_of)
        if event is not None:
            found.append(event)
    return tuple(found)


def _where_rules_look(event_id: str, trigger: EnrichmentRequested | ProfileViewed,
                      state: SubjectState, account_of: Callable[[str], AccountState | None]
                      ) -> Event | None:
    """The fast path: where `rules` takes a request's consent and toggle and a view's
    join, match and consent from."""
    if type(trigger) is ProfileViewed:
        event = (_search(event_id, state.joins.get(trigger.meeting_id, ()))
                 or _search(event_id, state.matches.get(trigger.provider, ())))
        if event is not None:
            return event
    for consents in state.consents.values():
        event = _search(event_id, consents)
        if event is not None:
            return event
    account = account_of(trigger.account_id)
    if account is None:
        return None
    toggles = account.toggles
    return (_search(event_id, toggles.get((trigger.provider, trigger.meeting_id), ()))
            or _search(event_id, toggles.get((trigger.provider, None), ())))


def _anywhere(event_id: str, trigger: EnrichmentRequested | ProfileViewed,
              state: SubjectState, account_of: Callable[[str], AccountState | None]
              ) -> Event | None:
    """The slow path, should a rule ever cite from elsewhere: every event held."""
    groups: list[Sequence[Event]] = [*state.consents.values(), *state.joins.values(),
                                     *state.matches.values()]
    account = account_of(trigger.account_id)
    if account is not None:
        groups += account.toggles.values()
    for events in groups:
        event = _search(event_id, events)
        if event is not None:
            return event
    return None


def _search(event_id: str, events: Sequence[Event]) -> Event | None:
    for event in reversed(events):  # the cited one is most often the latest
        if event.event_id == event_id:
            return event
    return None
