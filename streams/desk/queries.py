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

Statuses (`standing.py`): a status filter adds a condition on the few reviewed finding
ids (`IN` / `NOT IN` one bound JSON array on SQLite, one array on PostgreSQL: a single
parameter however many) and on the scopes of the exceptions in force. "Open" in the
wide sense is defined once, `open_findings_where`. The accounts page and the gauges
count from the indexes alone and subtract the few findings that are reviewed or
excepted (`_marked`), so they cost what they cost before reviews existed.
"""

from __future__ import annotations

import heapq
import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from streams.catalogue import SEVERITIES, load_catalogue
from streams.desk.db import Database
from streams.desk.standing import ENTRY_COLUMNS, STATUSES, Standing, StatusIndex, checked_row
from streams.errors import ConsentwatchError
from streams.evidence.ledger import LedgerEntry
from streams.model.timestamps import parse_rfc3339_ms

__all__ = [
    "PAGE_SIZE",
    "STATUS_CHOICES",
    "AccountRow",
    "CheckpointInfo",
    "Cursor",
    "FilterError",
    "FindingFilter",
    "FindingRow",
    "OpenCount",
    "Page",
    "accounts",
    "amendments_of",
    "checked_row",
    "exports",
    "finding",
    "findings_page",
    "first_detected",
    "latest_checkpoint",
    "open_counts",
    "open_findings_where",
    "parse_filter",
    "parse_time",
    "reviews_of",
    "standing",
]

#: The status filter's values: each status, and "active" (open, acknowledged or
#: assigned: what still needs someone, the desk's "open" in the wide sense).
STATUS_CHOICES = (*STATUSES, "active")

PAGE_SIZE = 50
_MAX_TEXT = 200  # longest account, provider or subject a filter takes
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_LOCAL_MINUTE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?")
_CURSOR = re.compile(r"(-?\d{1,19})\.(\d{1,19})")
_CURSOR_LIMIT = 1 << 62
_LIST_COLUMNS = "idx, entry_id, occurred_at, rule, account_id, subject_id, leaf"
_ENTRY_COLUMNS = ENTRY_COLUMNS


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
        occurred_at, idx = (int(match.group(1)), int(match.group(2))) if match else (0, -1)
        # Within what the database's 64-bit integers hold, with room for the +1 of a bound.
        if not (-_CURSOR_LIMIT <= occurred_at <= _CURSOR_LIMIT and 0 <= idx <= _CURSOR_LIMIT):
            raise FilterError(["the page link is not valid: start again from the first page"])
        return cls(occurred_at, idx)


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
    status: str | None = None

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


def parse_time(name: str, text: str, problems: list[str]) -> int | None:
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

    def ident(name: str) -> str | None:
        """An account, provider or subject exactly as the events wrote it: they are the
        events' strings, spaces and control characters included (but NUL, which no
        database string holds)."""
        value = params.get(name) or ""
        if not value:
            return None
        if len(value) > _MAX_TEXT or "\x00" in value:
            problems.append(f"{name}: at most {_MAX_TEXT} characters, no NUL")
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
    from_ms = None if from_text is None else parse_time("from", from_text, problems)
    to_ms = None if to_text is None else parse_time("to", to_text, problems)
    if from_ms is not None and to_ms is not None and from_ms >= to_ms:
        problems.append("from must be before to")
    account, provider, subject = ident("account"), ident("provider"), ident("subject")
    status = text("status")
    if status is not None and status not in STATUS_CHOICES:
        problems.append(f"status: one of {', '.join(STATUS_CHOICES)}")
        status = None
    if problems:
        raise FilterError(problems)
    return FindingFilter(rule=rule, severity=severity, account=account, provider=provider,
                         subject=subject, from_ms=from_ms, to_ms=to_ms, status=status)


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
    status: str = "open"


@dataclass(frozen=True, slots=True)
class Page:
    """A page of the table; `older` and `newer` are the cursors of the pages beside it
    (None at either end)."""

    rows: list[FindingRow]
    older: Cursor | None
    newer: Cursor | None = None


def _row(values: tuple[Any, ...], standing: Standing) -> FindingRow:
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
                      explanation=str(record.get("explanation", "")),
                      status=standing.status_of(str(entry_id), {
                          **record, "account_id": str(account_id),
                          "occurred_at": int(occurred_at), "rule": str(rule)}))


def findings_page(db: Database, flt: FindingFilter, cursor: Cursor | None = None,
                  limit: int = PAGE_SIZE, *, newer: bool = False,
                  standing: Standing | None = None) -> Page:
    """The `limit` newest findings matching `flt` before `cursor` (with `newer`: the
    `limit` oldest after it, which is the page before), and the cursors beside it."""
    standing = standing or status_index(db).refresh(db)
    pages = [_read(db, sub, rule, cursor, limit + 1, newer, conditions, by_id)
             for sub, conditions, by_id in _status_reads(db, flt, standing)
             for rule in _rules_of(sub)]
    if not pages:
        return Page([], None)
    if len(pages) == 1:
        merged = pages[0]
    else:
        key = lambda values: (values[2], values[0])  # noqa: E731  # (occurred_at, idx)
        merged = []
        for values in heapq.merge(*pages, key=key, reverse=not newer):
            if merged and merged[-1][0] == values[0]:
                continue  # one finding in two exceptions' reads
            merged.append(values)
            if len(merged) > limit:
                break
    more = len(merged) > limit
    if newer and not more:
        return findings_page(db, flt, None, limit, standing=standing)  # the first page
    chosen = merged[:limit]
    if newer:
        chosen.reverse()
    rows = [_row(values, standing) for values in chosen]
    if not rows:
        return Page([], None)
    first, last = Cursor(rows[0].occurred_at, rows[0].index), Cursor(rows[-1].occurred_at,
                                                                      rows[-1].index)
    if newer:
        return Page(rows, older=last, newer=first)
    return Page(rows, older=last if more else None, newer=first if cursor else None)


def _rules_of(flt: FindingFilter) -> list[str | None]:
    rules = flt.rules()
    return [None] if rules is None else list(rules)


_Condition = tuple[str, list[Any]]


def _status_reads(db: Database, flt: FindingFilter, standing: Standing
                  ) -> list[tuple[FindingFilter, list[_Condition], bool]]:
    """The reads a status asks for: (filter, extra conditions, whether the condition on
    the reviewed ids should pick the index). "excepted" is one read per exception in
    force, the filter narrowed to its scope (each on its account's index)."""
    status = flt.status
    if status is None:
        return [(flt, [], False)]
    if status == "active":
        return [(flt, [open_findings_where(db, standing)], False)]
    if status == "open":
        return [(flt, [open_findings_where(db, standing),
                       _ids(db, standing.ids("acknowledged", "assigned"), negate=True)],
                 False)]
    if status == "resolved":
        return [(flt, [_ids(db, standing.ids("resolved"))], True)]
    if status in ("acknowledged", "assigned"):
        return [(flt, [_ids(db, standing.ids(status)), _not_excepted(db, standing)], True)]
    reads = []
    for exception in standing.in_force:  # excepted
        narrowed = _narrowed(flt, exception.record)
        if narrowed is not None:
            reads.append((narrowed, [_ids(db, standing.ids("resolved"), negate=True)],
                          False))
    return reads


def _narrowed(flt: FindingFilter, scope: Mapping[str, Any]) -> FindingFilter | None:
    """The filter within an exception's scope, None when they do not meet."""
    changes: dict[str, Any] = {}
    for name, value in (("account", scope.get("account_id")), ("provider", scope.get("provider")),
                        ("rule", scope.get("rule"))):
        if value is None:
            continue
        if getattr(flt, name) not in (None, value):
            return None
        changes[name] = value
    low = scope["from_ms"] if flt.from_ms is None else max(flt.from_ms, scope["from_ms"])
    high = scope["to_ms"] if flt.to_ms is None else min(flt.to_ms, scope["to_ms"])
    if low >= high:
        return None
    return replace(flt, **changes, from_ms=low, to_ms=high)


def _ids(db: Database, ids: list[str], *, negate: bool = False) -> _Condition:
    """entry_id in (or not in) `ids`: one parameter, a JSON array (SQLite) or an array
    (PostgreSQL), however many ids."""
    if not ids:
        return ("1 = 1" if negate else "1 = 0"), []
    if db.postgres:
        return f"{'NOT ' if negate else ''}(entry_id = ANY(?))", [list(ids)]
    return (f"entry_id {'NOT ' if negate else ''}IN (SELECT value FROM json_each(?))",
            [orjson.dumps(list(ids)).decode()])


def _scope(db: Database, scope: Mapping[str, Any]) -> _Condition:
    """A finding inside the exception's scope (as `exception_scope.covers`)."""
    where, params = ["account_id = ?"], [scope.get("account_id")]
    if scope.get("provider") is not None:
        where.append(f"{db.provider_expr} = ?")
        params.append(scope["provider"])
    if scope.get("rule") is not None:
        where.append("rule = ?")
        params.append(scope["rule"])
    where += ["occurred_at >= ?", "occurred_at < ?"]
    params += [scope["from_ms"], scope["to_ms"]]
    return "(" + " AND ".join(where) + ")", params


def _not_excepted(db: Database, standing: Standing) -> _Condition:
    scopes = [_scope(db, e.record) for e in standing.in_force]
    if not scopes:
        return "1 = 1", []
    # COALESCE: a leaf without a provider makes its term NULL, which is "not inside"
    return (f"NOT COALESCE({' OR '.join(sql for sql, _ in scopes)}, FALSE)",
            [value for _, params in scopes for value in params])


def open_findings_where(db: Database, standing: Standing) -> _Condition:
    """The SQL condition on `entries` (and its parameters) of a finding that is still
    open, in the desk's wide sense: not resolved by its reviews, and not inside an
    exception in force at `standing.at_ms`. The one definition: the findings table's
    "active" and "open" statuses, the accounts page and the desk's gauges (and so the
    alert on the oldest open critical finding) all go through it."""
    resolved, resolved_params = _ids(db, standing.ids("resolved"), negate=True)
    excepted, excepted_params = _not_excepted(db, standing)
    return f"{resolved} AND {excepted}", [*resolved_params, *excepted_params]


def _read(db: Database, flt: FindingFilter, rule: str | None, cursor: Cursor | None,
          limit: int, newer: bool, conditions: Sequence[_Condition] = (),
          by_id: bool = False) -> list[tuple[Any, ...]]:
    where, params, source = ["kind = 'finding'"], list[Any](), "entries"
    if by_id:
        # The few reviewed ids are looked up one by one on the (kind, entry_id) index,
        # the page sorted after: on SQLite the ids' table drives the loop (CROSS JOIN
        # fixes the order; left to itself, the planner walks the time index to save the
        # sort, and reads every finding), and every other term is hidden from the index
        # choice. PostgreSQL's planner sees the array's size.
        ids_sql, ids_params = conditions[0]
        conditions = conditions[1:]
        if not ids_params:
            return []  # no finding has that status
        if db.postgres:
            where.append(ids_sql)
            params.extend(ids_params)
        else:
            source = "json_each(?) AS chosen CROSS JOIN entries"
            where.append("entry_id = chosen.value")
            params.extend(ids_params)
    equal = [(column, value) for column, value in (
        ("subject_id", flt.subject), ("account_id", flt.account), ("rule", rule),
        (db.provider_expr, flt.provider)) if value is not None]
    for number, (column, value) in enumerate(equal):
        # The first (the most selective: a subject has a few findings, an account some
        # hundreds, a rule or a provider a large share) picks the index; SQLite, which
        # has no statistics, is told not to use the others ('+' hides a term from its
        # index choice). PostgreSQL's planner chooses from its statistics.
        hide = "+" if (number or by_id) and not db.postgres else ""
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
    hide_time = "+" if by_id and not db.postgres else ""
    for clause, bound in ((f"{hide_time}occurred_at >= ?", low),
                          (f"{hide_time}occurred_at < ?", high)):
        if bound is not None:
            where.append(clause)
            params.append(bound)
    if cursor is not None:
        where.append(f"(occurred_at, idx) {'>' if newer else '<'} (?, ?)")
        params.extend((cursor.occurred_at, cursor.idx))
    for sql, values in conditions:
        where.append(sql)
        params.extend(values)
    params.append(limit)
    order = "ASC" if newer else "DESC"
    return db.query(f"SELECT {_LIST_COLUMNS} FROM {source} WHERE {' AND '.join(where)} "
                    f"ORDER BY occurred_at {order}, idx {order} LIMIT ?", params)


# -- statuses -----------------------------------------------------------------------------

_INDEXES: weakref.WeakKeyDictionary[Database, StatusIndex] = weakref.WeakKeyDictionary()


def status_index(db: Database) -> StatusIndex:
    """The fold of the reviews of `db`'s ledger (one per Database)."""
    index = _INDEXES.get(db)
    if index is None:
        index = _INDEXES.setdefault(db, StatusIndex())
    return index


def standing(db: Database) -> Standing:
    """Where every finding stands now (see standing.py)."""
    return status_index(db).refresh(db)


def _marked(db: Database, standing: Standing) -> dict[str, tuple[str, str, int, str]]:
    """Every finding whose status is not "open": (rule, account, occurred_at, status) by
    finding id. Few: the reviewed findings (one lookup each by the unique index) and the
    findings inside an exception in force (each exception's account index)."""
    marked: dict[str, tuple[str, str, int, str]] = {}
    reviewed = [i for state in STATUSES if state != "open" for i in standing.ids(state)]
    if reviewed:
        sql, params = _ids(db, reviewed)
        for entry_id, rule, account, occurred in db.query(
                "SELECT entry_id, rule, account_id, occurred_at FROM entries "
                f"WHERE kind = 'finding' AND {sql}", params):
            state = standing.review_status(str(entry_id)).state
            marked[str(entry_id)] = (str(rule), str(account), int(occurred), state)
    for exception in standing.in_force:
        sql, params = _scope(db, exception.record)
        for entry_id, rule, account, occurred in db.query(
                "SELECT entry_id, rule, account_id, occurred_at FROM entries "
                f"WHERE kind = 'finding' AND {sql}", params):
            if marked.get(str(entry_id), ("", "", 0, ""))[3] != "resolved":
                marked[str(entry_id)] = (str(rule), str(account), int(occurred), "excepted")
    return {i: m for i, m in marked.items() if m[3] != "open"}


def reviews_of(db: Database, finding_id: str) -> list[LedgerEntry]:
    """The finding's reviews in ledger order (the order they fold in), each checked."""
    rows = db.query(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE finding_id = ? "
                    "AND kind = 'review' ORDER BY idx", (finding_id,))
    return [checked_row(values) for values in rows]


def exports(db: Database) -> list[dict[str, Any]]:
    """Every recorded export, newest first (as `Ledger.exports`: the schema-1 table's,
    then the export leaves, each leaf checked)."""
    legacy = [{"actor": actor, "purpose": purpose, "query": orjson.loads(query),
               "manifest_sha256": digest, "at_ms": int(at_ms), "leaf": None}
              for actor, purpose, query, digest, at_ms in db.query(
                  "SELECT actor, purpose, query, bundle_sha256, at_ms FROM exports "
                  "ORDER BY seq")]
    leaves = [checked_row(values) for values in db.query(
        f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE kind = 'export' ORDER BY idx")]
    made = [{**entry.record, "leaf": entry.index} for entry in leaves]
    return list(reversed(legacy + made))


# -- one finding ------------------------------------------------------------------------


def finding(db: Database, finding_id: str) -> LedgerEntry | None:
    """The finding, its leaf checked against its hash and columns (LedgerTampered if
    not); None when the ledger holds no finding of that id."""
    rows = db.query(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE kind = 'finding' "
                    "AND entry_id = ?", (finding_id,))
    return checked_row(rows[0]) if rows else None


def amendments_of(db: Database, finding_id: str) -> list[LedgerEntry]:
    """The finding's amendments in ledger order (by the ledger's finding_id column, each
    checked against its leaf)."""
    rows = db.query(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE finding_id = ? "
                    "AND kind = 'amendment' ORDER BY idx", (finding_id,))
    return [checked_row(values) for values in rows]


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """The latest signed checkpoint, as stored (the desk holds no public key to check its
    signature: `consentwatch verify` does that on a bundle)."""

    size: int
    key_name: str
    signed_at: int


def latest_checkpoint(db: Database) -> CheckpointInfo | None:
    rows = db.query("SELECT size, key_name, signed_at FROM checkpoints "
                    "ORDER BY size DESC, seq DESC LIMIT 1")
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


def accounts(db: Database, standing: Standing | None = None) -> list[AccountRow]:
    """Every account with an open finding (`open_findings_where`), the one whose oldest
    is oldest first: every finding counted from the (account, rule) index, less the
    few resolved or excepted; the oldest read again only where it is one of those."""
    standing = standing or status_index(db).refresh(db)
    catalogue = {rule.id: rule.severity for rule in load_catalogue().rules}
    counts: dict[tuple[str, str], list[int]] = {
        (str(account), str(rule)): [int(count), int(oldest)]
        for account, rule, count, oldest in db.query(
            "SELECT account_id, rule, COUNT(*), MIN(occurred_at) FROM entries "
            "WHERE kind = 'finding' GROUP BY account_id, rule")}
    touched = set()
    for rule, account, occurred, status in _marked(db, standing).values():
        if status in ("resolved", "excepted") and (account, rule) in counts:
            counts[(account, rule)][0] -= 1
            if occurred == counts[(account, rule)][1]:
                touched.add((account, rule))  # its oldest is closed: the next one is
    where, params = open_findings_where(db, standing)
    for account, rule in touched:
        if counts[(account, rule)][0] > 0:
            first = db.query("SELECT occurred_at FROM entries WHERE kind = 'finding' AND "
                             f"account_id = ? AND rule = ? AND {where} "
                             "ORDER BY occurred_at LIMIT 1", [account, rule, *params])
            counts[(account, rule)][1] = int(first[0][0]) if first else 0
    by_account: dict[str, AccountRow] = {}
    for (account_id, rule), (count, oldest) in counts.items():
        if count <= 0:
            continue
        row = by_account.setdefault(account_id, AccountRow(account_id))
        row.total += count
        row.by_rule[rule] = count
        severity = catalogue.get(rule, "UNKNOWN")
        row.by_severity[severity] = row.by_severity.get(severity, 0) + count
        if row.oldest_ms is None or oldest < row.oldest_ms:
            row.oldest_ms = oldest
    return sorted(by_account.values(),
                  key=lambda r: (r.oldest_ms if r.oldest_ms is not None else 0, r.account_id))


# -- the desk's gauges --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenCount:
    """A rule's open findings (`open_findings_where`): how many in each review state
    (open, acknowledged, assigned)."""

    rule: str
    by_status: dict[str, int]


def open_counts(db: Database, standing: Standing | None = None) -> list[OpenCount]:
    """Open findings by rule and review state: every finding counted from the rule
    index, less the few reviewed or excepted."""
    standing = standing or status_index(db).refresh(db)
    totals = {str(rule): int(count) for rule, count in db.query(
        "SELECT rule, COUNT(*) FROM entries WHERE kind = 'finding' GROUP BY rule")}
    by_status = {rule: {"open": total, "acknowledged": 0, "assigned": 0}
                 for rule, total in totals.items()}
    for rule, _, _, status in _marked(db, standing).values():
        if rule in by_status:
            by_status[rule]["open"] -= 1
            if status in ("acknowledged", "assigned"):
                by_status[rule][status] += 1
    return [OpenCount(rule, counts) for rule, counts in sorted(by_status.items())
            if sum(counts.values()) > 0]


def first_detected(db: Database, standing: Standing, from_idx: int = 0,
                   page: int = 10_000) -> tuple[dict[str, int], int]:
    """The earliest detected_at of the open findings of each rule among the leaves from
    `from_idx` on (a finding's occurred_at where its leaf has no integer detected_at),
    and the leaf index to go on from next time: findings never change, so a caller adds
    the new leaves' to what it had, and starts again at 0 when `standing` changed.

    Every open finding is looked at: one detected late, or a backfill of old events,
    must neither hide an older one nor pass for old itself."""
    where, params = open_findings_where(db, standing)
    earliest: dict[str, int] = {}
    after = from_idx - 1
    while True:
        rows = db.query("SELECT idx, rule, occurred_at, leaf FROM entries WHERE "
                        f"kind = 'finding' AND idx > ? AND {where} ORDER BY idx LIMIT ?",
                        [after, *params, page])
        for idx, rule_of, occurred_at, leaf in rows:
            try:
                value = orjson.loads(bytes(leaf)).get("detected_at")
            except (orjson.JSONDecodeError, AttributeError):
                value = None
            detected = value if type(value) is int else int(occurred_at)
            rule = str(rule_of)
            if detected < earliest.get(rule, detected + 1):
                earliest[rule] = detected
            after = int(idx)
        if len(rows) < page:
            break
    size = int(db.query("SELECT size FROM tree_state WHERE id = 1")[0][0])
    return earliest, max(size, after + 1)
