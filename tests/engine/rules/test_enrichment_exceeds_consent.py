"""`enrichment-exceeds-consent` (spec: "Rules"), firing and not firing, at its boundaries.

Each test builds a tiny stream with `tests.builders`, runs it through the engine
to the end (flush), and checks which findings came out, with which evidence.
"""

from __future__ import annotations

import pytest

from tests.builders import (
    SEC,
    consent,
    requested,
    run,
)
from tests.engine.rules.cases import (
    EXCEEDS_CONSENT,
    TIE_CASES,
    WITHOUT_CONSENT,
    covered,
    ids,
    one,
    rules_of,
)

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


@TIE_CASES
def test_the_narrower_grant_decides_at_the_same_millisecond(
    restrictive_first: bool, restrictive_id: str, at: int
) -> None:
    """Spec: at equal times the more restrictive event decides: of two grants, the one
    whose scope leaves the request's categories uncovered, whatever the order or ids."""
    other_id = "z" if restrictive_id == "a" else "a"
    narrow = consent(at - 10 * SEC, event_id=f"c-{restrictive_id}-narrow",
                     data_categories=["user.name"])
    wide = consent(at - 10 * SEC, event_id=f"c-{other_id}-wide", data_categories=["user"])
    r = requested(data_sent=["user.name", "user.contact.email"])
    pair = [narrow, wide] if restrictive_first else [wide, narrow]
    findings, _, _ = run([*covered(), *pair, r])
    assert one(findings, EXCEEDS_CONSENT, r).evidence_event_ids == ids(r, narrow)
    assert WITHOUT_CONSENT not in rules_of(findings, r)
