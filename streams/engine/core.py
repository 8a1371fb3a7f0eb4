"""The event-time correlation engine: one per partition of the correlation stage.

Feed it events in arrival order with `process`; it keeps the watermark, applies
each event to the state, and decides triggers once the watermark passes their
deadlines. It returns findings and amendments; it never does I/O and never
reads the clock itself (wall time comes in as an argument), so the same input
always gives the same decisions.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from streams.catalogue import Catalogue, load_catalogue
from streams.engine.evidence import evidence_events
from streams.engine.params import EngineParams
from streams.engine.rules import REGISTRY, Rule, Verdict
from streams.engine.state import (
    STAGE_NOTICE,
    STAGE_PAST,
    AccountState,
    DictStore,
    StateStore,
    SubjectState,
    TriggerRecord,
)
from streams.errors import InvalidEvent
from streams.model.events import (
    ConsentChanged,
    EnrichmentMatched,
    EnrichmentRequested,
    Event,
    FeatureToggled,
    NoticeDelivered,
    ParticipantJoined,
    ProfileViewed,
    fast_constructor,
)
from streams.model.findings import Amendment, Finding, amendment_id, finding_id

__all__ = ["BEYOND_HORIZON", "NEVER", "Engine", "EngineStats", "Output"]

# The events a rule may judge: the others are facts, kept in the state for the rules.
_TRIGGER_TYPES: Final = frozenset({EnrichmentRequested, ProfileViewed})
_heappush: Final = heapq.heappush
_heappop: Final = heapq.heappop
_heapify: Final = heapq.heapify
# Finding(...) with its fields in order, built without the frozen __init__'s cost.
_make_finding: Final = fast_constructor(Finding)

NEVER: Final = -(1 << 62)  # the watermark before any event
# The reason code of a trigger too old to decide (see `Engine.process`).
BEYOND_HORIZON: Final = "beyond_horizon"
LATENCY_BUFFER: Final = 65_536  # finding latencies kept until the metrics read them
FOREVER: Final = 1 << 62  # the watermark after the final flush

Output = Finding | Amendment


@dataclass(slots=True)
class EngineStats:
    # Plain dicts, not Counters: counted for every event, and a dict subclass makes each
    # `+= 1` go through Python-level item lookups (twice the engine's cost of counting).
    events: dict[str, int] = field(default_factory=dict)  # by event type
    duplicates: int = 0
    late: int = 0
    # Late facts older than watermark - amendment_horizon: applied, but the decisions
    # they could change that are older than the horizon are no longer kept to re-check.
    beyond_horizon: int = 0
    findings: dict[tuple[str, str, str], int] = field(default_factory=dict)  # rule, sev, provider
    amendments: dict[str, int] = field(default_factory=dict)  # by kind
    # (detected - trigger occurred_at, detected - trigger received) in ms, per finding of a
    # trigger received with a wall time; drained by the metrics, the oldest dropped if not.
    latencies: deque[tuple[int, int]] = field(
        default_factory=lambda: deque(maxlen=LATENCY_BUFFER))


class Engine:
    """Correlates one partition's events. Not thread-safe; one instance per partition."""

    def __init__(
        self,
        store: StateStore,
        params: EngineParams | None = None,
        catalogue: Catalogue | None = None,
        clock: Callable[[], int] | None = None,
        external_watermark: bool = False,
        rules: Sequence[Rule[Any]] = REGISTRY,
    ) -> None:
        import time

        self.store = store
        self.params = params or EngineParams()
        # A subject is pruned when touched, at most once per amendment horizon of event time.
        self._prune_every = max(3_600_000, self.params.amendment_horizon_ms)
        self._lateness = self.params.allowed_lateness_ms
        self._lookback = self.params.lookback_ms
        self._horizon = self.params.amendment_horizon_ms
        self._grace = self.params.notice_grace_ms
        self._get_subject = store.subject
        self._put_subject = store.put_subject
        # The plain store's dict of subjects (replay), used directly: compiled
        # (streams.native), a lookup is then no call, and putting back an object the dict
        # already holds is skipped. None for any other store (the worker's tables).
        self._plain: dict[str, SubjectState] | None = (
            store.subject_states if type(store) is DictStore else None)
        self.catalogue = catalogue or load_catalogue()
        self._entries = {entry.id: entry for entry in self.catalogue.rules}
        missing = [rule.id for rule in rules if rule.id not in self._entries]
        if missing:
            raise ValueError(f"rules not in the catalogue: {', '.join(missing)}")
        # The rules judging each trigger type: all, those about the past, the notice rules.
        self._rules_of: dict[type, tuple[Rule[Any], ...]] = {}
        self._past_rules: dict[type, tuple[Rule[Any], ...]] = {}
        self._notice_rules: dict[type, tuple[Rule[Any], ...]] = {}
        for rule in rules:
            if rule.trigger not in _TRIGGER_TYPES:
                raise ValueError(f"rule {rule.id}: {rule.trigger.__name__} events are facts "
                                 "the rules read, not triggers")
            self._rules_of[rule.trigger] = (*self._rules_of.get(rule.trigger, ()), rule)
            by_stage = self._past_rules if rule.stage == STAGE_PAST else self._notice_rules
            by_stage[rule.trigger] = (*by_stage.get(rule.trigger, ()), rule)
            for other in (self._past_rules, self._notice_rules):
                other.setdefault(rule.trigger, ())
        self._trigger_kinds = frozenset(self._rules_of)
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        self.stats = EngineStats()
        # True: only `advance_to` moves the watermark (the worker's correlate stage).
        self._external_watermark = external_watermark
        self.max_seen = NEVER
        self.watermark = NEVER
        # (deadline, seq, subject_id, trigger event_id, stage); the subject's
        # TriggerRecord is the truth, this heap only orders the deadlines.
        self._deadlines: list[tuple[int, int, str, str, int]] = []
        self._seq = 0
        self._undecided = 0  # trigger stages not decided yet (`pending`)
        self._swept_at = NEVER
        self._position = -1
        # The event time the last `process` counted: the event's own, or for a duplicate
        # its first copy's (a worker's input watermark takes this, not the record's).
        self.counted_at = NEVER

    # -- input -----------------------------------------------------------------

    def process(self, event: Event, wall_ms: int | None = None,  # noqa: PLR0915 (hot loop)
                position: int = -1) -> list[Output]:
        """Apply one event and return what it lets the engine decide.

        `wall_ms` (the wall clock now) feeds the idle advance; `position` (the
        input offset) is recorded with each decision, see `decided_since`.

        Raises InvalidEvent (`beyond_horizon`), having changed nothing, for a trigger
        (not a duplicate) older than the watermark by more than `lookback_ms`: the
        state keeps what a decision that old needs no longer (a consent superseded
        since is pruned), so deciding it could raise a finding the facts do not
        support. The caller dead-letters it, as it does an invalid record: never
        decided in silence, never on half the facts.
        """
        self._position = position
        t = event.occurred_at
        stats = self.stats
        watermark = self.watermark
        late = t < watermark
        outputs: list[Output] = []
        kind = type(event)
        if kind is FeatureToggled:
            first_at = self._apply_toggle(event, late, outputs)  # type: ignore[arg-type]
            fresh = first_at is None
            if first_at is not None:
                t = first_at
        else:
            # A subject's event, applied here rather than in a method of its own: this
            # runs for nearly every event, and a call costs about 3% of the engine's time.
            # (`subject` is typed Any: `kind` says what it is, and a `cast` would be a
            # function call per event.)
            subject: Any = event
            subject_id: str = subject.subject_id
            event_id = subject.event_id
            plain = self._plain
            state = plain.get(subject_id) if plain is not None else self._get_subject(subject_id)
            created = state is None
            if state is None:
                state = SubjectState()
                state.pruned_at = watermark  # nothing to prune yet
                fresh = True
            else:
                seen_at = state.seen.get(event_id)
                fresh = seen_at is None
                if seen_at is not None:
                    # A duplicate counts with its first copy's time, never its own: a copy
                    # whose time differs is still "otherwise ignored" (spec), so it must
                    # not move the watermark.
                    t = seen_at
            if fresh and late and t < watermark - self._lookback and kind in self._trigger_kinds:
                raise InvalidEvent(BEYOND_HORIZON, (  # nothing is changed yet
                    f"a {event.TYPE} older than the watermark by more than the amendment "
                    "horizon: the facts to decide it are no longer all kept, so it is not "
                    "decided"))
            if fresh:
                state.seen[event_id] = t
                # The most frequent kinds first.
                if kind is NoticeDelivered:
                    state.add_notice(subject.notice_kind, subject.provider, subject.meeting_id,
                                     t)
                elif kind in self._trigger_kinds:  # a trigger carries no fact rules read
                    record = TriggerRecord(subject, STAGE_PAST | STAGE_NOTICE, wall_ms)
                    state.triggers[event_id] = record
                    self._schedule(subject_id, record)
                elif kind is ParticipantJoined:
                    state.add_join(subject)
                elif kind is ConsentChanged:
                    state.add_consent(subject)
                elif (kind is EnrichmentMatched and subject.matched
                      and subject.profile_name is not None):
                    state.add_match(subject)  # only a named match can show a pseudonym
                if late and state.triggers:
                    self._amend(subject_id, state, subject, outputs)
                if watermark - state.pruned_at >= self._prune_every:
                    self._prune(state)
                if plain is None:
                    self._put_subject(subject_id, state)
                elif created:
                    plain[subject_id] = state
        # Counted here, after the one refusal above: a refused trigger is a dead letter.
        counts = stats.events
        counts[event.TYPE] = counts.get(event.TYPE, 0) + 1
        if not fresh:
            # Counted and otherwise ignored. `t` is the first copy's time, so this
            # changes nothing, except after a restart, where the copies read again bring
            # the watermark back to where it was.
            stats.duplicates += 1
        elif late:
            stats.late += 1
            if t < watermark - self._horizon:
                stats.beyond_horizon += 1
        self.counted_at = t
        max_seen = self.max_seen
        if t > max_seen:
            self.max_seen = max_seen = t
        deadlines = self._deadlines
        if not self._external_watermark and (
                max_seen - self._lateness > watermark
                or (deadlines and deadlines[0][0] < watermark)):
            self._advance(max_seen - self._lateness, outputs)
        return outputs

    def advance_to(self, watermark: int, position: int = -1) -> list[Output]:
        """Move the watermark to `watermark` (if ahead) and take what it lets decide.

        For an engine whose watermark comes from outside (`external_watermark`): the
        worker's correlate stage, where it is the minimum over the input partitions.
        """
        self._position = position
        outputs: list[Output] = []
        if watermark > self.watermark:
            self._advance(watermark, outputs)
        return outputs

    def decide_pending(self, position: int = -1) -> list[Output]:
        """End of input: move the watermark just past the last deadline of every trigger
        read so far (the end of everything before it), deciding them all. Unlike `flush`
        the engine goes on: what comes after is applied as usual, late where it is
        older than the watermark."""
        self._position = position
        outputs: list[Output] = []
        if not self._deadlines:
            return outputs
        last = max(at + (self._grace if stage == STAGE_PAST else 0)
                   for at, _, _, _, stage in self._deadlines)
        self._advance_past_all(last + 1, outputs)
        return outputs

    def flush(self) -> list[Output]:
        """End of input: take every pending decision (the watermark goes to infinity)."""
        outputs: list[Output] = []
        self._advance_past_all(FOREVER, outputs)
        return outputs

    def pending(self) -> int:
        """Decisions still waiting for the watermark."""
        return self._undecided

    def sweep(self) -> int:
        """Prune every subject not touched for a while; drop the ones left empty.

        Runs by itself each time the watermark has moved by `amendment_horizon`,
        so the state of subjects that went quiet stays bounded too. Returns how
        many subjects were dropped.
        """
        dropped = 0
        stale_before = self.watermark - self.params.amendment_horizon_ms
        for subject_id, state in self.store.subjects():
            if state.pruned_at > stale_before:
                continue
            self._prune(state)
            if state.size() == 0:
                self.store.delete_subject(subject_id)
                dropped += 1
            else:
                self.store.put_subject(subject_id, state)
        self._swept_at = self.watermark
        return dropped

    def restore_deadlines(self) -> None:
        """Rebuild the deadline index from the store (after a restart or a rebalance)."""
        self._deadlines = []
        self._undecided = 0
        for subject_id, state in self.store.subjects():
            self._index_triggers(subject_id, state)

    def decided_since(self, position: int,
                      again: Callable[[int], bool] | None = None) -> list[Finding]:
        """The findings of decisions taken while processing input at or after `position`
        (or, given `again`, at the positions for which it is true: a worker that reads
        several inputs into one engine tells their positions apart).

        At-least-once recovery: state changes may have reached the changelog while
        the findings they led to had not reached their topic. Sending these again
        is harmless, since a finding's id is deterministic.

        Only the findings the decisions raised, as raised: not a rule a late event
        changed since (the state that holds its amendment was stored after the finding
        and the amendment were delivered). Sent again on its amended outcome, a
        WOULD_RAISE became a finding never raised, an EVIDENCE_CHANGED a second finding
        under one id.
        """
        findings: list[Finding] = []
        for _, state in self.store.subjects():
            self._decided_in(state, position, again, findings)
        return findings

    def recover(self, position: int,
                again: Callable[[int], bool] | None = None) -> list[Finding]:
        """`restore_deadlines`, then `decided_since(position, again)`, in one pass over
        the stored subjects: each is read from storage and decoded once, not twice (a
        partition's subjects outnumber its state cache at scale)."""
        self._deadlines = []
        self._undecided = 0
        findings: list[Finding] = []
        for subject_id, state in self.store.subjects():
            self._index_triggers(subject_id, state)
            self._decided_in(state, position, again, findings)
        return findings

    def _index_triggers(self, subject_id: str, state: SubjectState) -> None:
        for record in state.triggers.values():
            self._schedule(subject_id, record)

    def _decided_in(self, state: SubjectState, position: int,
                    again: Callable[[int], bool] | None, findings: list[Finding]) -> None:
        """`decided_since`'s findings of one subject, appended to `findings`."""
        for record in state.triggers.values():
            if (record.decided_at < position if again is None
                    else not again(record.decided_at)):
                continue
            for stage in (STAGE_PAST, STAGE_NOTICE):
                if record.pending & stage:
                    continue
                for rule, verdict in self._evaluate(record, state, stage):
                    evidence = record.outcomes.get(rule.id)
                    if (verdict is not None and evidence is not None
                            and rule.id not in record.amended and verdict[0] == evidence):
                        findings.append(self._finding(rule.id, record.event, evidence,
                                                      verdict[1], state, count=False))

    # -- applying events ---------------------------------------------------------

    def _apply_toggle(self, event: FeatureToggled, late: bool, outputs: list[Output]
                      ) -> int | None:
        """Apply a toggle; when it is a duplicate, the time of its first copy instead."""
        account = self.store.account(event.account_id)
        if account is None:
            account = AccountState()
            account.pruned_at = self.watermark
        else:
            first_at = account.seen.get(event.event_id)
            if first_at is not None:
                return first_at
        account.seen[event.event_id] = event.occurred_at
        account.add_toggle(event)
        if self.watermark - account.pruned_at >= self._prune_every:
            account.prune(self.watermark, self.params.lookback_ms,
                          self.params.amendment_horizon_ms, self.params.dedupe_horizon_ms)
        self.store.put_account(event.account_id, account)
        if late:
            for subject_id in list(account.automatic):
                state = self.store.subject(subject_id)
                if state is None:
                    continue
                self._amend(subject_id, state, event, outputs)
                self.store.put_subject(subject_id, state)
        return None


    def _schedule(self, subject_id: str, record: TriggerRecord) -> None:
        """Index a trigger's first undecided stage by its deadline (and count its stages).

        The notice stage of a trigger whose past is undecided is indexed only once the
        past is decided (`_settle_notices`)."""
        pending = record.pending
        self._undecided += (1 if pending & STAGE_PAST else 0) + (1 if pending & STAGE_NOTICE else 0)
        if pending & STAGE_PAST:
            self._deadline(record.event.occurred_at, subject_id, record, STAGE_PAST)
        elif pending & STAGE_NOTICE:
            self._deadline(record.event.occurred_at + self._grace, subject_id, record,
                           STAGE_NOTICE)

    def _deadline(self, at: int, subject_id: str, record: TriggerRecord, stage: int) -> None:
        self._seq += 1
        _heappush(self._deadlines, (at, self._seq, subject_id, record.event.event_id, stage))

    def _settle_notices(self, subject_id: str, record: TriggerRecord,
                        state: SubjectState) -> None:
        """Right after a trigger's past is decided: its notice rules too, when a notice
        already given settles them (a later event can only add notices, and a notice
        given stays given), else at the trigger's time + notice_grace. Deciding now
        spares a second visit to the subject's state, long cold by then."""
        verdicts = self._evaluate(record, state, STAGE_NOTICE)
        for _, verdict in verdicts:
            if verdict is not None:  # not settled: a notice may still come
                self._deadline(record.event.occurred_at + self._grace, subject_id, record,
                               STAGE_NOTICE)
                return
        for rule, _ in verdicts:
            record.outcomes[rule.id] = None
        record.pending &= ~STAGE_NOTICE
        self._undecided -= 1

    def _prune(self, state: SubjectState) -> None:
        p = self.params
        state.prune(self.watermark, p.lookback_ms, p.notice_validity_ms, p.amendment_horizon_ms,
                    p.dedupe_horizon_ms)

    # -- deciding ----------------------------------------------------------------

    def _advance(self, watermark: int, outputs: list[Output]) -> None:
        """Move the watermark forward (never back) and decide every deadline it has passed."""
        self.watermark = max(self.watermark, watermark)
        watermark = self.watermark
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] < watermark:
            _, _, subject_id, event_id, stage = _heappop(deadlines)
            self._decide(subject_id, event_id, stage, outputs)
        if self._swept_at == NEVER:
            self._swept_at = watermark
        elif watermark - self._swept_at >= self.params.amendment_horizon_ms and watermark < FOREVER:
            self.sweep()

    def _advance_past_all(self, watermark: int, outputs: list[Output]) -> None:
        """`_advance` to a watermark past every deadline pending and every one deciding
        them adds (a notice stage: before the watermark too), in the same order: the
        pending ones sorted once, merged with a heap of those added. Popped one by one,
        a heap of the hundreds of thousands a backlog leaves to its end of input took
        twice as long as the sort (a cold entry at every level of the sift)."""
        self.watermark = max(self.watermark, watermark)
        watermark = self.watermark
        pending = self._deadlines
        pending.sort()
        added: list[tuple[int, int, str, str, int]] = []
        self._deadlines = added
        taken = 0  # of `pending`, as the heap would have popped them
        try:
            for item in pending:
                while added and added[0] < item:
                    _, _, subject_id, event_id, stage = _heappop(added)
                    self._decide(subject_id, event_id, stage, outputs)
                taken += 1
                self._decide(item[2], item[3], item[4], outputs)
        finally:
            if taken < len(pending):  # a decision failed: the rest stays indexed
                added.extend(pending[taken:])
                _heapify(added)
        self._advance(watermark, outputs)  # what deciding added and is left; the sweep

    def _evaluate(self, record: TriggerRecord, state: SubjectState, stage: int
                  ) -> list[tuple[Rule[Any], Verdict]]:
        """Each rule of `stage` that judges the record's trigger, with its verdict now."""
        event: Any = record.event
        by_stage = self._past_rules if stage == STAGE_PAST else self._notice_rules
        verdicts: list[tuple[Rule[Any], Verdict]] = []
        account: AccountState | None = None
        for rule in by_stage.get(type(event), ()):
            if not rule.applies(event):
                continue
            if rule.reads_account and account is None:
                account = self.store.account(event.account_id)
            verdicts.append((rule, rule.decide(event, state, account, self.params)))
        return verdicts

    def _decide(self, subject_id: str, event_id: str, stage: int, outputs: list[Output]) -> None:
        # `_evaluate`, inlined: this runs up to twice for every trigger.
        plain = self._plain
        state = plain.get(subject_id) if plain is not None else self._get_subject(subject_id)
        if state is None:
            return
        record = state.triggers.get(event_id)
        if record is None or not record.pending & stage:
            return
        event: Any = record.event
        by_stage = self._past_rules if stage == STAGE_PAST else self._notice_rules
        params = self.params
        outcomes = record.outcomes
        reads_account = False
        account: AccountState | None = None
        for rule in by_stage.get(type(event), ()):
            if not rule.applies(event):
                continue
            if rule.reads_account and not reads_account:
                reads_account = True
                account = self.store.account(event.account_id)
            verdict = rule.decide(event, state, account, params)
            rule_id = rule.id
            if verdict is None:
                outcomes[rule_id] = None
                continue
            evidence, context = verdict
            outcomes[rule_id] = evidence
            outputs.append(self._finding(rule_id, event, evidence, context, state))
            if record.received_at is not None:
                detected = outputs[-1].detected_at
                self.stats.latencies.append((detected - event.occurred_at,
                                             detected - record.received_at))
        record.pending &= ~stage
        record.decided_at = self._position
        self._undecided -= 1
        if stage == STAGE_PAST and record.pending & STAGE_NOTICE:
            self._settle_notices(subject_id, record, state)
        if reads_account:
            # Where a late account event (a toggle) finds the subjects it may amend. The
            # account looked up for the rules: nothing has changed it since.
            if account is None:
                account = AccountState()
            account.automatic[subject_id] = event.occurred_at
            self.store.put_account(event.account_id, account)
        if plain is None:
            self._put_subject(subject_id, state)

    def _finding(self, rule_id: str, event: EnrichmentRequested | ProfileViewed,
                 evidence: tuple[str, ...], context: dict[str, object],
                 state: SubjectState, count: bool = True) -> Finding:
        """The finding of a decision; it holds the evidence events themselves (references
        into the state, pseudonymised only where findings leave the process)."""
        entry = self._entries[rule_id]
        severity = entry.severity
        if count:
            key = (rule_id, severity, event.provider)
            counts = self.stats.findings
            counts[key] = counts.get(key, 0) + 1
        trigger_id = event.event_id
        return _make_finding(
            finding_id(rule_id, trigger_id),  # finding_id
            rule_id,  # rule
            severity,  # severity
            event.subject_id,  # subject_id
            event.account_id,  # account_id
            event.meeting_id,  # meeting_id
            event.provider,  # provider
            trigger_id,  # trigger_event_id
            evidence,  # evidence_event_ids
            event.occurred_at,  # occurred_at
            self._clock(),  # detected_at
            entry.explain(context),  # explanation
            evidence_events(evidence, event, state, self.store.account),  # evidence
        )

    # -- late events -------------------------------------------------------------

    def _amend(self, subject_id: str, state: SubjectState, late: Event,
               outputs: list[Output]) -> None:
        """Re-decide what a late event may change; record an amendment where it does."""
        params = self.params
        for record in list(state.triggers.values()):
            trigger: Any = record.event
            account: AccountState | None = None
            for rule in self._rules_of.get(type(trigger), ()):
                if (record.pending & rule.stage or not rule.applies(trigger)
                        or not rule.affected_by(trigger, late)):
                    continue
                if rule.reads_account and account is None:
                    account = self.store.account(trigger.account_id)
                verdict = rule.decide(trigger, state, account, params)
                rule_id = rule.id
                amended = record.amended
                before = (amended[rule_id] if rule_id in amended
                          else record.outcomes.get(rule_id))
                after = verdict[0] if verdict is not None else None
                if before == after:
                    continue
                amended[rule_id] = after
                if after is None:
                    change = "RETRACTED"
                elif before is None:
                    change = "WOULD_RAISE"
                else:
                    change = "EVIDENCE_CHANGED"
                outputs.append(self._amendment(change, rule_id, trigger, late, before, after,
                                               state))

    def _amendment(self, change: str, rule_id: str, trigger: EnrichmentRequested | ProfileViewed,
                   late: Event, before: tuple[str, ...] | None,
                   after: tuple[str, ...] | None, state: SubjectState) -> Amendment:
        fid = finding_id(rule_id, trigger.event_id)
        cited = after if after is not None else (before or ())
        self.stats.amendments[change] = self.stats.amendments.get(change, 0) + 1
        what = {
            "RETRACTED": "would not have been raised",
            "WOULD_RAISE": "would have been raised",
            "EVIDENCE_CHANGED": "holds on different evidence",
        }[change]
        return Amendment(
            amendment_id=amendment_id(fid, late.event_id, change),
            kind=change,
            finding_id=fid,
            rule=rule_id,
            subject_id=trigger.subject_id,
            trigger_event_id=trigger.event_id,
            late_event_id=late.event_id,
            evidence_event_ids=cited,
            occurred_at=late.occurred_at,
            detected_at=self._clock(),
            explanation=(
                f"A {late.TYPE} event that arrived after the watermark shows that the "
                f"{rule_id} finding for trigger {trigger.event_id} {what}."
            ),
            evidence=evidence_events(cited, trigger, state, self.store.account),
            late_event=late,
        )
