"""summary.csv: one row per exported finding, for spreadsheets, then one per finding never
raised that a late event showed should have been (WOULD_RAISE amendments of a finding the
ledger does not hold; `review_status` is `never_raised`, and so is `status` unless a later
amendment retracted it).

A cell that a spreadsheet would run as a formula (starting with = + - @, tab or CR)
gets a leading apostrophe (OWASP "CSV injection"); findings.jsonl keeps the exact
values, the CSV is only a convenience view.

`status` says whether a finding still holds, from the kinds of its amendments (the
ledger's, in ledger order: the last one decides, see `finding_status`). `review_status`
is the fold of its reviews (`streams.evidence.review`), `excepted` whether an exception
in force at the export covers it (`yes` / `no`), `consent_status` the status of the consent
record in force (`streams.evidence.consent_record`: given, withdrawn, expired, none in
force, or `not decided by consent` for a rule about notices, toggles or names).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from streams.catalogue import load_catalogue
from streams.evidence.bundle import never_raised_scope
from streams.evidence.consent_record import consent_record
from streams.evidence.exception_scope import covering
from streams.evidence.export.times import describe_ms
from streams.evidence.review import TrailError, fold

if TYPE_CHECKING:
    from streams.catalogue import Rule
    from streams.evidence.ledger import LedgerEntry

__all__ = ["COLUMNS", "NEVER_RAISED", "OPEN", "RETRACTED", "amendments_by_finding",
           "finding_status", "render_summary", "review_label", "reviews_by_finding"]

COLUMNS = ("leaf_index", "finding_id", "status", "rule", "severity", "occurred_at",
           "detected_at", "subject_id", "account_id", "meeting_id", "provider",
           "trigger_event_id", "evidence_event_ids", "regulations", "explanation",
           "review_status", "excepted", "consent_status")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

OPEN = "open"
RETRACTED = "retracted"
#: The status (and review status) of a finding never raised that a late event showed
#: should have been (its WOULD_RAISE amendment's row).
NEVER_RAISED = "never_raised"
#: The status an amendment of each kind leaves its finding in. WOULD_RAISE on a finding
#: that was raised means a later late event made a retracted finding hold again.
_STATUS_AFTER = {"RETRACTED": RETRACTED, "EVIDENCE_CHANGED": "evidence_changed",
                 "WOULD_RAISE": "reinstated"}


def amendments_by_finding(amendments: Iterable[LedgerEntry]) -> dict[str, list[LedgerEntry]]:
    """The amendments of each finding id, in ledger order (the order they were decided:
    one subject's amendments come from one partition, in order)."""
    grouped: dict[str, list[LedgerEntry]] = {}
    for amendment in sorted(amendments, key=lambda entry: entry.index):
        grouped.setdefault(str(amendment.record.get("finding_id")), []).append(amendment)
    return grouped


def reviews_by_finding(reviews: Iterable[LedgerEntry]) -> dict[str, list[LedgerEntry]]:
    """The reviews of each finding id, in ledger order (the order they fold in)."""
    grouped: dict[str, list[LedgerEntry]] = {}
    for review in sorted(reviews, key=lambda entry: entry.index):
        grouped.setdefault(review.finding_id, []).append(review)
    return grouped


def finding_status(amendments: Sequence[LedgerEntry]) -> str:
    """`open` without amendments; otherwise what the last amendment made of the finding
    (`retracted`, `evidence_changed`, `reinstated`; an unknown kind, lower-cased)."""
    if not amendments:
        return OPEN
    kind = str(amendments[-1].record.get("kind", ""))
    return _STATUS_AFTER.get(kind, kind.lower() or "amended")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _time(value: Any) -> str:
    return describe_ms(value) if type(value) is int else _cell(value)


def review_label(reviews: Iterable[LedgerEntry]) -> str:
    """The status the reviews (of one finding, in ledger order) fold into, in words."""
    try:
        return fold(entry.record for entry in reviews).label()
    except TrailError:  # the ledger refuses such a trail: only a tampered one gets here
        return "not a valid review trail"


def render_summary(findings: Sequence[LedgerEntry],
                   amendments: Mapping[str, Sequence[LedgerEntry]] | None = None, *,
                   reviews: Mapping[str, Sequence[LedgerEntry]] | None = None,
                   exceptions: Sequence[LedgerEntry] = (), at_ms: int = 0) -> bytes:
    """The CSV bytes (UTF-8, CRLF line ends as RFC 4180 says); `amendments` by finding id
    (see `amendments_by_finding`) decide each row's status, `reviews` by finding id its
    review_status, the `exceptions` in force at `at_ms` whether it is excepted."""
    catalogue = load_catalogue()
    by_finding = amendments or {}
    trails = reviews or {}
    scopes = [entry.record for entry in exceptions]

    def known(rule: Any) -> Rule | None:
        try:
            return catalogue[rule]
        except KeyError:
            return None

    def regulations(rule: Any) -> str:
        found = known(rule)
        return "" if found is None else "; ".join(r.cite() for r in found.regulations)

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    exported: set[str] = set()
    for entry in findings:
        record = entry.record
        exported.add(entry.entry_id)
        writer.writerow([
            entry.index, _cell(record.get("finding_id")),
            _cell(finding_status(by_finding.get(entry.entry_id, ()))),
            _cell(record.get("rule")),
            _cell(record.get("severity")), _time(record.get("occurred_at")),
            _time(record.get("detected_at")), _cell(record.get("subject_id")),
            _cell(record.get("account_id")), _cell(record.get("meeting_id")),
            _cell(record.get("provider")), _cell(record.get("trigger_event_id")),
            _cell(" ".join(str(i) for i in record.get("evidence_event_ids") or ())),
            _cell(regulations(entry.rule)), _cell(record.get("explanation")),
            _cell(review_label(trails.get(entry.entry_id, ()))),
            "yes" if covering(scopes, record, at_ms) else "no",
            _cell(consent_record(record)["status_label"]),
        ])
    # A finding never raised that a late event showed should have been (the bundle holds
    # no finding of its amendments' id): its own row, read as the finding would have been
    # from its latest amendment; nobody reviewed it. Its status: never_raised while it
    # holds, else what the last amendment made of it (retracted).
    never_raised = sorted((trail for finding_id, trail in by_finding.items()
                           if finding_id not in exported and trail),
                          key=lambda trail: trail[0].index)
    for trail in never_raised:
        entry = trail[-1]
        record = entry.record
        scope = never_raised_scope(record)
        rule = record.get("rule")
        status = finding_status(trail)
        writer.writerow([
            entry.index, _cell(record.get("finding_id")),
            NEVER_RAISED if status in ("reinstated", "evidence_changed") else _cell(status),
            _cell(rule), _cell(getattr(known(rule), "severity", None)),
            _time(scope["occurred_at"]), _time(record.get("detected_at")),
            _cell(record.get("subject_id")), _cell(scope["account_id"]),
            _cell(scope["meeting_id"]), _cell(scope["provider"]),
            _cell(record.get("trigger_event_id")),
            _cell(" ".join(str(i) for i in record.get("evidence_event_ids") or ())),
            _cell(regulations(rule)), _cell(record.get("explanation")), NEVER_RAISED,
            "yes" if covering(scopes, scope, at_ms) else "no",
            _cell(consent_record({**record, "occurred_at": scope["occurred_at"]})[
                "status_label"]),
        ])
    return buffer.getvalue().encode()
