"""The consent record in force, per finding (issue 18, item 5): streams.evidence.consent_record,
consent_records.jsonl in the bundle (checked by verify), and the report's view of it."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785

from streams.engine import EngineParams
from streams.evidence import bundle
from streams.evidence.consent_record import CONSENT_RULES, DPV, FIELDS, consent_record
from streams.evidence.export import ExportQuery, export_bundle
from streams.evidence.keys import generate_keypair, load_private_key, load_public_key
from streams.evidence.ledger import open_ledger
from streams.evidence.verify import verify_bundle
from tests.conftest import EXAMPLES_DIR, run_cli
from tests.evidence.test_consistency import reattest

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


# --- in the bundle ------------------------------------------------------------------------

@pytest.fixture
def bundle_of(tmp_path: Path, seed: dict[tuple[str, str], dict[str, Any]]
              ) -> tuple[Path, Path, list[dict[str, Any]]]:
    """A bundle of the seed scenario's findings, a withdrawal's and an exceeded grant's."""
    withdrawn = _replay(tmp_path, "withdrawn-consent")
    findings = [*seed.values(), *withdrawn.values(),
                _request_finding("enrichment-exceeds-consent",
                                 _consent(consent_record_id="cr-<script>alert(1)</script>",
                                          jurisdiction="EU & \"UK\" <b>x</b>"))]
    private, public = generate_keypair(tmp_path / "keys")
    ledger = open_ledger(str(tmp_path / "ledger.db"))
    try:
        ledger.append("finding", findings)
        out = tmp_path / "bundle"
        export_bundle(ledger, out, ExportQuery(0, 4_000_000_000_000, "inquiry 7"),
                      load_private_key(private), actor="tester", params=EngineParams())
    finally:
        ledger.close()
    return out, public, findings


def _lines(out: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (out / bundle.CONSENT_RECORDS).read_bytes()
            .splitlines()]


def test_the_bundle_carries_one_record_per_finding_and_verifies(
        bundle_of: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    out, public, findings = bundle_of
    assert len(findings) == 8
    assert verify_bundle(out, load_public_key(public))[0] == []
    exported = [orjson.loads(line) for line in (out / bundle.FINDINGS).read_bytes()
                .splitlines()]
    assert [line["finding_id"] for line in _lines(out)] == [f["finding_id"] for f in exported]
    assert all(line["consent_record"] == consent_record(finding)
               for line, finding in zip(_lines(out), exported, strict=True))
    manifest = orjson.loads((out / bundle.MANIFEST).read_bytes())
    assert bundle.CONSENT_RECORDS in manifest["files"]
    envelope = orjson.loads((out / bundle.ATTESTATION).read_bytes())
    statement = orjson.loads(base64.b64decode(envelope["payload"]))
    assert bundle.CONSENT_RECORDS in {s["name"] for s in statement["subject"]}
    with zipfile.ZipFile(out.with_name(out.name + ".zip")) as archive:
        assert f"bundle/{bundle.CONSENT_RECORDS}" in archive.namelist()


def _resign(out: Path, private: Path) -> None:
    """An exporter (or anyone with the key) that wrote a wrong file and signed it."""
    manifest = orjson.loads((out / bundle.MANIFEST).read_bytes())
    manifest["files"][bundle.CONSENT_RECORDS] = bundle.sha256_hex(
        (out / bundle.CONSENT_RECORDS).read_bytes())
    raw = rfc8785.dumps(manifest)
    (out / bundle.MANIFEST).write_bytes(raw)
    (out / bundle.SIGNATURE).write_bytes(load_private_key(private).sign(raw))
    reattest(out, private)


@pytest.mark.parametrize("change", ["byte", "missing", "extra", "swapped"])
def test_a_consent_record_that_is_not_the_findings_fails(
        bundle_of: tuple[Path, Path, list[dict[str, Any]]], change: str) -> None:
    out, public, _ = bundle_of
    path = out / bundle.CONSENT_RECORDS
    lines = path.read_bytes().splitlines(keepends=True)
    target = max(i for i, line in enumerate(lines) if b'"in_force":false' in line)
    assert target > 0
    if change == "byte":
        lines[target] = lines[target].replace(b'"in_force":false', b'"in_force":fals0')
    elif change == "missing":
        del lines[target]
    elif change == "extra":
        lines.append(lines[target])
    else:
        lines[0], lines[target] = lines[target], lines[0]
    path.write_bytes(b"".join(lines))
    failures = verify_bundle(out, load_public_key(public))[0]
    assert (f"{bundle.CONSENT_RECORDS}: SHA-256 does not match the manifest (file changed)"
            in failures)
    ours = [f for f in failures if f.startswith(bundle.CONSENT_RECORDS) and "SHA-256" not in f]
    assert ours and all("\n" not in f for f in ours), failures
    # signed with the right key, the file is still checked, not trusted
    _resign(out, out.parent / "keys" / "consentwatch.key")
    failures = verify_bundle(out, load_public_key(public))[0]
    assert failures == ours


def test_the_report_shows_each_record_escaped(
        bundle_of: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    out, _, _ = bundle_of
    html = (out / bundle.REPORT).read_text()
    assert "<script>alert(1)" not in html and "<b>x</b>" not in html
    assert "cr-&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "EU &amp; &quot;UK&quot; &lt;b&gt;x&lt;/b&gt;" in html
    assert "cr-u-carol-1" in html and "none in force" in html
    assert "<em>null</em> (any provider)" in html
    assert html.count('class="consent-record"') == len(_lines(out))
    summary = (out / bundle.SUMMARY).read_text().splitlines()
    assert "consent_status" in summary[0].split(",")


def test_the_docs_map_every_field_to_its_dpv_term() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "evidence-bundle.md").read_text()
    for key, _, term, iso in FIELDS:
        rows = [line.replace("`", "") for line in docs.splitlines()
                if line.startswith(f"| `{key}` |")]
        assert any(f"| {term} | {iso} |" in row for row in rows), key
    assert set(consent_record({})) == {key for key, *_ in FIELDS} | {
        "basis", "status_label", "notice_version_note", "jurisdiction_note"}


def test_a_bundle_of_format_4_without_its_consent_records_fails(
        bundle_of: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    """Dropped with its manifest entry and re-signed with the ledger's key: still missing."""
    out, public, _ = bundle_of
    private = out.parent / "keys" / "consentwatch.key"
    (out / bundle.CONSENT_RECORDS).unlink()
    manifest = orjson.loads((out / bundle.MANIFEST).read_bytes())
    del manifest["files"][bundle.CONSENT_RECORDS]
    raw = rfc8785.dumps(manifest)
    (out / bundle.MANIFEST).write_bytes(raw)
    (out / bundle.SIGNATURE).write_bytes(load_private_key(private).sign(raw))
    reattest(out, private)
    failures = verify_bundle(out, load_public_key(public))[0]
    assert len(failures) == 1 and failures[0].startswith(
        f"{bundle.CONSENT_RECORDS}: missing (a bundle of format"), failures
