"""`covert-profile-view` (spec: "Rules"), firing and not firing, at its boundaries.

Each test builds a tiny stream with `tests.builders`, runs it through the engine
to the end (flush), and checks which findings came out, with which evidence.
"""

from __future__ import annotations

import pytest

from tests.builders import (
    GRACE,
    SEC,
    SUBJECT,
    VALIDITY,
    joined,
    matched,
    notice,
    run,
    viewed,
)
from tests.engine.rules.cases import (
    COVERT_VIEW,
    ids,
    one,
    rules_of,
    shared,
)

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
