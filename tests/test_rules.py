"""Every rule of the catalogue (spec: "Rules"), firing and not firing, at its boundaries.

Each test builds a tiny stream with `tests.builders`, runs it through the engine
to the end (flush), and checks which findings came out, with which evidence.
"""

from __future__ import annotations

import hashlib

import pytest

from streams.engine.core import NEVER, Engine
from streams.engine.state import DictStore
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
    VALIDITY,
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

WITHOUT_CONSENT = "enrichment-without-consent"
EXCEEDS_CONSENT = "enrichment-exceeds-consent"
WITHOUT_NOTICE = "enrichment-without-notice"
COVERT_VIEW = "covert-profile-view"
PSEUDONYM = "pseudonym-deanonymized"
FEATURE_INACTIVE = "automatic-egress-feature-inactive"
DISCLOSURE = "disclosure-without-consent"

SEVERITY = {
    WITHOUT_CONSENT: "HIGH",
    EXCEEDS_CONSENT: "MEDIUM",
    WITHOUT_NOTICE: "MEDIUM",
    COVERT_VIEW: "HIGH",
    PSEUDONYM: "CRITICAL",
    FEATURE_INACTIVE: "HIGH",
    DISCLOSURE: "HIGH",
}


def sha(rule: str, trigger: str) -> str:
    return hashlib.sha256(f"{rule}|{trigger}".encode()).hexdigest()


def rules_of(findings: list[Finding], trigger: dict) -> set[str]:
    return {f.rule for f in findings if f.trigger_event_id == trigger["event_id"]}


def one(findings: list[Finding], rule: str, trigger: dict) -> Finding:
    hits = [f for f in findings if f.rule == rule and f.trigger_event_id == trigger["event_id"]]
    assert len(hits) == 1, f"expected one {rule} for {trigger['event_id']}, got {findings}"
    return hits[0]


def ids(*records: dict) -> tuple[str, ...]:
    return tuple(r["event_id"] for r in records)


def shared() -> dict:
    """A standing grant that covers every user category a view can show, a day before T0:
    `disclosure-without-consent` stays quiet in the view tests about other rules."""
    return consent(-DAY, event_id="c-shared", data_categories=["user"])


def covered() -> list[dict]:
    """Standing notices of both kinds, a day before T0 (and before anything else a test
    feeds): the notice rules stay quiet in the consent and feature tests."""
    return [notice(-DAY, meeting_id=None), notice(-DAY, meeting_id=None,
                                                  notice_kind="PROFILE_VIEW")]


# -- enrichment-without-consent ---------------------------------------------------------


def test_without_consent_fires_when_no_consent_was_ever_recorded() -> None:
    r = requested()
    findings, _, _ = run([*covered(), r])
    f = one(findings, WITHOUT_CONSENT, r)
    assert f.evidence_event_ids == ids(r)
    assert f.severity == "HIGH"


def test_granted_consent_in_force_does_not_fire() -> None:
    c, r = consent(-10 * SEC), requested()
    findings, _, _ = run([*covered(), c, r])
    assert findings == []


def test_consent_at_the_same_millisecond_as_the_request_is_in_force() -> None:
    c, r = consent(0), requested(0)
    findings, _, _ = run([*covered(), c, r])
    assert WITHOUT_CONSENT not in rules_of(findings, r)


def test_consent_after_the_request_does_not_count() -> None:
    r, c = requested(0), consent(1)
    findings, _, _ = run([*covered(), r, c])
    assert one(findings, WITHOUT_CONSENT, r).evidence_event_ids == ids(r)


def test_withdrawal_fires_with_the_withdrawal_as_evidence() -> None:
    g = consent(-60 * SEC)
    w = consent(-30 * SEC, status="WITHDRAWN")
    r = requested()
    findings, _, _ = run([*covered(), g, w, r])
    assert one(findings, WITHOUT_CONSENT, r).evidence_event_ids == ids(r, w)


def test_grant_after_a_withdrawal_is_in_force_again() -> None:
    w = consent(-60 * SEC, status="WITHDRAWN")
    g = consent(-30 * SEC)
    r = requested()
    findings, _, _ = run([*covered(), w, g, r])
    assert findings == []


def test_consent_of_another_subject_does_not_count() -> None:
    c = consent(-10 * SEC, subject_id="u-other")
    r = requested()
    findings, _, _ = run([*covered(), c, r])
    assert one(findings, WITHOUT_CONSENT, r).evidence_event_ids == ids(r)


def test_grant_expiring_exactly_at_the_request_is_not_in_force() -> None:
    g = consent(-60 * SEC, expires_at=T0)
    r = requested(0)
    findings, _, _ = run([*covered(), g, r])
    assert one(findings, WITHOUT_CONSENT, r).evidence_event_ids == ids(r, g)


def test_grant_expiring_one_ms_after_the_request_is_in_force() -> None:
    g = consent(-60 * SEC, expires_at=T0 + 1)
    r = requested(0)
    findings, _, _ = run([*covered(), g, r])
    assert findings == []


TIE_CASES = pytest.mark.parametrize(
    ("restrictive_first", "restrictive_id", "at"),
    [
        (first, rid, at)
        for first in (True, False)          # both arrival orders
        for rid in ("a", "z")               # the restrictive event's id sorts first or last
        for at in (-5 * SEC, 0)             # before the request, or at its very millisecond
    ],
)


@TIE_CASES
@pytest.mark.parametrize("same_provider", [True, False], ids=["same-key", "null-vs-provider"])
def test_withdrawal_beats_grant_at_the_same_millisecond(
    restrictive_first: bool, restrictive_id: str, at: int, same_provider: bool
) -> None:
    other_id = "z" if restrictive_id == "a" else "a"
    w = consent(at, status="WITHDRAWN", event_id=f"c-{restrictive_id}-withdrawn")
    g = consent(at, event_id=f"c-{other_id}-granted",
                provider=None if same_provider else PROVIDER)
    r = requested(0)
    pair = [w, g] if restrictive_first else [g, w]
    # At the request's millisecond the request itself arrives first.
    stream = [r, *pair] if at == 0 else [*pair, r]
    findings, _, _ = run([*covered(), *stream])
    assert one(findings, WITHOUT_CONSENT, r).evidence_event_ids == ids(r, w)


@pytest.mark.parametrize(
    ("null_status", "null_at", "provider_status", "provider_at", "fires"),
    [
        ("GRANTED", -20, "WITHDRAWN", -10, True),   # provider-specific withdrawal is later
        ("WITHDRAWN", -20, "GRANTED", -10, False),  # provider-specific grant is later
        ("GRANTED", -10, "WITHDRAWN", -20, False),  # the any-provider grant is later
        ("WITHDRAWN", -10, "GRANTED", -20, True),   # the any-provider withdrawal is later
    ],
)
def test_latest_of_provider_specific_and_any_provider_consent_wins(
    null_status: str, null_at: int, provider_status: str, provider_at: int, fires: bool
) -> None:
    any_provider = consent(null_at * SEC, status=null_status, provider=None)
    specific = consent(provider_at * SEC, status=provider_status, provider=PROVIDER)
    r = requested()
    findings, _, _ = run([*covered(), any_provider, specific, r])
    if fires:
        deciding = any_provider if null_at > provider_at else specific
        assert one(findings, WITHOUT_CONSENT, r).evidence_event_ids == ids(r, deciding)
    else:
        assert findings == []


def test_consent_for_another_provider_does_not_count() -> None:
    g = consent(-10 * SEC, provider="apollo")
    r = requested()
    findings, _, _ = run([*covered(), g, r])
    assert one(findings, WITHOUT_CONSENT, r).evidence_event_ids == ids(r)


def test_withdrawal_for_another_provider_does_not_override() -> None:
    g = consent(-20 * SEC, provider=None)
    w = consent(-10 * SEC, provider="apollo", status="WITHDRAWN")
    r = requested()
    findings, _, _ = run([*covered(), g, w, r])
    assert findings == []


@pytest.mark.parametrize(
    ("consent_use", "in_force"),
    [
        ("third_party_sharing.enrichment", True),
        ("third_party_sharing", True),        # a dotted parent covers
        ("third_party", False),                # a string prefix, not a dotted parent
        ("third_party_sharing.enrich", False),
        ("third_party_sharing.enrichment.profiles", False),  # narrower does not cover
        ("analytics", False),
    ],
)
def test_consent_data_use_must_cover_the_request_data_use(consent_use: str,
                                                          in_force: bool) -> None:
    g = consent(-10 * SEC, data_use=consent_use)
    r = requested()
    findings, _, _ = run([*covered(), g, r])
    assert (WITHOUT_CONSENT in rules_of(findings, r)) is not in_force


def test_withdrawal_under_a_parent_data_use_decides() -> None:
    g = consent(-20 * SEC, data_use="third_party_sharing.enrichment")
    w = consent(-10 * SEC, data_use="third_party_sharing", status="WITHDRAWN")
    r = requested()
    findings, _, _ = run([*covered(), g, w, r])
    assert one(findings, WITHOUT_CONSENT, r).evidence_event_ids == ids(r, w)


# -- enrichment-exceeds-consent ---------------------------------------------------------


def test_exceeds_fires_for_a_category_outside_the_scope() -> None:
    g = consent(-10 * SEC, data_categories=["user.name"])
    r = requested(data_sent=["user.name", "user.contact.email"])
    findings, _, _ = run([*covered(), g, r])
    f = one(findings, EXCEEDS_CONSENT, r)
    assert f.evidence_event_ids == ids(r, g)
    assert f.severity == "MEDIUM"
    assert rules_of(findings, r) == {EXCEEDS_CONSENT}


@pytest.mark.parametrize(
    ("scope", "sent", "fires"),
    [
        (["user.name", "user.contact.email"], ["user.name", "user.contact.email"], False),
        (["user.contact"], ["user.contact.email"], False),  # dotted parent covers
        (["user"], ["user.name", "user.contact.email", "user.job_title"], False),
        (["user.con"], ["user.contact.email"], True),       # string prefix only
        (["user.contact.email"], ["user.contact"], True),   # narrower does not cover
        (["user.name"], [], False),
        ([], ["user.name"], True),
    ],
)
def test_exceeds_uses_dotted_coverage(scope: list[str], sent: list[str], fires: bool) -> None:
    g = consent(-10 * SEC, data_categories=scope)
    r = requested(data_sent=sent)
    findings, _, _ = run([*covered(), g, r])
    assert (EXCEEDS_CONSENT in rules_of(findings, r)) is fires
    assert WITHOUT_CONSENT not in rules_of(findings, r)


def test_exceeds_uses_the_scope_of_the_consent_in_force() -> None:
    wide = consent(-20 * SEC, data_categories=["user"])
    narrow = consent(-10 * SEC, data_categories=["user.name"])
    r = requested(data_sent=["user.name", "user.contact.email"])
    findings, _, _ = run([*covered(), wide, narrow, r])
    assert one(findings, EXCEEDS_CONSENT, r).evidence_event_ids == ids(r, narrow)


def test_no_exceeds_without_consent_in_force() -> None:
    w = consent(-10 * SEC, status="WITHDRAWN", data_categories=[])
    r = requested(data_sent=["user.job_title"])
    findings, _, _ = run([*covered(), w, r])
    assert rules_of(findings, r) == {WITHOUT_CONSENT}


# -- enrichment-without-notice ----------------------------------------------------------


def _with_consent(*records: dict) -> list[dict]:
    return [consent(-DAY), *records]


def test_without_notice_fires_when_nobody_was_told() -> None:
    r = requested()
    findings, _, _ = run(_with_consent(r))
    f = one(findings, WITHOUT_NOTICE, r)
    assert f.evidence_event_ids == ids(r)
    assert f.severity == "MEDIUM"
    assert rules_of(findings, r) == {WITHOUT_NOTICE}


@pytest.mark.parametrize(
    ("offset", "counts"),
    [
        (GRACE, True),            # exactly at the grace counts
        (GRACE + 1, False),       # one ms more does not
        (0, True),
        (-VALIDITY, True),        # exactly notice_validity before counts
        (-VALIDITY - 1, False),   # one ms more does not
    ],
)
def test_enrichment_notice_window_boundaries(offset: int, counts: bool) -> None:
    r = requested(0)
    n = notice(offset)
    findings, _, _ = run(sorted(_with_consent(r, n), key=lambda e: e["occurred_at"]))
    assert (WITHOUT_NOTICE in rules_of(findings, r)) is not counts


def test_notice_window_follows_the_parameters() -> None:
    r = requested(0)
    inside, outside = notice(10 * SEC), notice(-(60 * SEC) - 1)
    findings, _, _ = run(_with_consent(outside, r, inside),
                         notice_grace_ms=10 * SEC, notice_validity_ms=60 * SEC)
    assert WITHOUT_NOTICE not in rules_of(findings, r)
    r2 = requested(0)
    findings, _, _ = run(_with_consent(outside, r2, notice(10 * SEC + 1)),
                         notice_grace_ms=10 * SEC, notice_validity_ms=60 * SEC)
    assert WITHOUT_NOTICE in rules_of(findings, r2)


@pytest.mark.parametrize(
    ("overrides", "counts"),
    [
        ({}, True),
        ({"provider": None}, True),                          # any provider
        ({"meeting_id": None}, True),                        # a standing notice
        ({"meeting_id": None, "provider": None}, True),
        ({"provider": "apollo"}, False),                     # another provider
        ({"meeting_id": "m2"}, False),                       # another meeting
        ({"notice_kind": "PROFILE_VIEW"}, False),            # another kind
        ({"subject_id": "u-other"}, False),                  # another person
    ],
)
def test_enrichment_notice_must_match_provider_meeting_and_kind(overrides: dict,
                                                                counts: bool) -> None:
    r = requested(0)
    n = notice(5 * SEC, **overrides)
    findings, _, _ = run(_with_consent(r, n))
    assert (WITHOUT_NOTICE in rules_of(findings, r)) is not counts


# -- covert-profile-view ----------------------------------------------------------------


def test_covert_view_fires_without_a_profile_view_notice() -> None:
    v = viewed(data_disclosed=["user.workplace"])
    findings, _, _ = run([shared(), v])
    f = one(findings, COVERT_VIEW, v)
    assert f.evidence_event_ids == ids(v)
    assert f.severity == "HIGH"
    assert rules_of(findings, v) == {COVERT_VIEW}


@pytest.mark.parametrize(
    ("offset", "overrides", "counts"),
    [
        (5 * SEC, {}, True),
        (GRACE, {}, True),
        (GRACE + 1, {}, False),
        (-VALIDITY, {}, True),
        (-VALIDITY - 1, {}, False),
        (5 * SEC, {"provider": None, "meeting_id": None}, True),
        (5 * SEC, {"provider": "apollo"}, False),
        (5 * SEC, {"meeting_id": "m2"}, False),
        (5 * SEC, {"notice_kind": "ENRICHMENT"}, False),
    ],
)
def test_profile_view_notice(offset: int, overrides: dict, counts: bool) -> None:
    v = viewed(0, data_disclosed=["user.workplace"])
    n = notice(offset, **{"notice_kind": "PROFILE_VIEW", **overrides})
    findings, _, _ = run(sorted([v, n], key=lambda e: e["occurred_at"]))
    assert (COVERT_VIEW in rules_of(findings, v)) is not counts


def test_viewing_ones_own_profile_raises_neither_view_rule() -> None:
    j = joined(-60 * SEC, display_name="Night Owl")
    m = matched(-50 * SEC, profile_name="Rowan Vale")
    v = viewed(0, viewer_id=SUBJECT)
    findings, _, _ = run([j, m, v])
    assert findings == []


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
    engine, outputs = _past_decided(g, notice(0, notice_kind="PROFILE_VIEW"), v)
    assert outputs == []
    w = consent(-10 * SEC, status="WITHDRAWN", data_categories=["user"])
    findings, amendments = split(feed(engine, [w]))
    assert findings == []
    assert [(a.kind, a.finding_id, a.evidence_event_ids) for a in amendments] == [
        ("WOULD_RAISE", sha(DISCLOSURE, v["event_id"]), ids(v, w))]


def test_late_grant_before_a_view_retracts_a_disclosure() -> None:
    v = viewed(0, data_disclosed=["user.workplace"])
    engine, outputs = _past_decided(notice(0, notice_kind="PROFILE_VIEW"), v)
    assert [f.rule for f in split(outputs)[0]] == [DISCLOSURE]
    g = consent(-10 * SEC, data_categories=["user"])
    findings, amendments = split(feed(engine, [g]))
    assert findings == []
    assert [(a.kind, a.finding_id) for a in amendments] == [
        ("RETRACTED", sha(DISCLOSURE, v["event_id"]))]


def test_late_consent_after_a_view_changes_no_disclosure() -> None:
    v = viewed(0, data_disclosed=["user.workplace"])
    engine, _ = _past_decided(notice(0, notice_kind="PROFILE_VIEW"), v)
    feed(engine, [joined(2 * GRACE, subject_id="u-other")])
    findings, amendments = split(feed(engine, [consent(10 * SEC, data_categories=["user"])]))
    assert (findings, amendments) == ([], [])


# -- pseudonym-deanonymized -------------------------------------------------------------


def _pseudonym_case(display: str, profile: str, **view: object) -> tuple[list[Finding], dict]:
    j = joined(-60 * SEC, display_name=display)
    m = matched(-50 * SEC, profile_name=profile)
    v = viewed(0, **view)
    findings, _, _ = run([j, m, v])
    return findings, v


def test_pseudonym_fires_with_join_match_and_view_as_evidence() -> None:
    j = joined(-60 * SEC, display_name="Night Owl")
    m = matched(-50 * SEC, profile_name="Rowan Vale")
    v = viewed(0)
    findings, _, _ = run([j, m, v])
    f = one(findings, PSEUDONYM, v)
    assert f.evidence_event_ids == ids(j, m, v)
    assert f.severity == "CRITICAL"


@pytest.mark.parametrize(
    ("display", "profile", "pseudonym"),
    [
        ("zoe", "Zoë Müller", False),          # the spec's example: they share "zoe"
        ("Night Owl", "Zoë Müller", True),     # the spec's example: nothing shared
        ("Zoë Müller", "ZOE MULLER", False),
        ("Straße", "Max Strasse", False),      # casefold
        ("Ｒｏｗａｎ", "Rowan Vale", False),    # NFKD: full-width letters
        ("R V", "Rowan Vale", True),           # one-letter tokens are ignored
        ("R. Vale", "Rowan Vale", False),
        ("J", "J Smith", True),                # "j" is no token, so nothing is shared
        ("rowan.vale", "Rowan Vale", False),   # punctuation splits
        ("Jean-Luc", "Luc Picard", False),
        ("O'Neil", "Shaq O'Neal", True),       # "o" is dropped; "neil" != "neal"
        ("vale_", "Rowan Vale", False),        # "_" is not a letter or digit
        ("Agent 47", "47 Smith", False),       # digits are tokens
        ("Alice Liddell", "Alice Liddell", False),
        ("राम", "राम", False),                 # Devanagari: the vowel sign is a mark, dropped
    ],
)
def test_pseudonym_tokenisation(display: str, profile: str, pseudonym: bool) -> None:
    findings, v = _pseudonym_case(display, profile)
    assert (PSEUDONYM in rules_of(findings, v)) is pseudonym


def test_later_failed_match_does_not_undo_an_earlier_named_match() -> None:
    j = joined(-60 * SEC, display_name="Night Owl")
    m = matched(-50 * SEC, profile_name="Rowan Vale")
    failed = matched(-40 * SEC, matched=False, profile_name=None)
    unnamed = matched(-30 * SEC, matched=True, profile_name=None)
    v = viewed(0)
    findings, _, _ = run([j, m, failed, unnamed, v])
    assert one(findings, PSEUDONYM, v).evidence_event_ids == ids(j, m, v)


def test_failed_match_with_a_profile_name_is_not_a_match() -> None:
    j = joined(-60 * SEC, display_name="Night Owl")
    failed = matched(-50 * SEC, matched=False, profile_name="Rowan Vale")
    v = viewed(0)
    findings, _, _ = run([j, failed, v])
    assert PSEUDONYM not in rules_of(findings, v)


def test_latest_named_match_decides() -> None:
    j = joined(-60 * SEC, display_name="Night Owl")
    m1 = matched(-50 * SEC, profile_name="Rowan Vale")
    m2 = matched(-40 * SEC, profile_name="Night Owl")
    v = viewed(0)
    findings, _, _ = run([j, m1, m2, v])
    assert PSEUDONYM not in rules_of(findings, v)
    j, m1, m2, v = (joined(-60 * SEC, display_name="Night Owl"),
                    matched(-50 * SEC, profile_name="Night Owl"),
                    matched(-40 * SEC, profile_name="Rowan Vale"), viewed(0))
    findings, _, _ = run([j, m1, m2, v])
    assert one(findings, PSEUDONYM, v).evidence_event_ids == ids(j, m2, v)


def test_latest_join_in_the_view_meeting_decides() -> None:
    j1 = joined(-60 * SEC, display_name="Rowan Vale")
    j2 = joined(-55 * SEC, display_name="Night Owl")
    elsewhere = joined(-52 * SEC, display_name="Rowan Vale", meeting_id="m2")
    m = matched(-50 * SEC, profile_name="Rowan Vale")
    v = viewed(0)
    findings, _, _ = run([j1, j2, elsewhere, m, v])
    assert one(findings, PSEUDONYM, v).evidence_event_ids == ids(j2, m, v)


def test_join_in_another_meeting_does_not_count() -> None:
    j = joined(-60 * SEC, display_name="Night Owl", meeting_id="m2")
    m = matched(-50 * SEC, profile_name="Rowan Vale")
    v = viewed(0)
    findings, _, _ = run([j, m, v])
    assert PSEUDONYM not in rules_of(findings, v)


def test_match_for_another_provider_does_not_count() -> None:
    j = joined(-60 * SEC, display_name="Night Owl")
    m = matched(-50 * SEC, profile_name="Rowan Vale", provider="apollo")
    v = viewed(0)
    findings, _, _ = run([j, m, v])
    assert PSEUDONYM not in rules_of(findings, v)


def test_match_in_another_meeting_of_the_same_provider_counts() -> None:
    j = joined(-60 * SEC, display_name="Night Owl")
    m = matched(-50 * SEC, profile_name="Rowan Vale", meeting_id="m0")
    v = viewed(0)
    findings, _, _ = run([j, m, v])
    assert one(findings, PSEUDONYM, v).evidence_event_ids == ids(j, m, v)


def test_join_and_match_after_the_view_do_not_count() -> None:
    v = viewed(0)
    j = joined(1, display_name="Night Owl")
    m = matched(2, profile_name="Rowan Vale")
    findings, _, _ = run([v, j, m])
    assert PSEUDONYM not in rules_of(findings, v)


def test_join_and_match_at_the_view_millisecond_count() -> None:
    j = joined(0, display_name="Night Owl")
    m = matched(0, profile_name="Rowan Vale")
    v = viewed(0)
    findings, _, _ = run([j, m, v])
    assert one(findings, PSEUDONYM, v).evidence_event_ids == ids(j, m, v)


@pytest.mark.parametrize("missing", ["join", "match"])
def test_pseudonym_needs_both_join_and_match(missing: str) -> None:
    records = [joined(-60 * SEC, display_name="Night Owl"),
               matched(-50 * SEC, profile_name="Rowan Vale")]
    records.pop(0 if missing == "join" else 1)
    v = viewed(0)
    findings, _, _ = run([*records, v])
    assert PSEUDONYM not in rules_of(findings, v)


@pytest.mark.parametrize(
    ("disclosed", "fires"),
    [
        (["user.name"], True),
        (["user.workplace", "user.name"], True),
        (["user.name.last"], True),                     # user.name covers it
        (["user.workplace", "user.job_title"], False),  # no name disclosed
        (["user.nam"], False),                          # a string prefix, not covered
        (["user.name_pronunciation"], False),
        (["user"], False),                              # user.name does not cover `user`
        ([], False),
    ],
)
def test_pseudonym_needs_a_disclosed_category_covered_by_user_name(disclosed: list[str],
                                                                    fires: bool) -> None:
    findings, v = _pseudonym_case("Night Owl", "Rowan Vale", data_disclosed=disclosed)
    assert (PSEUDONYM in rules_of(findings, v)) is fires
    assert COVERT_VIEW in rules_of(findings, v)


def test_pseudonym_not_raised_for_ones_own_view() -> None:
    findings, v = _pseudonym_case("Night Owl", "Rowan Vale", viewer_id=SUBJECT)
    assert rules_of(findings, v) == set()


# -- automatic-egress-feature-inactive --------------------------------------------------


def _auto(at: int = 0, **overrides: object) -> dict:
    return requested(at, trigger="AUTOMATIC", requested_by=None, **overrides)


def _quiet(*records: dict) -> list[dict]:
    """Consent and notice in place, so only the feature rule can speak."""
    return [consent(-DAY), *covered(), *records]


def test_automatic_request_with_the_feature_never_turned_on_fires() -> None:
    r = _auto()
    findings, _, _ = run(_quiet(r))
    f = one(findings, FEATURE_INACTIVE, r)
    assert f.evidence_event_ids == ids(r)
    assert f.severity == "HIGH"
    assert rules_of(findings, r) == {FEATURE_INACTIVE}


def test_user_action_request_is_not_judged_by_the_feature_rule() -> None:
    r = requested(trigger="USER_ACTION")
    findings, _, _ = run(_quiet(toggle(-10 * SEC, enabled=False), r))
    assert findings == []


def test_account_wide_enabled_feature_does_not_fire() -> None:
    r = _auto()
    findings, _, _ = run(_quiet(toggle(-10 * SEC), r))
    assert findings == []


@pytest.mark.parametrize(
    ("toggles", "deciding"),
    [
        # (meeting_id, enabled, at seconds); `deciding` indexes the toggle that fires, or None
        ([(None, True, -20), (None, False, -10)], 1),
        ([(None, False, -20), (None, True, -10)], None),
        ([(None, True, -20), (MEETING, False, -10)], 1),    # meeting-specific off, later
        ([(MEETING, False, -20), (None, True, -10)], None),  # account-wide on, later
        ([(None, False, -20), (MEETING, True, -10)], None),  # meeting-specific on, later
        ([(MEETING, True, -20), (None, False, -10)], 1),    # account-wide off, later
        ([(None, True, -20), ("m2", False, -10)], None),    # another meeting
        ([("m2", True, -10)], "none"),                      # only another meeting: never on
        ([(None, True, 1)], "none"),                        # after the request: not yet on
        ([(None, True, 0)], None),                          # at the request's millisecond
    ],
)
def test_feature_toggle_resolution(toggles: list[tuple], deciding: object) -> None:
    events = [toggle(at * SEC, meeting_id=meeting, enabled=enabled)
              for meeting, enabled, at in toggles]
    r = _auto(0)
    findings, _, _ = run(_quiet(*sorted([*events, r], key=lambda e: e["occurred_at"])))
    if deciding is None:
        assert FEATURE_INACTIVE not in rules_of(findings, r)
    elif deciding == "none":
        assert one(findings, FEATURE_INACTIVE, r).evidence_event_ids == ids(r)
    else:
        assert isinstance(deciding, int)
        assert one(findings, FEATURE_INACTIVE, r).evidence_event_ids == ids(r, events[deciding])


@pytest.mark.parametrize("overrides", [{"provider": "apollo"}, {"account_id": "acct2"}])
def test_toggle_for_another_provider_or_account_does_not_count(overrides: dict) -> None:
    r = _auto()
    findings, _, _ = run(_quiet(toggle(-10 * SEC, **overrides), r))
    assert one(findings, FEATURE_INACTIVE, r).evidence_event_ids == ids(r)


@TIE_CASES
@pytest.mark.parametrize("on_meeting", [None, MEETING], ids=["account-on", "meeting-on"])
def test_disabled_beats_enabled_at_the_same_millisecond(
    restrictive_first: bool, restrictive_id: str, at: int, on_meeting: str | None
) -> None:
    other_id = "z" if restrictive_id == "a" else "a"
    off = toggle(at, enabled=False, event_id=f"t-{restrictive_id}-off")
    on = toggle(at, enabled=True, meeting_id=on_meeting, event_id=f"t-{other_id}-on")
    r = _auto(0)
    pair = [off, on] if restrictive_first else [on, off]
    stream = [r, *pair] if at == 0 else [*pair, r]
    findings, _, _ = run(_quiet(*stream))
    assert one(findings, FEATURE_INACTIVE, r).evidence_event_ids == ids(r, off)


# -- findings in general -----------------------------------------------------------------


def test_automatic_request_without_consent_or_notice_raises_three_findings() -> None:
    r = _auto()
    findings, _, _ = run([r])
    assert sorted(f.rule for f in findings) == sorted(
        [WITHOUT_CONSENT, WITHOUT_NOTICE, FEATURE_INACTIVE])


def test_finding_fields_and_ids() -> None:
    j = joined(-60 * SEC, display_name="Night Owl")
    r = _auto(-55 * SEC)
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
    c, t, r = consent(-20 * SEC), toggle(-15 * SEC), _auto()
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
    r = _auto(0)
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


def _past_decided(*records: dict) -> tuple[object, list]:
    """Feed records in time order, then push the watermark 1 ms past T0.

    The past rules of triggers at T0 are then decided, and nothing so far was late.
    """
    engine = make_engine()
    in_order = sorted(records, key=lambda e: e["occurred_at"])
    outputs = feed(engine, [*in_order, joined(LATENESS + 1, subject_id="u-other")])
    assert engine.stats.late == 0
    return engine, outputs


def test_late_event_is_counted_only_when_older_than_the_watermark() -> None:
    engine = make_engine()
    feed(engine, [joined(LATENESS + 1, subject_id="u-other")])  # watermark T0 + 1
    feed(engine, [joined(1, subject_id="u-x")])
    assert engine.stats.late == 0
    feed(engine, [joined(0, subject_id="u-y")])
    assert engine.stats.late == 1


def test_late_grant_retracts_a_without_consent_finding() -> None:
    r = requested(0)
    engine, outputs = _past_decided(*covered(), r)
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
    engine, outputs = _past_decided(*covered(), g, r)
    assert outputs == []
    w = consent(-10 * SEC, status="WITHDRAWN")
    findings, amendments = split(feed(engine, [w]))
    assert findings == []
    assert [(a.kind, a.finding_id, a.evidence_event_ids) for a in amendments] == [
        ("WOULD_RAISE", sha(WITHOUT_CONSENT, r["event_id"]), ids(r, w))]
    assert split(engine.flush()) == ([], [])


def test_late_withdrawal_changes_the_evidence_of_a_raised_finding() -> None:
    r = requested(0)
    engine, _ = _past_decided(*covered(), r)
    w = consent(-10 * SEC, status="WITHDRAWN")
    findings, amendments = split(feed(engine, [w]))
    assert findings == []
    assert [(a.kind, a.finding_id, a.evidence_event_ids) for a in amendments] == [
        ("EVIDENCE_CHANGED", sha(WITHOUT_CONSENT, r["event_id"]), ids(r, w))]


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
    r = _auto(0)
    engine, outputs = _past_decided(consent(-DAY), *covered(), toggle(-60 * SEC), r)
    assert outputs == []
    off = toggle(-10 * SEC, enabled=False)
    findings, amendments = split(feed(engine, [off]))
    assert findings == []
    assert [(a.kind, a.finding_id, a.evidence_event_ids) for a in amendments] == [
        ("WOULD_RAISE", sha(FEATURE_INACTIVE, r["event_id"]), ids(r, off))]
    assert engine.stats.late == 1


def test_late_disabling_toggle_amends_every_subject_it_concerns() -> None:
    r1 = _auto(0)
    r2 = _auto(0, subject_id="u-carol")
    setup = [consent(-DAY), consent(-DAY, subject_id="u-carol"), *covered(),
             notice(-1 * SEC, subject_id="u-carol"), toggle(-60 * SEC)]
    engine, outputs = _past_decided(*setup, r1, r2)
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
    engine, outputs = _past_decided(shared(), notice(0, notice_kind="PROFILE_VIEW"), j1, m, v)
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
    engine, outputs = _past_decided(shared(), notice(0, notice_kind="PROFILE_VIEW"), j, m1, v)
    assert [f.rule for f in split(outputs)[0]] == [PSEUDONYM]
    m2 = matched(-20 * SEC, profile_name="Night Owl")
    findings, amendments = split(feed(engine, [m2]))
    assert findings == []
    assert [(a.kind, a.finding_id) for a in amendments] == [
        ("RETRACTED", sha(PSEUDONYM, v["event_id"]))]


def test_late_event_that_changes_nothing_is_counted_without_amendment() -> None:
    r = requested(0)
    engine, _ = _past_decided(*covered(), r)
    findings, amendments = split(feed(engine, [consent(-5 * SEC, provider="apollo"),
                                                joined(-5 * SEC)]))
    assert (findings, amendments) == ([], [])
    assert engine.stats.late == 2


def test_late_trigger_is_still_decided() -> None:
    engine, _ = _past_decided(*covered())
    r = requested(-10 * SEC)
    outputs = feed(engine, [r]) + engine.flush()
    findings, _ = split(outputs)
    assert engine.stats.late == 1
    assert rules_of(findings, r) == {WITHOUT_CONSENT}
