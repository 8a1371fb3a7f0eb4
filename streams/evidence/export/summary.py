"""summary.csv: one row per exported finding, for spreadsheets.

A cell that a spreadsheet would run as a formula (starting with = + - @, tab or CR)
gets a leading apostrophe (OWASP "CSV injection"); findings.jsonl keeps the exact
values, the CSV is only a convenience view.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from streams.catalogue import load_catalogue
from streams.evidence.export.times import describe_ms

if TYPE_CHECKING:
    from streams.evidence.ledger import LedgerEntry

__all__ = ["COLUMNS", "render_summary"]

COLUMNS = ("leaf_index", "finding_id", "rule", "severity", "occurred_at", "detected_at",
           "subject_id", "account_id", "meeting_id", "provider", "trigger_event_id",
           "evidence_event_ids", "regulations", "explanation")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _time(value: Any) -> str:
    return describe_ms(value) if type(value) is int else _cell(value)


def render_summary(findings: Sequence[LedgerEntry]) -> bytes:
    """The CSV bytes (UTF-8, CRLF line ends as RFC 4180 says)."""
    catalogue = load_catalogue()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for entry in findings:
        record = entry.record
        try:
            regulations = "; ".join(r.cite() for r in catalogue[entry.rule].regulations)
        except KeyError:
            regulations = ""
        writer.writerow([
            entry.index, _cell(record.get("finding_id")), _cell(record.get("rule")),
            _cell(record.get("severity")), _time(record.get("occurred_at")),
            _time(record.get("detected_at")), _cell(record.get("subject_id")),
            _cell(record.get("account_id")), _cell(record.get("meeting_id")),
            _cell(record.get("provider")), _cell(record.get("trigger_event_id")),
            _cell(" ".join(str(i) for i in record.get("evidence_event_ids") or ())),
            _cell(regulations), _cell(record.get("explanation")),
        ])
    return buffer.getvalue().encode()
