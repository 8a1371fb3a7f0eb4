"""`enrichment-without-consent` (spec: "Rules"), firing and not firing, at its boundaries.

Each test builds a tiny stream with `tests.builders`, runs it through the engine
to the end (flush), and checks which findings came out, with which evidence.
"""

from __future__ import annotations

import pytest

from tests.builders import (
    PROVIDER,
    SEC,
    T0,
    consent,
    requested,
    run,
)
from tests.engine.rules.cases import (
    TIE_CASES,
    WITHOUT_CONSENT,
    covered,
    ids,
    one,
    rules_of,
)

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


@TIE_CASES
def test_a_lapsed_grant_beats_one_in_force_at_the_same_millisecond(
    restrictive_first: bool, restrictive_id: str, at: int
) -> None:
    """Spec: at equal times the more restrictive event decides; a grant expired at the
    request's time leaves no consent in force, whatever the order or the ids."""
    other_id = "z" if restrictive_id == "a" else "a"
    lapsed = consent(at - 60 * SEC, event_id=f"c-{restrictive_id}-lapsed", expires_at=T0 - 1)
    open_ = consent(at - 60 * SEC, event_id=f"c-{other_id}-open")
    r = requested(0)
    pair = [lapsed, open_] if restrictive_first else [open_, lapsed]
    findings, _, _ = run([*covered(), *pair, r])
    assert one(findings, WITHOUT_CONSENT, r).evidence_event_ids == ids(r, lapsed)
