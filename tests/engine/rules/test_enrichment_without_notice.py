"""`enrichment-without-notice` (spec: "Rules"), firing and not firing, at its boundaries.

Each test builds a tiny stream with `tests.builders`, runs it through the engine
to the end (flush), and checks which findings came out, with which evidence.
"""

from __future__ import annotations

import pytest

from tests.builders import (
    DAY,
    GRACE,
    SEC,
    VALIDITY,
    consent,
    notice,
    requested,
    run,
)
from tests.engine.rules.cases import (
    WITHOUT_NOTICE,
    ids,
    one,
    rules_of,
)

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
