"""`disclosure-without-consent` (spec: "Rules"), firing and not firing, at its boundaries.

Each test builds a tiny stream with `tests.builders`, runs it through the engine
to the end (flush), and checks which findings came out, with which evidence.
"""

from __future__ import annotations

import pytest

from streams.model.findings import Finding
from tests.builders import (
    DAY,
    GRACE,
    PROVIDER,
    SEC,
    SUBJECT,
    T0,
    consent,
    feed,
    joined,
    notice,
    requested,
    run,
    split,
    viewed,
)
from tests.engine.rules.cases import (
    DISCLOSURE,
    TIE_CASES,
    covered,
    ids,
    one,
    past_decided,
    rules_of,
    sha,
)

# -- disclosure-without-consent ----------------------------------------------------------


def _view_rules(*before: dict, **view: object) -> tuple[list[Finding], dict]:
    v = viewed(0, **view)
    findings, _, _ = run([*before, notice(-DAY, meeting_id=None, notice_kind="PROFILE_VIEW"), v])
    return findings, v


def test_disclosure_fires_without_any_consent() -> None:
    findings, v = _view_rules(data_disclosed=["user.workplace"])
    f = one(findings, DISCLOSURE, v)
    assert f.evidence_event_ids == ids(v)
    assert f.severity == "HIGH"
    assert "no consent was ever recorded" in f.explanation
    assert rules_of(findings, v) == {DISCLOSURE}


def test_disclosure_after_a_withdrawal_fires_although_the_enrichment_was_consented() -> None:
    g = consent(-DAY, data_categories=["user"])
    r = requested(-60 * SEC)
    w = consent(-10 * SEC, status="WITHDRAWN", data_categories=["user"])
    findings, v = _view_rules(*covered(), g, r, w)
    assert rules_of(findings, r) == set()
    assert one(findings, DISCLOSURE, v).evidence_event_ids == ids(v, w)


def test_disclosure_beyond_the_consented_categories_cites_the_consent() -> None:
    g = consent(-DAY)  # user.name and user.contact.email: not user.workplace, user.job_title
    findings, v = _view_rules(g)
    f = one(findings, DISCLOSURE, v)
    assert f.evidence_event_ids == ids(v, g)
    assert "user.workplace, user.job_title" in f.explanation


@pytest.mark.parametrize(
    ("overrides", "fires"),
    [
        ({}, False),
        ({"data_use": "third_party_sharing"}, False),        # a covering data use
        ({"data_use": "analytics"}, True),                   # another data use
        ({"provider": PROVIDER}, False),
        ({"provider": "apollo"}, True),                      # another provider's consent
        ({"expires_at": T0 + 1}, False),
        ({"expires_at": T0}, True),                          # expires_at must be later than t
        ({"data_categories": ["user.name", "user.workplace"]}, True),
        ({"subject_id": "u-other"}, True),                   # another person's consent
    ],
)
def test_disclosure_consent_must_cover_use_provider_time_and_categories(
        overrides: dict, fires: bool) -> None:
    g = consent(-DAY, **{"data_categories": ["user"], **overrides})
    findings, v = _view_rules(g)
    assert (DISCLOSURE in rules_of(findings, v)) is fires


def test_disclosure_withdrawal_at_the_same_time_as_a_grant_wins() -> None:
    g = consent(-10 * SEC, data_categories=["user"])
    w = consent(-10 * SEC, status="WITHDRAWN", data_categories=["user"])
    findings, v = _view_rules(g, w)
    assert one(findings, DISCLOSURE, v).evidence_event_ids == ids(v, w)


def test_disclosure_consent_given_after_the_view_does_not_count() -> None:
    v = viewed(0)
    later = consent(1, data_categories=["user"])
    findings, _, _ = run([notice(-DAY, meeting_id=None, notice_kind="PROFILE_VIEW"), v, later])
    assert one(findings, DISCLOSURE, v).evidence_event_ids == ids(v)


def test_viewing_ones_own_profile_is_no_disclosure() -> None:
    findings, v = _view_rules(viewer_id=SUBJECT)
    assert rules_of(findings, v) == set()


def test_late_withdrawal_before_a_view_would_raise_a_disclosure() -> None:
    g = consent(-DAY, data_categories=["user"])
    v = viewed(0, data_disclosed=["user.workplace"])
    engine, outputs = past_decided(g, notice(0, notice_kind="PROFILE_VIEW"), v)
    assert outputs == []
    w = consent(-10 * SEC, status="WITHDRAWN", data_categories=["user"])
    findings, amendments = split(feed(engine, [w]))
    assert findings == []
    assert [(a.kind, a.finding_id, a.evidence_event_ids) for a in amendments] == [
        ("WOULD_RAISE", sha(DISCLOSURE, v["event_id"]), ids(v, w))]


def test_late_grant_before_a_view_retracts_a_disclosure() -> None:
    v = viewed(0, data_disclosed=["user.workplace"])
    engine, outputs = past_decided(notice(0, notice_kind="PROFILE_VIEW"), v)
    assert [f.rule for f in split(outputs)[0]] == [DISCLOSURE]
    g = consent(-10 * SEC, data_categories=["user"])
    findings, amendments = split(feed(engine, [g]))
    assert findings == []
    assert [(a.kind, a.finding_id) for a in amendments] == [
        ("RETRACTED", sha(DISCLOSURE, v["event_id"]))]


def test_late_consent_after_a_view_changes_no_disclosure() -> None:
    v = viewed(0, data_disclosed=["user.workplace"])
    engine, _ = past_decided(notice(0, notice_kind="PROFILE_VIEW"), v)
    feed(engine, [joined(2 * GRACE, subject_id="u-other")])
    findings, amendments = split(feed(engine, [consent(10 * SEC, data_categories=["user"])]))
    assert (findings, amendments) == ([], [])


@TIE_CASES
def test_disclosure_the_narrower_grant_decides_at_the_same_millisecond(
    restrictive_first: bool, restrictive_id: str, at: int
) -> None:
    """Of two grants at one millisecond, the one that leaves what the view shows
    uncovered decides (the more restrictive), whatever the order or the ids."""
    other_id = "z" if restrictive_id == "a" else "a"
    narrow = consent(at - 10 * SEC, event_id=f"c-{restrictive_id}-narrow",
                     data_categories=["user.name"])
    wide = consent(at - 10 * SEC, event_id=f"c-{other_id}-wide", data_categories=["user"])
    pair = [narrow, wide] if restrictive_first else [wide, narrow]
    findings, v = _view_rules(*pair, data_disclosed=["user.name", "user.workplace"])
    assert one(findings, DISCLOSURE, v).evidence_event_ids == ids(v, narrow)
