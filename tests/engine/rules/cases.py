"""What the tests of each rule share: the rule ids, their severities, and small
helpers to pick findings and set up quiet surroundings."""

from __future__ import annotations

import hashlib

import pytest

from streams.model.findings import Finding
from tests.builders import (
    DAY,
    LATENESS,
    SEC,
    consent,
    feed,
    joined,
    make_engine,
    notice,
    requested,
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


TIE_CASES = pytest.mark.parametrize(
    ("restrictive_first", "restrictive_id", "at"),
    [
        (first, rid, at)
        for first in (True, False)          # both arrival orders
        for rid in ("a", "z")               # the restrictive event's id sorts first or last
        for at in (-5 * SEC, 0)             # before the request, or at its very millisecond
    ],
)


def automatic(at: int = 0, **overrides: object) -> dict:
    return requested(at, trigger="AUTOMATIC", requested_by=None, **overrides)


def past_decided(*records: dict) -> tuple[object, list]:
    """Feed records in time order, then push the watermark 1 ms past T0.

    The past rules of triggers at T0 are then decided, and nothing so far was late.
    """
    engine = make_engine()
    in_order = sorted(records, key=lambda e: e["occurred_at"])
    outputs = feed(engine, [*in_order, joined(LATENESS + 1, subject_id="u-other")])
    assert engine.stats.late == 0
    return engine, outputs
