"""Every query the desk runs on the ledger: the findings table, one finding, the accounts.

The findings table is sorted newest first by (occurred_at, idx) and paged by KEYSET: a
page is "the next N rows before this (occurred_at, idx)", never an OFFSET, so a page deep
into a million findings costs what the first page costs. Each filter has an index of
the ledger's schema that ends in (occurred_at, idx) (`entries_desk_*`, in the backends'
CREATE statements), so the database walks one index backwards and stops after N rows.
A severity is a set of rules (the catalogue's): each rule is read on its own index and
the pages merged, which keeps every read on an index in time order.

The columns of `entries` only select rows: what a page shows comes from the leaf bytes.
The finding page checks its leaf against its hash and columns (`checked_entry`); the
table decodes the leaves of its rows without that check (an export audits every leaf).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.catalogue import SEVERITIES, load_catalogue
from streams.desk.db import Database
from streams.errors import ConsentwatchError
from streams.evidence.ledger import LedgerEntry
from streams.evidence.ledger.records import StoredRow, checked_entry
from streams.model.timestamps import parse_rfc3339_ms

__all__ = ["PAGE_SIZE", "AccountRow", "CheckpointInfo", "Cursor", "FilterError",
           "FindingFilter", "FindingRow", "OpenByRule", "Page", "accounts", "amendments_of",
           "finding", "findings_page", "latest_checkpoint", "open_by_rule",
           "open_findings_where", "parse_filter"]

PAGE_SIZE = 50
_MAX_TEXT = 200  # longest account, provider or subject a filter takes
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_LOCAL_MINUTE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?")
_CURSOR = re.compile(r"(-?\d{1,19})\.(\d{1,19})")
_LIST_COLUMNS = "idx, entry_id, occurred_at, rule, account_id, subject_id, leaf"
_ENTRY_COLUMNS = ("idx, kind, entry_id, occurred_at, rule, account_id, subject_id, leaf, "
                  "leaf_hash, finding_id")


class FilterError(ConsentwatchError):
    """Filters the desk cannot use; `problems` are the lines the page shows."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page starts: the rows strictly before (occurred_at, idx), newest first."""

    occurred_at: int
    idx: int

    def token(self) -> str:
        return f"{self.occurred_at}.{self.idx}"

    @classmethod
    def parse(cls, token: str) -> Cursor:
        match = _CURSOR.fullmatch(token)
        if match is None:
            raise FilterError(["the page link is not valid: start again from the first page"])
        return cls(int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True, slots=True)
class FindingFilter:
    """What the findings table shows. Every field None shows every finding."""

    rule: str | None = None
    severity: str | None = None
    account: str | None = None
    provider: str | None = None
    subject: str | None = None
    from_ms: int | None = None
    to_ms: int | None = None

    def rules(self) -> list[str] | None:
        """The rules to read, None for all of them ([] when rule and severity disagree)."""
        if self.severity is None:
            return None if self.rule is None else [self.rule]
        chosen = [r.id for r in load_catalogue().rules if r.severity == self.severity]
        if self.rule is not None:
            return [self.rule] if self.rule in chosen else []
        return chosen

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__slots__)


def _time(name: str, text: str, problems: list[str]) -> int | None:
    """An RFC 3339 time, a date (midnight UTC) or a browser's local date-time (read as UTC)."""
    if _DATE.fullmatch(text):
        text += "T00:00:00Z"
    elif _LOCAL_MINUTE.fullmatch(text):
        text += ":00Z" if text.count(":") == 1 else "Z"
    try:
        return parse_rfc3339_ms(text)
    except ValueError:
        problems.append(f"{name}: not a date or an RFC 3339 time (e.g. 2026-03-01 or "
                        "2026-03-01T12:00:00Z)")
        return None


def parse_filter(params: Mapping[str, str]) -> FindingFilter:
    """The filter a query string asks for; FilterError lists every field it cannot use
    (by its name and what it expects, never repeating the value)."""
    problems: list[str] = []

    def text(name: str) -> str | None:
        value = (params.get(name) or "").strip()
        if not value:
            return None
        if len(value) > _MAX_TEXT or any(ord(c) < 32 for c in value):
            problems.append(f"{name}: at most {_MAX_TEXT} printable characters")
            return None
        return value

    rule, severity = text("rule"), text("severity")
    if rule is not None and rule not in {r.id for r in load_catalogue().rules}:
        problems.append("rule: not a rule of the catalogue (see the list)")
        rule = None
    if severity is not None:
        severity = severity.upper()
        if severity not in SEVERITIES:
            problems.append(f"severity: one of {', '.join(SEVERITIES)}")
            severity = None
    from_text, to_text = text("from"), text("to")
    from_ms = None if from_text is None else _time("from", from_text, problems)
    to_ms = None if to_text is None else _time("to", to_text, problems)
    if from_ms is not None and to_ms is not None and from_ms >= to_ms:
        problems.append("from must be before to")
    account, provider, subject = text("account"), text("provider"), text("subject")
    if problems:
        raise FilterError(problems)
    return FindingFilter(rule=rule, severity=severity, account=account, provider=provider,
                         subject=subject, from_ms=from_ms, to_ms=to_ms)


@dataclass(frozen=True, slots=True)
class FindingRow:
    """One row of the findings table (values from the leaf)."""

    index: int
    finding_id: str
    occurred_at: int
    rule: str
    severity: str
    account_id: str
    provider: str
    subject_id: str
    explanation: str


@dataclass(frozen=True, slots=True)
class Page:
    """A page of the table; `older` and `newer` are the cursors of the pages beside it
    (None at either end)."""

    rows: list[FindingRow]
    older: Cursor | None
    newer: Cursor | None = None


def _row(values: tuple[Any, ...]) -> FindingRow:
    idx, entry_id, occurred_at, rule, account_id, subject_id, leaf = values
    try:
        record = orjson.loads(bytes(leaf))
    except orjson.JSONDecodeError:
        record = {}
    if not isinstance(record, dict):
        record = {}
    return FindingRow(index=int(idx), finding_id=str(entry_id), occurred_at=int(occurred_at),
                      rule=str(rule), severity=str(record.get("severity", "")),
                      account_id=str(account_id), provider=str(record.get("provider", "")),
                      subject_id=str(subject_id),
                      explanation=str(record.get("explanation", "")))


def findings_page(db: Database, flt: FindingFilter, cursor: Cursor | None = None,
                  limit: int = PAGE_SIZE, *, newer: bool = False) -> Page:
    """The `limit` newest findings matching `flt` before `cursor` (with `newer`: the
    `limit` oldest after it, which is the page before), and the cursors beside it."""
    rules = flt.rules()
    if rules == []:
        return Page([], None)
    reads = [None] if rules is None else rules
    pages = [_read(db, flt, rule, cursor, limit + 1, newer) for rule in reads]
    if len(pages) == 1:
        merged = pages[0]
    else:
        key = lambda values: (values[2], values[0])  # noqa: E731  # (occurred_at, idx)
        merged = list(heapq.merge(*pages, key=key, reverse=not newer))[:limit + 1]
    more = len(merged) > limit
    if newer and not more:
        return findings_page(db, flt, None, limit)  # that is the first page
    chosen = merged[:limit]
    if newer:
        chosen.reverse()
    rows = [_row(values) for values in chosen]
    if not rows:
        return Page([], None)
    first, last = Cursor(rows[0].occurred_at, rows[0].index), Cursor(rows[-1].occurred_at,
                                                                      rows[-1].index)
    if newer:
        return Page(rows, older=last, newer=first)
    return Page(rows, older=last if more else None, newer=first if cursor else None)


def _read(db: Database, flt: FindingFilter, rule: str | None, cursor: Cursor | None,
          limit: int, newer: bool) -> list[tuple[Any, ...]]:
    where, params = ["kind = 'finding'"], list[Any]()
    equal = [(column, value) for column, value in (
        ("subject_id", flt.subject), ("account_id", flt.account), ("rule", rule),
        (db.provider_expr, flt.provider)) if value is not None]
    for number, (column, value) in enumerate(equal):
        # The first (the most selective: a subject has a few findings, an account some
        # hundreds, a rule or a provider a large share) picks the index; SQLite, which
        # has no statistics, is told not to use the others ('+' hides a term from its
        # index choice). PostgreSQL's planner chooses from its statistics.
        hide = "+" if number and not db.postgres else ""
        where.append(f"{hide}{column} = ?")
        params.append(value)
    low, high = flt.from_ms, flt.to_ms
    if cursor is not None:
        # the cursor's time as a plain bound too, merged with the filter's: one range for
        # the index to walk (SQLite takes one upper and one lower bound, not the tighter)
        if newer:
            low = cursor.occurred_at if low is None else max(low, cursor.occurred_at)
        else:
            end = cursor.occurred_at + 1
            high = end if high is None else min(high, end)
    for clause, bound in (("occurred_at >= ?", low), ("occurred_at < ?", high)):
        if bound is not None:
            where.append(clause)
            params.append(bound)
    if cursor is not None:
        where.append(f"(occurred_at, idx) {'>' if newer else '<'} (?, ?)")
        params.extend((cursor.occurred_at, cursor.idx))
    where.append(open_findings_where())
    params.append(limit)
    order = "ASC" if newer else "DESC"
    return db.query(f"SELECT {_LIST_COLUMNS} FROM entries WHERE {' AND '.join(where)} "
                    f"ORDER BY occurred_at {order}, idx {order} LIMIT ?", params)


def open_findings_where() -> str:
    """The SQL condition on `entries` of a finding that is still open.

    For now every finding is open; the reviews (ledger records of their own) will close
    them, and this is the one place that changes then: the accounts page, its counts
    and ages, the desk's gauges and the table's status filter all go through it."""
    return "1 = 1"


# -- one finding ------------------------------------------------------------------------


def finding(db: Database, finding_id: str) -> LedgerEntry | None:
    """The finding, its leaf checked against its hash and columns (LedgerTampered if
    not); None when the ledger holds no finding of that id."""
    rows = db.query(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE kind = 'finding' "
                    "AND entry_id = ?", (finding_id,))
    return _checked(rows[0]) if rows else None


def _checked(values: tuple[Any, ...]) -> LedgerEntry:
    (idx, kind, entry_id, occurred_at, rule, account_id, subject_id, leaf, digest,
     finding_id) = values
    return checked_entry(StoredRow(index=int(idx), kind=str(kind), entry_id=str(entry_id),
                                   occurred_at=int(occurred_at), rule=str(rule),
                                   account_id=str(account_id), subject_id=str(subject_id),
                                   leaf=bytes(leaf), leaf_hash=bytes(digest),
                                   finding_id=str(finding_id)))


def amendments_of(db: Database, entry: LedgerEntry) -> list[LedgerEntry]:
    """The finding's amendments in ledger order (by the ledger's finding_id column, each
    checked against its leaf)."""
    rows = db.query(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE finding_id = ? "
                    "AND kind = 'amendment' ORDER BY idx", (entry.entry_id,))
    return [_checked(values) for values in rows]


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """The latest signed checkpoint, as stored (the desk holds no public key to check its
    signature: `consentwatch verify` does that on a bundle)."""

    size: int
    key_name: str
    signed_at: int


def latest_checkpoint(db: Database) -> CheckpointInfo | None:
    rows = db.query("SELECT size, key_name, signed_at FROM checkpoints ORDER BY seq DESC "
                    "LIMIT 1")
    if not rows:
        return None
    size, key_name, signed_at = rows[0]
    return CheckpointInfo(int(size), str(key_name), int(signed_at))


# -- accounts ---------------------------------------------------------------------------


@dataclass(slots=True)
class AccountRow:
    """An account's open findings: counts by rule and by severity, the oldest's time."""

    account_id: str
    total: int = 0
    oldest_ms: int | None = None
    by_rule: dict[str, int] = field(default_factory=dict)
    by_severity: dict[str, int] = field(default_factory=dict)


def accounts(db: Database) -> list[AccountRow]:
    """Every account with an open finding, the one whose oldest is oldest first."""
    catalogue = {rule.id: rule.severity for rule in load_catalogue().rules}
    rows = db.query("SELECT account_id, rule, COUNT(*), MIN(occurred_at) FROM entries "
                    f"WHERE kind = 'finding' AND {open_findings_where()} "
                    "GROUP BY account_id, rule")
    by_account: dict[str, AccountRow] = {}
    for account_id, rule, count, oldest in rows:
        row = by_account.setdefault(str(account_id), AccountRow(str(account_id)))
        row.total += int(count)
        row.by_rule[str(rule)] = int(count)
        severity = catalogue.get(str(rule), "UNKNOWN")
        row.by_severity[severity] = row.by_severity.get(severity, 0) + int(count)
        if row.oldest_ms is None or int(oldest) < row.oldest_ms:
            row.oldest_ms = int(oldest)
    return sorted(by_account.values(),
                  key=lambda r: (r.oldest_ms if r.oldest_ms is not None else 0, r.account_id))



# -- the desk's gauges --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenByRule:
    """A rule's open findings: how many, and the detected_at of the one that occurred
    first (None when its leaf has no integer detected_at)."""

    rule: str
    count: int
    first_detected_ms: int | None


def open_by_rule(db: Database) -> list[OpenByRule]:
    """Open findings by rule (from the rule index alone), and for each rule the
    detected_at of its open finding that occurred first (one leaf read per rule)."""
    found = []
    for rule, count, first in db.query(
            "SELECT rule, COUNT(*), MIN(occurred_at) FROM entries WHERE kind = 'finding' "
            f"AND {open_findings_where()} GROUP BY rule"):
        leaves = db.query("SELECT leaf FROM entries WHERE kind = 'finding' AND rule = ? AND "
                          f"occurred_at = ? AND {open_findings_where()} ORDER BY idx LIMIT 1",
                          (rule, first))
        detected = None
        if leaves:
            try:
                value = orjson.loads(bytes(leaves[0][0])).get("detected_at")
            except (orjson.JSONDecodeError, AttributeError):
                value = None
            detected = value if type(value) is int else int(first)
        found.append(OpenByRule(str(rule), int(count), detected))
    return found
