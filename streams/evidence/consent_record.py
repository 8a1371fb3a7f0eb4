"""The consent record in force for a finding (issue 18, item 5), in terms of the W3C Data
Privacy Vocabulary (DPV) and ISO/IEC TS 27560 (consent record information structure).

A pure function of a finding's JSON record (a ledger leaf, evidence pseudonymised): it
derives nothing the finding does not carry, so `export` writes it (consent_records.jsonl)
and `verify` recomputes it from the proven finding and compares. The engine's decision
is not re-run: the spec makes the finding cite the deciding ConsentChanged when one
decided it (`enrichment-without-consent`, `enrichment-exceeds-consent`,
`disclosure-without-consent`); a consent rule whose finding cites none fired because no
consent record covered the data use and provider at the trigger's time.

The record (docs/evidence-bundle.md maps each field to its DPV term and ISO/IEC TS
27560 element):
- `basis`: `deciding-consent` (the finding cites the record that decided it),
  `no-consent-record` (a consent rule fired and no record covered the use: none in
  force), `not-a-consent-rule` (the rule decides on notices, toggles or names; its
  finding names no consent, and none is looked up here);
- `record_id` / `event_id`: the record's `consent_record_id` and the ConsentChanged that
  set its state, or null;
- `in_force`: the record was a grant that had not expired at `at` (the trigger's time);
  false with no record; null for a rule that does not decide on consent;
- `data_subject`: the subject id (the platform's pseudonymous key; names and emails are
  never in a record), `purpose` the data use (the record's, or with no record the one
  the rule asked for), `data_categories` what the record covers (null without one),
  `recipient` the provider it names (null: any provider, or no record);
- `status` a DPV consent status IRI (ConsentGiven, ConsentWithdrawn, ConsentExpired;
  null when there is no record) and `status_label` the same in words;
- `provision_time`, `withdrawal_time`, `expiry_time`, `at`: RFC 3339 UTC times (or null);
- `notice_version`, `jurisdiction`: as the ConsentChanged carries them, else null with
  the reason in `notice_version_note` / `jurisdiction_note`.

Imports nothing but the standard library: the offline verifier ships it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

__all__ = [
    "CONSENT_RULES",
    "DPV",
    "FIELDS",
    "VIEW_DATA_USE",
    "consent_record",
    "consent_record_line",
]

DPV: Final = "https://w3id.org/dpv#"
#: The rules that decide on the consent in force (the spec's rule table).
CONSENT_RULES: Final = frozenset({"enrichment-without-consent", "enrichment-exceeds-consent",
                                  "disclosure-without-consent"})
#: The data use a ProfileViewed needs consent for (spec: disclosure-without-consent).
VIEW_DATA_USE: Final = "third_party_sharing.enrichment"
_STATUS: Final = {"given": DPV + "ConsentGiven", "withdrawn": DPV + "ConsentWithdrawn",
                  "expired": DPV + "ConsentExpired", "unknown": DPV + "ConsentUnknown"}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: Each field of a record: (key, what it says, its DPV term, its ISO/IEC TS 27560 element);
#: the report's table and docs/evidence-bundle.md follow it.
FIELDS: Final = (
    ("record_id", "consent record", "dct:identifier of a dpv:ConsentRecord",
     "record identifier"),
    ("event_id", "event that set its state", "(the event's id)",
     "event (consent given / withdrawn)"),
    ("in_force", "in force at the trigger's time", "(derived: dpv:ConsentGiven and not expired)",
     "record status (active)"),
    ("at", "the trigger's time", "(the time the rule asked)", "—"),
    ("data_subject", "data subject", "dpv:hasDataSubject", "PII principal identifier"),
    ("purpose", "purpose (data use)", "dpv:hasPurpose", "purpose"),
    ("data_categories", "data categories", "dpv:hasPersonalData", "PII categories"),
    ("recipient", "recipient (provider)", "dpv:hasRecipient", "PII recipient / third party"),
    ("status", "status", "dpv:hasConsentStatus", "consent status"),
    ("provision_time", "given at", "dpv:hasProvisionTime", "event timestamp (consent given)"),
    ("withdrawal_time", "withdrawn at", "dpv:hasWithdrawalTime",
     "event timestamp (consent withdrawn)"),
    ("expiry_time", "expires at", "dpv:hasExpiry", "expiry / duration of consent"),
    ("notice_version", "notice version", "dpv:hasNotice", "privacy notice"),
    ("jurisdiction", "jurisdiction", "dpv:hasJurisdiction", "jurisdiction"),
)


def _time(ms: Any) -> str | None:
    """RFC 3339 UTC with milliseconds; None for anything but an integer in range."""
    if type(ms) is not int:
        return None
    try:
        moment = _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _evidence(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = record.get("evidence")
    return [item for item in items if isinstance(item, Mapping)] if isinstance(
        items, list) else []


def consent_record(finding: Mapping[str, Any]) -> dict[str, Any]:
    """The consent record in force for `finding` (its JSON record); see the module doc."""
    rule = finding.get("rule")
    at = finding.get("occurred_at")
    evidence = _evidence(finding)
    trigger = next((e for e in evidence if e.get("event_id") == finding.get("trigger_event_id")),
                   None)
    consent = next((e for e in evidence if e.get("type") == "ConsentChanged"), None)
    record: dict[str, Any] = {
        "basis": "not-a-consent-rule", "record_id": None, "event_id": None, "in_force": None,
        "data_subject": _text(finding.get("subject_id")), "purpose": None,
        "data_categories": None, "recipient": None, "status": None,
        "status_label": "not decided by consent", "provision_time": None,
        "withdrawal_time": None, "expiry_time": None, "at": _time(at),
        "notice_version": None, "notice_version_note": "no consent record",
        "jurisdiction": None, "jurisdiction_note": "no consent record",
    }
    if rule not in CONSENT_RULES:
        return record
    if consent is None:
        purpose = None
        if trigger is not None:
            purpose = (VIEW_DATA_USE if trigger.get("type") == "ProfileViewed"
                       else _text(trigger.get("data_use")))
        record.update(basis="no-consent-record", in_force=False, purpose=purpose,
                      status_label="none in force")
        return record
    status, expires = consent.get("status"), consent.get("expires_at")
    occurred = consent.get("occurred_at")
    if status == "WITHDRAWN":
        label, in_force = "withdrawn", False
    elif type(expires) is int and type(at) is int and expires <= at:
        label, in_force = "expired", False
    elif status == "GRANTED":
        label, in_force = "given", True
    else:  # not a status of the contract: a record verify refuses elsewhere, never shown as given
        label, in_force = "unknown", False
    categories = consent.get("data_categories")
    notice, jurisdiction = _text(consent.get("notice_version")), _text(
        consent.get("jurisdiction"))
    subject = _text(consent.get("subject_id"))
    record.update(
        basis="deciding-consent", record_id=_text(consent.get("consent_record_id")),
        event_id=_text(consent.get("event_id")), in_force=in_force,
        data_subject=subject if subject is not None else record["data_subject"],
        purpose=_text(consent.get("data_use")),
        data_categories=[c for c in categories if isinstance(c, str)]
        if isinstance(categories, list) else [],
        recipient=_text(consent.get("provider")),
        status=_STATUS[label], status_label=label,
        provision_time=_time(occurred) if status == "GRANTED" else None,
        withdrawal_time=_time(occurred) if status == "WITHDRAWN" else None,
        expiry_time=_time(expires),
        notice_version=notice,
        notice_version_note=None if notice is not None
        else "the ConsentChanged event carries no notice_version",
        jurisdiction=jurisdiction,
        jurisdiction_note=None if jurisdiction is not None
        else "the ConsentChanged event carries no jurisdiction")
    return record


def consent_record_line(finding: Mapping[str, Any]) -> dict[str, Any]:
    """One line of consent_records.jsonl: the finding's id and its consent record."""
    return {"finding_id": finding.get("finding_id"), "consent_record": consent_record(finding)}
