"""The engine's state: bounded over time, restorable, and behind the store interface."""

from __future__ import annotations

import base64
import pickle

from hypothesis import given

from streams.engine import DictStore, Engine, EngineParams
from streams.engine.state import SubjectState
from streams.model.events import Event
from streams.model.validate import event_from_record
from tests import strategies
from tests.builders import (
    DAY,
    SEC,
    SUBJECT,
    T0,
    consent,
    feed,
    joined,
    make_engine,
    notice,
    requested,
)


def _state(engine: Engine, subject: str = SUBJECT) -> SubjectState:
    state = engine.store.subject(subject)
    assert state is not None
    return state


def test_state_of_a_busy_subject_stays_bounded_over_years() -> None:
    engine = make_engine(notice_validity_ms=30 * DAY, amendment_horizon_ms=DAY)
    sizes = []
    for day in range(3 * 365):
        at = day * DAY
        feed(engine, [
            consent(at, status="GRANTED" if day % 2 else "WITHDRAWN"),
            notice(at + 1),
            joined(at + 2, meeting_id=f"m{day}"),
            requested(at + 3, meeting_id=f"m{day}"),
        ])
        sizes.append(_state(engine).size())
    # superseded consents, notices past their validity, old meetings and decided
    # triggers past the amendment horizon are pruned: the state stops growing
    assert max(sizes[400:]) <= max(sizes[60:120])
    state = _state(engine)
    assert sum(map(len, state.consents.values())) <= 3
    assert sum(map(len, state.notices.values())) <= 32
    assert len(state.joins) <= 32
    assert len(state.triggers) <= 3


def test_latest_consent_survives_pruning_however_old() -> None:
    engine = make_engine(amendment_horizon_ms=DAY)
    feed(engine, [consent(0, status="GRANTED")])
    for day in range(1, 800):
        feed(engine, [notice(day * DAY, subject_id="someone-else")])
    outputs = feed(engine, [notice(800 * DAY), requested(800 * DAY + 1)]) + engine.flush()
    assert [o.rule for o in outputs] == []  # the two-year-old grant is still in force


def test_grants_of_one_millisecond_survive_pruning_together() -> None:
    """Pruning keeps every consent of the latest time before the horizon, not one of
    them: at a tie the more restrictive decides, whichever sorted last."""
    engine = make_engine(amendment_horizon_ms=DAY)
    lapsed = consent(0, event_id="c-a-lapsed", expires_at=T0 + 10 * DAY)
    open_ = consent(0, event_id="c-z-open")
    feed(engine, [lapsed, open_])
    for day in range(1, 30):
        feed(engine, [notice(day * DAY, subject_id="someone-else")])
    assert sum(map(len, _state(engine).consents.values())) == 2
    outputs = feed(engine, [notice(30 * DAY), requested(30 * DAY + 1)]) + engine.flush()
    assert [(o.rule, o.evidence_event_ids[-1]) for o in outputs] == [
        ("enrichment-without-consent", "c-a-lapsed")]


def test_sweep_drops_subjects_that_hold_nothing_any_more() -> None:
    engine = make_engine(notice_validity_ms=DAY, amendment_horizon_ms=DAY)
    feed(engine, [notice(0, subject_id="quiet")])
    for day in range(1, 10):
        feed(engine, [notice(day * DAY)])
    assert engine.store.subject("quiet") is None
    assert engine.store.subject(SUBJECT) is not None


def test_pending_deadlines_are_restored_from_the_store() -> None:
    store = DictStore()
    first = Engine(store, EngineParams())
    first.process(event_from_record(requested(0)))
    assert first.pending() == 2
    # a new engine over the same store (a restart) rebuilds its deadline index
    second = Engine(store, EngineParams())
    second.restore_deadlines()
    assert second.pending() == 2
    rules = sorted(o.rule for o in second.flush())
    assert rules == ["enrichment-without-consent", "enrichment-without-notice"]


def test_a_trigger_resent_after_the_horizons_is_a_dead_letter_and_written_once() -> None:
    import io

    import orjson

    from streams.replay import replay_records
    from tests.builders import requested as make_request

    r = make_request(0)
    later = [notice(day * DAY, subject_id="someone-else") for day in range(1, 12)]
    records = [r, *later, dict(r)]
    out = io.BytesIO()
    events = [(n, event_from_record(rec)) for n, rec in enumerate(records, 1)]
    dead = io.BytesIO()
    summary = replay_records(events, out, EngineParams(dedupe_horizon_ms=2 * DAY),
                             dead_letters_out=dead, source="resent.jsonl")
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    ids = [line["finding_id"] for line in lines]
    assert len(ids) == len(set(ids)) == 2  # without consent, without notice
    # The copy came back far behind the watermark: beyond the engine's horizon, so it is
    # not decided again on pruned state but dead-lettered, the event as its payload.
    (letter,) = [orjson.loads(line) for line in dead.getvalue().splitlines()]
    assert letter["reason_code"] == "beyond_horizon"
    assert letter["source"] == "resent.jsonl" and letter["position"] == len(records)
    assert orjson.loads(base64.b64decode(letter["payload"]))["event_id"] == r["event_id"]
    assert summary.dead_letters == 1


@given(strategies.events())
def test_every_event_pickles_to_an_equal_event_of_its_type(event: Event) -> None:
    # The worker's table keeps pickled state; events reduce to (type, values).
    again = pickle.loads(pickle.dumps(event, protocol=pickle.HIGHEST_PROTOCOL))
    assert again == event and type(again) is type(event)
    assert hash(again) == hash(event)


def test_a_notice_given_before_the_trigger_settles_its_notice_rules_with_its_past() -> None:
    # The watermark passes the request (lateness 30 s), not request + notice_grace (300 s).
    given = make_engine()
    feed(given, [notice(0), requested(SEC), joined(40 * SEC)])
    assert given.pending() == 0  # a notice given stays given: both stages are decided
    waiting = make_engine()
    feed(waiting, [requested(SEC), joined(40 * SEC)])
    assert waiting.pending() == 1  # the notice rule waits: a notice may still come
    feed(waiting, [notice(200 * SEC), joined(302 * SEC)])
    assert waiting.pending() == 1
    decided = feed(waiting, [joined(332 * SEC)])
    assert waiting.pending() == 0
    assert decided == []  # the notice within the grace counted: no finding
    unnoticed = make_engine()
    feed(unnoticed, [requested(SEC), joined(40 * SEC)])
    assert [o.rule for o in feed(unnoticed, [joined(332 * SEC)])] == [
        "enrichment-without-notice"]
