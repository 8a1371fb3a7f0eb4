"""The facts several rules look up in a trigger's state: the deciding consent, the
deciding toggle, whether a notice was given, the latest join or match, and the
non-personal fields an explanation may show. Pure functions of the state; no rule
ids here (each rule is its own module).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from streams.engine.params import EngineParams
from streams.engine.state import AccountState, SubjectState, toggle_order
from streams.engine.taxonomy import covers, uncovered
from streams.model.events import (
    ConsentChanged,
    EnrichmentRequested,
    FeatureToggled,
    ProfileViewed,
)
from streams.model.timestamps import format_ms

__all__ = [
    "consent_in_force",
    "consent_state",
    "deciding_consent",
    "deciding_toggle",
    "discloses_name",
    "latest_before",
    "notice_given",
    "request_context",
    "view_context",
]


def deciding_consent(
    state: SubjectState, data_use: str, provider: str, at: int,
    categories: tuple[str, ...] = (),
) -> ConsentChanged | None:
    """The latest ConsentChanged at `at` whose data use covers `data_use`, for `provider` or
    any. At equal times the more restrictive one wins (spec): a withdrawal, then a grant
    not in force at `at` (expired), then the grant whose scope leaves more of `categories`
    (what the trigger sent or showed) uncovered; then the greater event id, so the choice
    never depends on the order the events came in."""
    best: ConsentChanged | None = None
    for (use, for_provider), events in state.consents.items():
        if (for_provider is not None and for_provider != provider) or not covers(use, data_use):
            continue
        # An index loop: mypyc (streams.native) fails on reversed() over a list[Any].
        index = len(events) - 1
        while index >= 0 and events[index].occurred_at > at:
            index -= 1
        latest = events[index].occurred_at if index >= 0 else 0
        while index >= 0 and events[index].occurred_at == latest:  # the latest, ties too
            event = events[index]
            if best is None or event.occurred_at > best.occurred_at or (
                    event.occurred_at == best.occurred_at
                    and _restriction(event, at, categories)
                    > _restriction(best, at, categories)):
                best = event
            index -= 1
    return best


def _restriction(event: ConsentChanged, at: int, categories: tuple[str, ...]
                 ) -> tuple[bool, bool, int, str]:
    """Of two consents of one time, the greater decides: a withdrawal, a grant lapsed at
    `at`, the grant leaving more of `categories` uncovered, then the greater event id."""
    withdrawn = event.status == "WITHDRAWN"
    lapsed = not withdrawn and not consent_in_force(event, at)
    left_out = 0 if withdrawn or lapsed else len(uncovered(event.data_categories, categories))
    return (withdrawn, lapsed, left_out, event.event_id)


def consent_in_force(consent: ConsentChanged | None, at: int) -> bool:
    """A grant that has not expired at `at`."""
    return (consent is not None and consent.status == "GRANTED"
            and (consent.expires_at is None or consent.expires_at > at))


def consent_state(consent: ConsentChanged) -> str:
    """Why a consent that is not in force is not (its withdrawal, or its grant's expiry)."""
    if consent.status == "WITHDRAWN":
        return f"withdrawn at {format_ms(consent.occurred_at)}"
    assert consent.expires_at is not None
    return f"the grant expired at {format_ms(consent.expires_at)}"


def deciding_toggle(
    account: AccountState | None, provider: str, meeting: str, at: int
) -> FeatureToggled | None:
    """The latest FeatureToggled of the account and provider at `at`, for the meeting or all
    (at equal times `enabled = false` wins; `toggle_order` is that order)."""
    if account is None:
        return None
    best: FeatureToggled | None = None
    best_key: tuple[int, int, str] | None = None
    for key in ((provider, meeting), (provider, None)):
        for event in reversed(account.toggles.get(key, ())):
            if event.occurred_at <= at:
                order = toggle_order(event)
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


def latest_before(events: list[Any] | None, at: int) -> Any:
    if events:
        # An index loop: mypyc (streams.native) fails on reversed() over a list[Any].
        index = len(events) - 1
        while index >= 0:
            event = events[index]
            if event.occurred_at <= at:
                return event
            index -= 1
    return None


def discloses_name(v: ProfileViewed) -> bool:
    """Some disclosed category is one that `user.name` covers (the spec's wording)."""
    for c in v.data_disclosed:  # noqa: SIM110 (a loop is cheaper than any() of a generator)
        if c == "user.name" or c.startswith("user.name."):
            return True
    return False


def request_context(r: EnrichmentRequested) -> dict[str, Any]:
    return {
        "provider": r.provider,
        "data_use": r.data_use,
        "data_sent": ", ".join(r.data_sent) or "no categories",
        "occurred_at": format_ms(r.occurred_at),
        "meeting_id": r.meeting_id,
    }


def view_context(v: ProfileViewed) -> dict[str, Any]:
    return {
        "provider": v.provider,
        "data_disclosed": ", ".join(v.data_disclosed) or "no categories",
        "occurred_at": format_ms(v.occurred_at),
        "meeting_id": v.meeting_id,
    }
