"""Tiny factories for events in the spec's JSON Lines form, and a driver for the engine.

Every factory takes `at`, an offset in milliseconds from `T0`, and keyword
overrides for any field (including `event_id`). Defaults describe one meeting
`m1` of account `acct1`, where `u-bob` looks at participant `u-alice` through
the `linkedin_sales_navigator` integration.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from streams.engine import DictStore, Engine, EngineParams
from streams.model.findings import Amendment, Finding
from streams.model.validate import event_from_record

SEC = 1_000
MIN = 60 * SEC
DAY = 86_400_000
T0 = 1_772_445_600_000  # 2026-03-02T10:00:00Z

LATENESS = 30 * SEC
GRACE = 300 * SEC
VALIDITY = 365 * DAY

ACCOUNT = "acct1"
MEETING = "m1"
SUBJECT = "u-alice"
VIEWER = "u-bob"
PROVIDER = "linkedin_sales_navigator"
USE = "third_party_sharing.enrichment"

Record = dict[str, Any]
_ids = itertools.count(1)


def _event(kind: str, prefix: str, at: int, fields: Record, overrides: Record) -> Record:
    record: Record = {"type": kind, "event_id": f"{prefix}{next(_ids)}", "occurred_at": T0 + at}
    record.update(fields)
    record.update(overrides)
    return record


def joined(at: int = 0, **overrides: Any) -> Record:
    return _event("ParticipantJoined", "j", at, {
        "account_id": ACCOUNT, "meeting_id": MEETING, "subject_id": SUBJECT,
        "display_name": "Alice Liddell", "email": None, "is_guest": False,
    }, overrides)


def requested(at: int = 0, **overrides: Any) -> Record:
    return _event("EnrichmentRequested", "r", at, {
        "account_id": ACCOUNT, "meeting_id": MEETING, "subject_id": SUBJECT,
        "provider": PROVIDER, "data_use": USE, "data_sent": ["user.name", "user.contact.email"],
        "trigger": "USER_ACTION", "requested_by": VIEWER,
    }, overrides)


def matched(at: int = 0, **overrides: Any) -> Record:
    return _event("EnrichmentMatched", "m", at, {
        "account_id": ACCOUNT, "meeting_id": MEETING, "subject_id": SUBJECT,
        "provider": PROVIDER, "request_event_id": "r0", "matched": True,
        "profile_name": "Alice Liddell",
        "data_returned": ["user.name", "user.workplace", "user.job_title"],
    }, overrides)


def viewed(at: int = 0, **overrides: Any) -> Record:
    return _event("ProfileViewed", "v", at, {
        "account_id": ACCOUNT, "meeting_id": MEETING, "subject_id": SUBJECT,
        "viewer_id": VIEWER, "provider": PROVIDER,
        "data_disclosed": ["user.name", "user.workplace", "user.job_title"],
    }, overrides)


def consent(at: int = 0, **overrides: Any) -> Record:
    return _event("ConsentChanged", "c", at, {
        "subject_id": SUBJECT, "consent_record_id": "cr-1", "data_use": USE,
        "provider": None, "status": "GRANTED",
        "data_categories": ["user.name", "user.contact.email"],
        "expires_at": None, "notice_version": None, "jurisdiction": None,
    }, overrides)


def notice(at: int = 0, **overrides: Any) -> Record:
    return _event("NoticeDelivered", "n", at, {
        "account_id": ACCOUNT, "subject_id": SUBJECT, "meeting_id": MEETING,
        "notice_kind": "ENRICHMENT", "provider": PROVIDER, "channel": "in_meeting",
        "notice_version": "v3",
    }, overrides)


def toggle(at: int = 0, **overrides: Any) -> Record:
    return _event("FeatureToggled", "t", at, {
        "account_id": ACCOUNT, "meeting_id": None, "provider": PROVIDER,
        "enabled": True, "actor_id": "host1",
    }, overrides)


def make_engine(**params: Any) -> Engine:
    """An engine with the spec's default lateness and grace, a fixed clock, and `params`."""
    settings = {"allowed_lateness_ms": LATENESS, "notice_grace_ms": GRACE, **params}
    return Engine(DictStore(), EngineParams(**settings), clock=lambda: T0)


def feed(engine: Engine, records: Iterable[Record]) -> list[Finding | Amendment]:
    outputs: list[Finding | Amendment] = []
    for record in records:
        outputs += engine.process(event_from_record(record))
    return outputs


def split(outputs: Iterable[object]) -> tuple[list[Finding], list[Amendment]]:
    outputs = list(outputs)
    return ([o for o in outputs if isinstance(o, Finding)],
            [o for o in outputs if isinstance(o, Amendment)])


def run(records: Iterable[Record], **params: Any
        ) -> tuple[list[Finding], list[Amendment], Engine]:
    """Feed `records` in the given order, flush, and return (findings, amendments, engine)."""
    engine = make_engine(**params)
    outputs = feed(engine, records)
    outputs += engine.flush()
    findings, amendments = split(outputs)
    return findings, amendments, engine
