"""`automatic-egress-feature-inactive` (spec: "Rules"), firing and not firing, at its boundaries.

Each test builds a tiny stream with `tests.builders`, runs it through the engine
to the end (flush), and checks which findings came out, with which evidence.
"""

from __future__ import annotations

import pytest

from tests.builders import (
    DAY,
    MEETING,
    SEC,
    consent,
    requested,
    run,
    toggle,
)
from tests.engine.rules.cases import (
    FEATURE_INACTIVE,
    TIE_CASES,
    automatic,
    covered,
    ids,
    one,
    rules_of,
)

# -- automatic-egress-feature-inactive --------------------------------------------------



def _quiet(*records: dict) -> list[dict]:
    """Consent and notice in place, so only the feature rule can speak."""
    return [consent(-DAY), *covered(), *records]


def test_automatic_request_with_the_feature_never_turned_on_fires() -> None:
    r = automatic()
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
    r = automatic()
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
    r = automatic(0)
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
    r = automatic()
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
    r = automatic(0)
    pair = [off, on] if restrictive_first else [on, off]
    stream = [r, *pair] if at == 0 else [*pair, r]
    findings, _, _ = run(_quiet(*stream))
    assert one(findings, FEATURE_INACTIVE, r).evidence_event_ids == ids(r, off)
