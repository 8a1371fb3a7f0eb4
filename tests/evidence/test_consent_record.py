"""The consent record in force, per finding (issue 18, item 5): streams.evidence.consent_record,
consent_records.jsonl in the bundle (checked by verify), and the report's view of it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.evidence.consent_record import CONSENT_RULES, DPV, consent_record
from tests.conftest import EXAMPLES_DIR, run_cli

GRANT_AT, AT = 1772272800000, 1772359200000


def _replay(tmp_path: Path, example: str) -> dict[tuple[str, str], dict[str, Any]]:
    out = tmp_path / f"{example}.jsonl"
    done = run_cli("replay", str(EXAMPLES_DIR / example / "events.jsonl"), "--out", str(out),
                   "-q")
    assert done.returncode == 0, done.stderr
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    return {(r["rule"], r["trigger_event_id"]): r for r in records}


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict[str, Any]]:
    return _replay(tmp_path_factory.mktemp("seed"), "seed-scenario")


def test_each_rule_of_the_seed_scenario_gets_its_record(
        seed: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert {rule for rule, _ in seed} >= CONSENT_RULES - {"enrichment-exceeds-consent"}
    for (rule, _), finding in seed.items():
        record = consent_record(finding)
        assert record["data_subject"] == finding["subject_id"] == "u-reporter"
        assert record["at"] is not None
        if rule not in CONSENT_RULES:
            assert record["basis"] == "not-a-consent-rule"
            assert record["in_force"] is None and record["status"] is None
    # the seed scenario's subject never consented: none in force, said so explicitly
    request = consent_record(seed[("enrichment-without-consent", "e002")])
    assert request["basis"] == "no-consent-record" and request["in_force"] is False
    assert request["record_id"] is None and request["status_label"] == "none in force"
    assert request["purpose"] == seed[("enrichment-without-consent", "e002")]["evidence"][0][
        "data_use"]
    view = consent_record(seed[("disclosure-without-consent", "e004")])
    assert view["basis"] == "no-consent-record" and view["in_force"] is False
    assert view["purpose"] == "third_party_sharing.enrichment"


def test_a_withdrawal_decides_the_finding(tmp_path: Path) -> None:
    findings = _replay(tmp_path, "withdrawn-consent")
    record = consent_record(findings[("enrichment-without-consent", "e004")])
    assert record == record | {
        "basis": "deciding-consent", "record_id": "cr-u-carol-1", "event_id": "e002",
        "in_force": False, "data_subject": "u-carol",
        "purpose": "third_party_sharing.enrichment",
        "data_categories": ["user.name", "user.contact.email"], "recipient": None,
        "status": DPV + "ConsentWithdrawn", "status_label": "withdrawn",
        "provision_time": None, "withdrawal_time": "2026-03-01T10:00:00.000Z",
        "notice_version": None, "jurisdiction": None}
    assert record["notice_version_note"] == "the ConsentChanged event carries no notice_version"


def _consent(**changes: Any) -> dict[str, Any]:
    return {"type": "ConsentChanged", "event_id": "c1", "occurred_at": GRANT_AT,
            "subject_id": "u-dana", "consent_record_id": "cr-dana-7",
            "data_use": "third_party_sharing", "provider": "acme", "status": "GRANTED",
            "data_categories": ["user.name"], "expires_at": None,
            "notice_version": "2026-01", "jurisdiction": "EU"} | changes


def _request_finding(rule: str, consent: dict[str, Any] | None) -> dict[str, Any]:
    request = {"type": "EnrichmentRequested", "event_id": "r1", "occurred_at": AT,
               "account_id": "a1", "meeting_id": "m1", "subject_id": "u-dana",
               "provider": "acme", "data_use": "third_party_sharing.enrichment",
               "data_sent": ["user.name", "user.contact.email"], "trigger": "MANUAL"}
    evidence = [request] + ([consent] if consent else [])
    return {"finding_id": hashlib.sha256(f"{rule}|r1".encode()).hexdigest(), "rule": rule,
            "severity": "MEDIUM", "subject_id": "u-dana", "account_id": "a1",
            "meeting_id": "m1", "provider": "acme", "trigger_event_id": "r1",
            "evidence_event_ids": [e["event_id"] for e in evidence], "occurred_at": AT,
            "detected_at": AT + 1, "explanation": "made up", "evidence": evidence}


def test_a_grant_in_force_that_is_exceeded() -> None:
    record = consent_record(_request_finding("enrichment-exceeds-consent", _consent()))
    assert record == record | {
        "basis": "deciding-consent", "in_force": True, "record_id": "cr-dana-7",
        "status": DPV + "ConsentGiven", "status_label": "given", "recipient": "acme",
        "purpose": "third_party_sharing", "data_categories": ["user.name"],
        "provision_time": "2026-02-28T10:00:00.000Z", "withdrawal_time": None,
        "notice_version": "2026-01", "notice_version_note": None,
        "jurisdiction": "EU", "jurisdiction_note": None, "at": "2026-03-01T10:00:00.000Z"}


def test_an_expired_grant_is_not_in_force() -> None:
    record = consent_record(_request_finding("enrichment-without-consent",
                                             _consent(expires_at=AT)))
    assert record["in_force"] is False and record["status"] == DPV + "ConsentExpired"
    assert record["expiry_time"] == "2026-03-01T10:00:00.000Z"


def test_no_record_says_none_in_force() -> None:
    record = consent_record(_request_finding("enrichment-without-consent", None))
    assert record["basis"] == "no-consent-record" and record["in_force"] is False
    assert record["status"] is None and record["status_label"] == "none in force"
    assert record["purpose"] == "third_party_sharing.enrichment"
    assert record["data_categories"] is None


def test_a_malformed_record_never_raises() -> None:
    for finding in ({}, {"rule": "enrichment-without-consent", "evidence": "x"},
                    {"rule": "enrichment-without-consent", "occurred_at": 10**20,
                     "evidence": [{"type": "ConsentChanged", "status": 3,
                                   "data_categories": "x", "expires_at": True}, 7]}):
        consent_record(finding)
