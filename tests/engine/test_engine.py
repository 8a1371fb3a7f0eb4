"""The engine beside the rules: findings in general, duplicates, when decisions are
taken (event time, the watermark), and late events with their amendments."""

from __future__ import annotations

import pytest

from streams.engine.core import BEYOND_HORIZON, NEVER, Engine
from streams.engine.state import DictStore
from streams.errors import InvalidEvent
from streams.model.findings import Finding
from streams.model.validate import event_from_record
from tests.builders import (
    ACCOUNT,
    DAY,
    GRACE,
    LATENESS,
    MEETING,
    PROVIDER,
    SEC,
    SUBJECT,
    T0,
    consent,
    feed,
    joined,
    make_engine,
    matched,
    notice,
    requested,
    run,
    split,
    toggle,
    viewed,
)
from tests.engine.rules.cases import (
    COVERT_VIEW,
    DISCLOSURE,
    EXCEEDS_CONSENT,
    FEATURE_INACTIVE,
    PSEUDONYM,
    SEVERITY,
    WITHOUT_CONSENT,
    WITHOUT_NOTICE,
    automatic,
    covered,
    ids,
    one,
    past_decided,
    rules_of,
    sha,
    shared,
)

# -- findings in general -----------------------------------------------------------------


def test_automatic_request_without_consent_or_notice_raises_three_findings() -> None:
    r = automatic()
    findings, _, _ = run([r])
    assert sorted(f.rule for f in findings) == sorted(
        [WITHOUT_CONSENT, WITHOUT_NOTICE, FEATURE_INACTIVE])


def test_finding_fields_and_ids() -> None:
    j = joined(-60 * SEC, display_name="Night Owl")
    r = automatic(-55 * SEC)
    m = matched(-50 * SEC, profile_name="Rowan Vale", request_event_id=r["event_id"])
    v = viewed(0)
    findings, _, _ = run([j, r, m, v])
    assert {f.rule for f in findings} == set(SEVERITY) - {EXCEEDS_CONSENT}
    assert len({f.finding_id for f in findings}) == len(findings)
    for f in findings:
        trigger = r if f.rule in {WITHOUT_CONSENT, EXCEEDS_CONSENT, WITHOUT_NOTICE,
                                  FEATURE_INACTIVE} else v
        assert f.finding_id == sha(f.rule, trigger["event_id"])
        assert f.trigger_event_id == trigger["event_id"]
        assert f.trigger_event_id in f.evidence_event_ids
        assert f.severity == SEVERITY[f.rule]
        assert (f.subject_id, f.account_id, f.meeting_id, f.provider) == (
            SUBJECT, ACCOUNT, MEETING, PROVIDER)
        assert f.occurred_at == trigger["occurred_at"]
        assert isinstance(f.detected_at, int)
        assert f.explanation.strip()


def test_exceeds_finding_has_its_own_id() -> None:
    g = consent(-10 * SEC, data_categories=["user.name"])
    r = requested()
    findings, _, _ = run([*covered(), g, r])
    assert one(findings, EXCEEDS_CONSENT, r).finding_id == sha(EXCEEDS_CONSENT, r["event_id"])


def test_findings_are_about_the_trigger_subject_only() -> None:
    r_alice = requested()
    r_carol = requested(subject_id="u-carol")
    c_alice = consent(-10 * SEC)
    findings, _, _ = run([c_alice, r_alice, r_carol])
    assert rules_of(findings, r_alice) == {WITHOUT_NOTICE}
    assert rules_of(findings, r_carol) == {WITHOUT_CONSENT, WITHOUT_NOTICE}
    assert {f.subject_id for f in findings if f.trigger_event_id == r_carol["event_id"]} == {
        "u-carol"}


# -- duplicates ---------------------------------------------------------------------------


def test_duplicates_are_ignored_and_counted() -> None:
    c, t, r = consent(-20 * SEC), toggle(-15 * SEC), automatic()
    v = viewed(10 * SEC)
    plain, _, _ = run([c, t, r, v])
    findings, amendments, engine = run([c, dict(c), t, r, dict(t), dict(r), v, dict(v)])
    assert engine.stats.duplicates == 4
    assert sorted(f.finding_id for f in findings) == sorted(f.finding_id for f in plain)
    assert amendments == []


def test_duplicate_is_judged_by_event_id_only() -> None:
    g = consent(-20 * SEC)
    changed = {**g, "status": "WITHDRAWN", "occurred_at": T0 - 10 * SEC}
    r = requested()
    findings, _, engine = run([*covered(), g, changed, r])
    assert findings == []
    assert engine.stats.duplicates == 1


def test_duplicate_trigger_days_later_is_still_a_duplicate() -> None:
    """The spec puts no time limit on duplicates, and a finding_id is raised once."""
    r = requested(0)
    days = [joined(hour * 3_600_000, subject_id="u-other") for hour in range(1, 100)]
    findings, amendments, engine = run([*covered(), r, *days, dict(r)])
    assert sorted(f.rule for f in findings) == [WITHOUT_CONSENT]
    assert amendments == []
    assert engine.stats.duplicates == 1


def test_a_duplicate_with_a_later_time_does_not_move_the_watermark() -> None:
    """Its own time is "otherwise ignored": a grant 1 s out of order after it is on time."""
    n = notice(-DAY, meeting_id=None, provider=None)
    r = requested(0)
    copy = {**n, "occurred_at": T0 + 3_600_000}
    g = consent(-SEC, provider=None)
    findings, amendments, engine = run([n, r, copy, g])
    assert findings == [] and amendments == []
    assert engine.stats.duplicates == 1
    assert engine.max_seen == T0


def test_a_duplicate_toggle_with_a_later_time_does_not_move_the_watermark() -> None:
    t = toggle(-60 * SEC, enabled=True)
    r = automatic()
    copy = {**t, "occurred_at": T0 + 3_600_000}
    g = consent(-SEC, provider=None)
    findings, amendments, engine = run([*covered(), t, r, copy, g])
    assert findings == [] and amendments == []
    assert engine.stats.duplicates == 1
    assert engine.max_seen == T0


def test_a_trigger_beyond_the_horizon_is_refused_not_decided_on_pruned_state() -> None:
    """The grant in force at the trigger's time was pruned (a withdrawal superseded it
    more than the amendment horizon ago): deciding would raise a finding the facts do
    not support. The engine refuses the trigger, changing nothing."""
    engine = make_engine()
    g = consent(0, provider=None)
    w = consent(2 * 3_600_000, provider=None, status="WITHDRAWN")
    later = notice(27 * 3_600_000, subject_id="u-other")
    feed(engine, [*covered(), g, w, later, notice(27 * 3_600_000 + 1)])
    r = event_from_record(requested(3_600_000))
    before = engine.store.subject(r.subject_id)
    assert before is not None
    seen = dict(before.seen)
    counted = dict(engine.stats.events)
    with pytest.raises(InvalidEvent) as refused:
        engine.process(r)
    assert refused.value.code == BEYOND_HORIZON
    assert engine.stats.events == counted  # a dead letter, not an event consumed
    assert before.seen == seen and r.event_id not in before.triggers
    assert engine.flush() == []


def test_a_fact_beyond_the_horizon_is_applied_and_counted() -> None:
    """Later decisions must see it (a late grant in force now), so it is applied; the
    decisions older than the horizon it might change are gone, which the count says."""
    engine = make_engine()
    feed(engine, [*covered(), notice(2 * DAY, subject_id="u-other")])
    feed(engine, [consent(0, provider=None), consent(DAY + 3_600_000, provider=None,
                                                     status="GRANTED")])
    assert engine.stats.late == 2
    assert engine.stats.beyond_horizon == 1
    outputs = feed(engine, [requested(2 * DAY + SEC)]) + engine.flush()
    assert [o for o in outputs if isinstance(o, Finding)] == []


def test_a_trigger_late_within_the_horizon_is_decided_as_usual() -> None:
    engine = make_engine()
    feed(engine, [*covered(), notice(20 * 3_600_000, subject_id="u-other")])
    outputs = feed(engine, [requested(3_600_000)]) + engine.flush()
    assert [f.rule for f in outputs if isinstance(f, Finding)] == [WITHOUT_CONSENT]


# -- event time: when decisions are taken ------------------------------------------------


def test_past_rules_decide_once_the_watermark_is_past_the_trigger() -> None:
    engine = make_engine()
    r = requested(0)
    assert split(feed(engine, [*covered(), r])) == ([], [])
    assert feed(engine, [joined(LATENESS, subject_id="u-other")]) == []
    assert engine.watermark == T0
    findings, _ = split(feed(engine, [joined(LATENESS + 1, subject_id="u-other")]))
    assert [f.rule for f in findings] == [WITHOUT_CONSENT]


def test_notice_rules_decide_once_the_watermark_is_past_the_grace() -> None:
    engine = make_engine()
    c, r = consent(-DAY), requested(0)
    feed(engine, [c, r])
    assert feed(engine, [joined(GRACE + LATENESS, subject_id="u-other")]) == []
    findings, _ = split(feed(engine, [joined(GRACE + LATENESS + 1, subject_id="u-other")]))
    assert [f.rule for f in findings] == [WITHOUT_NOTICE]


def test_a_notice_within_the_grace_arriving_in_time_prevents_the_finding() -> None:
    engine = make_engine()
    outputs = feed(engine, [consent(-DAY), requested(0), joined(GRACE, subject_id="u-other"),
                            notice(GRACE), joined(10 * GRACE, subject_id="u-other")])
    outputs += engine.flush()
    assert outputs == []


def test_state_exactly_allowed_lateness_behind_is_not_late_and_counts() -> None:
    r, c = requested(0), consent(0)
    push = joined(LATENESS, subject_id="u-other")  # watermark == T0: not past the request
    findings, amendments, engine = run([*covered(), r, push, c])
    assert (findings, amendments) == ([], [])
    assert engine.stats.late == 0


def test_notice_at_the_grace_arriving_as_late_as_allowed_counts() -> None:
    r, n = requested(0), notice(GRACE)
    push = joined(GRACE + LATENESS, subject_id="u-other")  # watermark == T0 + grace
    findings, amendments, engine = run([consent(-DAY), r, push, n])
    assert (findings, amendments) == ([], [])
    assert engine.stats.late == 0


def test_flush_decides_everything() -> None:
    engine = make_engine()
    r = automatic(0)
    v = viewed(0, event_id="v-flush")
    assert feed(engine, [r, v]) == []
    assert engine.pending() > 0
    findings, _ = split(engine.flush())
    assert {(f.rule, f.trigger_event_id) for f in findings} == {
        (WITHOUT_CONSENT, r["event_id"]), (WITHOUT_NOTICE, r["event_id"]),
        (FEATURE_INACTIVE, r["event_id"]), (COVERT_VIEW, "v-flush"),
        (DISCLOSURE, "v-flush")}
    assert engine.pending() == 0
    assert engine.flush() == []


def test_a_watermark_moved_from_outside_decides_a_notice_deadline() -> None:
    """The worker's correlate stage: the watermark is the minimum over the input
    partitions (idle ones advanced by the wall clock, streams.pipeline.watermarks)."""
    engine = Engine(DictStore(), external_watermark=True)
    r = requested(0)
    assert engine.process(event_from_record(consent(-DAY))) == []
    assert engine.process(event_from_record(r)) == []
    assert engine.watermark == NEVER  # only advance_to moves it
    assert engine.advance_to(T0 - 1) == []
    assert engine.advance_to(T0 - 5) == []  # never back
    assert engine.watermark == T0 - 1
    assert engine.advance_to(T0 + GRACE) == []
    findings, _ = split(engine.advance_to(T0 + GRACE + 1))
    assert [(f.rule, f.trigger_event_id) for f in findings] == [(WITHOUT_NOTICE, r["event_id"])]


def test_a_watermark_moved_from_outside_decides_past_rules_too() -> None:
    engine = Engine(DictStore(), external_watermark=True)
    r = requested(0)
    engine.process(event_from_record(r))
    assert engine.advance_to(T0) == []
    findings, _ = split(engine.advance_to(T0 + 1))
    assert [f.rule for f in findings] == [WITHOUT_CONSENT]


# -- late events ----------------------------------------------------------------------------



def test_late_event_is_counted_only_when_older_than_the_watermark() -> None:
    engine = make_engine()
    feed(engine, [joined(LATENESS + 1, subject_id="u-other")])  # watermark T0 + 1
    feed(engine, [joined(1, subject_id="u-x")])
    assert engine.stats.late == 0
    feed(engine, [joined(0, subject_id="u-y")])
    assert engine.stats.late == 1


def test_late_grant_retracts_a_without_consent_finding() -> None:
    r = requested(0)
    engine, outputs = past_decided(*covered(), r)
    findings, _ = split(outputs)
    assert [(f.rule, f.trigger_event_id) for f in findings] == [(WITHOUT_CONSENT, r["event_id"])]
    late = consent(-10 * SEC)
    findings, amendments = split(feed(engine, [late]))
    assert engine.stats.late == 1
    assert findings == []
    assert [(a.kind, a.finding_id, a.rule, a.trigger_event_id, a.late_event_id)
            for a in amendments] == [
        ("RETRACTED", sha(WITHOUT_CONSENT, r["event_id"]), WITHOUT_CONSENT, r["event_id"],
         late["event_id"])]
    findings, amendments = split(engine.flush())
    assert findings == [] and amendments == []


def test_late_withdrawal_would_raise_without_a_new_finding() -> None:
    g, r = consent(-60 * SEC), requested(0)
    engine, outputs = past_decided(*covered(), g, r)
    assert outputs == []
    w = consent(-10 * SEC, status="WITHDRAWN")
    findings, amendments = split(feed(engine, [w]))
    assert findings == []
    assert [(a.kind, a.finding_id, a.evidence_event_ids) for a in amendments] == [
        ("WOULD_RAISE", sha(WITHOUT_CONSENT, r["event_id"]), ids(r, w))]
    # Recovery sends again what the decisions raised: never the finding only amended in.
    assert engine.decided_since(-1) == []
    assert split(engine.flush()) == ([], [])


def test_late_withdrawal_changes_the_evidence_of_a_raised_finding() -> None:
    r = requested(0)
    engine, raised = past_decided(*covered(), r)
    assert [(f.rule, f.evidence_event_ids) for f in raised] == [(WITHOUT_CONSENT, ids(r))]
    assert [(f.rule, f.evidence_event_ids) for f in engine.decided_since(-1)] == [
        (WITHOUT_CONSENT, ids(r))]
    w = consent(-10 * SEC, status="WITHDRAWN")
    findings, amendments = split(feed(engine, [w]))
    assert findings == []
    assert [(a.kind, a.finding_id, a.evidence_event_ids) for a in amendments] == [
        ("EVIDENCE_CHANGED", sha(WITHOUT_CONSENT, r["event_id"]), ids(r, w))]
    # Recovery never sends the finding again on its amended evidence (a second content
    # under its id): the state holding the amendment was stored after both went out.
    assert engine.decided_since(-1) == []


def test_late_profile_view_notice_retracts_a_covert_view_finding() -> None:
    engine = make_engine()
    v = viewed(0, data_disclosed=["user.workplace"])
    findings, _ = split(feed(engine, [shared(), v,
                                      joined(GRACE + LATENESS + 1, subject_id="u-other")]))
    assert [f.rule for f in findings] == [COVERT_VIEW]
    n = notice(10 * SEC, notice_kind="PROFILE_VIEW")
    findings, amendments = split(feed(engine, [n]))
    assert findings == []
    assert [(a.kind, a.finding_id) for a in amendments] == [
        ("RETRACTED", sha(COVERT_VIEW, v["event_id"]))]
    assert engine.stats.late == 1


def test_late_disabling_toggle_would_raise_feature_finding() -> None:
    r = automatic(0)
    engine, outputs = past_decided(consent(-DAY), *covered(), toggle(-60 * SEC), r)
    assert outputs == []
    off = toggle(-10 * SEC, enabled=False)
    findings, amendments = split(feed(engine, [off]))
    assert findings == []
    assert [(a.kind, a.finding_id, a.evidence_event_ids) for a in amendments] == [
        ("WOULD_RAISE", sha(FEATURE_INACTIVE, r["event_id"]), ids(r, off))]
    assert engine.stats.late == 1


def test_late_disabling_toggle_amends_every_subject_it_concerns() -> None:
    r1 = automatic(0)
    r2 = automatic(0, subject_id="u-carol")
    setup = [consent(-DAY), consent(-DAY, subject_id="u-carol"), *covered(),
             notice(-1 * SEC, subject_id="u-carol"), toggle(-60 * SEC)]
    engine, outputs = past_decided(*setup, r1, r2)
    assert outputs == []
    off = toggle(-10 * SEC, enabled=False)
    findings, amendments = split(feed(engine, [off]))
    assert findings == []
    assert sorted((a.kind, a.finding_id) for a in amendments) == sorted(
        ("WOULD_RAISE", sha(FEATURE_INACTIVE, r["event_id"])) for r in (r1, r2))


def test_late_join_under_a_pseudonym_would_raise() -> None:
    j1 = joined(-60 * SEC, display_name="Rowan Vale")
    m = matched(-50 * SEC, profile_name="Rowan Vale")
    v = viewed(0)
    engine, outputs = past_decided(shared(), notice(0, notice_kind="PROFILE_VIEW"), j1, m, v)
    assert outputs == []
    j2 = joined(-20 * SEC, display_name="Night Owl")
    findings, amendments = split(feed(engine, [j2]))
    assert findings == []
    assert [(a.kind, a.finding_id, a.evidence_event_ids) for a in amendments] == [
        ("WOULD_RAISE", sha(PSEUDONYM, v["event_id"]), ids(j2, m, v))]


def test_late_named_match_retracts_a_pseudonym_finding() -> None:
    j = joined(-60 * SEC, display_name="Night Owl")
    m1 = matched(-50 * SEC, profile_name="Rowan Vale")
    v = viewed(0)
    engine, outputs = past_decided(shared(), notice(0, notice_kind="PROFILE_VIEW"), j, m1, v)
    assert [f.rule for f in split(outputs)[0]] == [PSEUDONYM]
    m2 = matched(-20 * SEC, profile_name="Night Owl")
    findings, amendments = split(feed(engine, [m2]))
    assert findings == []
    assert [(a.kind, a.finding_id) for a in amendments] == [
        ("RETRACTED", sha(PSEUDONYM, v["event_id"]))]


def test_late_event_that_changes_nothing_is_counted_without_amendment() -> None:
    r = requested(0)
    engine, _ = past_decided(*covered(), r)
    findings, amendments = split(feed(engine, [consent(-5 * SEC, provider="apollo"),
                                                joined(-5 * SEC)]))
    assert (findings, amendments) == ([], [])
    assert engine.stats.late == 2


def test_late_trigger_is_still_decided() -> None:
    engine, _ = past_decided(*covered())
    r = requested(-10 * SEC)
    outputs = feed(engine, [r]) + engine.flush()
    findings, _ = split(outputs)
    assert engine.stats.late == 1
    assert rules_of(findings, r) == {WITHOUT_CONSENT}
