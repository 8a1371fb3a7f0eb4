"""The engine's state and the small interface it is stored behind.

A subject's state holds every event of that subject a rule may still look at;
an account's state holds its feature toggles. The engine mutates a state object
and then `put`s it back, so a store that persists (Faust tables) sees every change.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterator
from typing import Any, Final, Protocol, TypeVar

from streams.model.events import (
    ConsentChanged,
    EnrichmentMatched,
    EnrichmentRequested,
    FeatureToggled,
    ParticipantJoined,
    ProfileViewed,
)

__all__ = [
    "ACCOUNT_FIELDS",
    "STAGE_NOTICE",
    "STAGE_PAST",
    "SUBJECT_FIELDS",
    "TRIGGER_FIELDS",
    "AccountState",
    "DictStore",
    "StateStore",
    "SubjectState",
    "TriggerRecord",
    "consent_order",
    "event_order",
    "toggle_order",
]

# A trigger is decided in up to two stages: the rules about the past once the
# watermark passes its time, the notice rules once it passes time + notice_grace.
STAGE_PAST: Final = 1
STAGE_NOTICE: Final = 2

_E = TypeVar("_E")
Trigger = EnrichmentRequested | ProfileViewed
Outcomes = dict[str, tuple[str, ...] | None]  # rule -> evidence ids, or None when it did not fire


def consent_order(event: ConsentChanged) -> tuple[int, int, str]:
    """Latest first by time; at a tie the withdrawal wins; then by id, so the order is total."""
    return (event.occurred_at, event.status == "WITHDRAWN", event.event_id)


def toggle_order(event: FeatureToggled) -> tuple[int, int, str]:
    return (event.occurred_at, not event.enabled, event.event_id)


def event_order(event: ParticipantJoined | EnrichmentMatched) -> tuple[int, str]:
    return (event.occurred_at, event.event_id)


# Each state class's attributes (its slots).
TRIGGER_FIELDS = ("amended", "decided_at", "event", "outcomes", "pending", "received_at")
SUBJECT_FIELDS = ("consents", "joins", "matches", "notices", "pruned_at", "seen", "triggers")
ACCOUNT_FIELDS = ("automatic", "pruned_at", "seen", "toggles")


class TriggerRecord:
    """A trigger waiting for its decisions, or decided and kept for amendments."""

    __slots__ = TRIGGER_FIELDS

    def __init__(self, event: Trigger, pending: int, received_at: int | None = None) -> None:
        self.event = event
        self.pending = pending
        # What the decisions took, rule by rule: never changed after (`decided_since`
        # sends again exactly the findings raised).
        self.outcomes: Outcomes = {}
        # The outcome now of each rule a late event changed (an amendment): what further
        # late events are compared with.
        self.amended: Outcomes = {}
        # The input position (Kafka offset) whose processing took the last decision:
        # after a restart, decisions taken at or after the committed offset are sent again.
        self.decided_at = -1
        # The wall clock (epoch ms) when the engine received the trigger, if it was
        # told (a worker; not a replay): the start of the ingestion-to-finding latency.
        self.received_at = received_at



class SubjectState:
    __slots__ = SUBJECT_FIELDS

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}  # event_id -> occurred_at, for duplicates
        self.consents: dict[tuple[str, str | None], list[ConsentChanged]] = {}
        # (notice_kind, provider, meeting_id) -> sorted delivery times
        self.notices: dict[tuple[str, str | None, str | None], list[int]] = {}
        self.joins: dict[str, list[ParticipantJoined]] = {}  # meeting_id -> joins
        self.matches: dict[str, list[EnrichmentMatched]] = {}  # provider -> named matches
        self.triggers: dict[str, TriggerRecord] = {}  # trigger event_id -> record
        self.pruned_at = -(1 << 62)  # the watermark at the last prune


    def add_consent(self, event: ConsentChanged) -> None:
        _insert(self.consents.setdefault((event.data_use, event.provider), []), event,
                consent_order)

    def add_notice(self, kind: str, provider: str | None, meeting: str | None, at: int) -> None:
        times = self.notices.setdefault((kind, provider, meeting), [])
        if not times or at >= times[-1]:
            times.append(at)
        else:
            insort(times, at)

    def add_join(self, event: ParticipantJoined) -> None:
        _insert(self.joins.setdefault(event.meeting_id, []), event, event_order)

    def add_match(self, event: EnrichmentMatched) -> None:
        _insert(self.matches.setdefault(event.provider, []), event, event_order)

    def prune(self, watermark: int, lookback_ms: int, validity_ms: int, horizon_ms: int,
              dedupe_ms: int) -> None:
        """Drop what no decision can look at any more.

        `oldest` is the earliest trigger time that may still be decided or amended.
        A consent, join or match superseded by a later one of the same key before
        `oldest` can never be the latest again; a notice older than `oldest` by more
        than its validity can never count; a join in a meeting whose latest join is
        that old is dropped with its meeting.
        """
        oldest = watermark - lookback_ms
        self.seen = {k: t for k, t in self.seen.items() if t >= watermark - dedupe_ms}
        for consents in self.consents.values():
            _drop_superseded(consents, oldest)
        for joins in self.joins.values():
            _drop_superseded(joins, oldest)
        for matches in self.matches.values():
            _drop_superseded(matches, oldest)
        stale_meetings = [
            m for m, js in self.joins.items() if js[-1].occurred_at < oldest - validity_ms
        ]
        for meeting in stale_meetings:
            del self.joins[meeting]
        for key in list(self.notices):
            times = self.notices[key]
            cut = bisect_left(times, oldest - validity_ms)
            if cut == len(times):
                del self.notices[key]
            elif cut:
                del times[:cut]
        done = [
            eid
            for eid, record in self.triggers.items()
            if not record.pending and record.event.occurred_at < watermark - horizon_ms
        ]
        for eid in done:
            del self.triggers[eid]
        self.pruned_at = watermark

    def size(self) -> int:
        """How many items this state holds (a gauge of state size)."""
        return (
            len(self.seen)
            + sum(map(len, self.consents.values()))
            + sum(map(len, self.notices.values()))
            + sum(map(len, self.joins.values()))
            + sum(map(len, self.matches.values()))
            + len(self.triggers)
        )


class AccountState:
    __slots__ = ACCOUNT_FIELDS

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        # (provider, meeting_id or None for account-wide) -> toggles in decide order
        self.toggles: dict[tuple[str, str | None], list[FeatureToggled]] = {}
        # subject_id -> latest automatic request time: where a late toggle may amend
        self.automatic: dict[str, int] = {}
        self.pruned_at = -(1 << 62)


    def add_toggle(self, event: FeatureToggled) -> None:
        _insert(self.toggles.setdefault((event.provider, event.meeting_id), []), event,
                toggle_order)

    def prune(self, watermark: int, lookback_ms: int, horizon_ms: int, dedupe_ms: int) -> None:
        oldest = watermark - lookback_ms
        self.seen = {k: t for k, t in self.seen.items() if t >= watermark - dedupe_ms}
        self.automatic = {k: t for k, t in self.automatic.items() if t >= watermark - horizon_ms}
        for toggles in self.toggles.values():
            _drop_superseded(toggles, oldest)
        self.pruned_at = watermark


def _insert(items: list[_E], event: _E, order: Callable[[_E], tuple[Any, ...]]) -> None:
    """Insert keeping `order`; events mostly arrive in order, so appending is the fast path."""
    if not items or event.occurred_at > items[-1].occurred_at:  # type: ignore[attr-defined]
        items.append(event)
    else:
        insort(items, event, key=order)


def _drop_superseded(items: list[Any], oldest: int) -> None:
    """Keep the last item at or before `oldest` (it is still in force), those of the same
    time (at a tie the more restrictive one decides, whatever their order) and all after."""
    keep_from = 0
    for index, item in enumerate(items):
        if item.occurred_at < oldest:
            keep_from = index
        else:
            break
    while keep_from and items[keep_from - 1].occurred_at == items[keep_from].occurred_at:
        keep_from -= 1
    if keep_from:
        del items[:keep_from]


class StateStore(Protocol):
    """Where the engine keeps its state: a dict here, Faust tables in the worker."""

    def subject(self, subject_id: str) -> SubjectState | None: ...
    def put_subject(self, subject_id: str, state: SubjectState) -> None: ...
    def account(self, account_id: str) -> AccountState | None: ...
    def put_account(self, account_id: str, state: AccountState) -> None: ...
    def delete_subject(self, subject_id: str) -> None: ...
    def subjects(self) -> Iterator[tuple[str, SubjectState]]: ...


class DictStore:
    """State in plain dicts, for `replay` and tests.

    The lookups are the dicts' own bound methods: this store sits on the hot path.
    """

    __slots__ = ("_accounts", "account", "put_account", "put_subject", "subject",
                 "subject_states")

    def __init__(self) -> None:
        self.subject_states: dict[str, SubjectState] = {}  # the engine reads it directly
        self._accounts: dict[str, AccountState] = {}
        self.subject: Callable[[str], SubjectState | None] = self.subject_states.get
        self.put_subject: Callable[[str, SubjectState], None] = (
            self.subject_states.__setitem__)
        self.account: Callable[[str], AccountState | None] = self._accounts.get
        self.put_account: Callable[[str, AccountState], None] = self._accounts.__setitem__

    def delete_subject(self, subject_id: str) -> None:
        self.subject_states.pop(subject_id, None)

    def subjects(self) -> Iterator[tuple[str, SubjectState]]:
        return iter(list(self.subject_states.items()))

    def accounts(self) -> Iterator[tuple[str, AccountState]]:
        return iter(list(self._accounts.items()))
