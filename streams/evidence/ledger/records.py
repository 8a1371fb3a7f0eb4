"""From a ledger record (finding, amendment, review, exception, export) to the row the
ledger stores, and back.

The leaf data is the RFC 8785 canonical JSON of the record as received: the same
finding read from the findings topic or from a `replay --out` file gives the same
bytes, hence the same leaf hash, whatever the key order of its source.

The columns each kind fills (they only index the leaf, and are checked against it):

    kind        entry_id      occurred_at  rule   account_id  subject_id  finding_id
    finding     finding_id    occurred_at  rule   account_id  subject_id  finding_id
    amendment   amendment_id  occurred_at  rule   ""          subject_id  finding_id
    review      review_id     at_ms        ""     ""          ""          finding_id
    exception   exception_id  at_ms        rule*  account_id  ""          ""
    export      export_id     at_ms        ""     ""          ""          ""
    (* "" when the exception is for any rule)

Reviews and exceptions are checked by `streams.evidence.review` and
`streams.evidence.exception_scope` (the offline verifier runs the same checks); an
export record here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import rfc8785

from streams.evidence.exception_scope import check_exception
from streams.evidence.ledger.base import KINDS, InvalidRecord, Kind, LedgerEntry, LedgerTampered
from streams.evidence.merkle import leaf_hash
from streams.evidence.review import TrailError, check_review, record_id

__all__ = ["FOREIGN_ID_FIELDS", "ID_FIELDS", "Row", "StoredRow", "check_kind", "checked_entry",
           "checked_row", "export_record", "record_of", "to_row"]

#: The field that makes a record unique in the ledger, per kind.
ID_FIELDS: dict[str, str] = {"finding": "finding_id", "amendment": "amendment_id",
                             "review": "review_id", "exception": "exception_id",
                             "export": "export_id"}

#: Per kind, the id fields of other kinds its records must not hold: a leaf carries no
#: kind, and a verifier tells a finding from an amendment or a review by them
#: (streams/evidence/verify.py, which ships without this module, keeps the same table).
FOREIGN_ID_FIELDS: dict[str, tuple[str, ...]] = {
    "finding": ("amendment_id", "review_id", "exception_id", "export_id"),
    "amendment": ("review_id", "exception_id", "export_id"),
}

_TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "finding": ("finding_id", "rule", "subject_id", "account_id"),
    "amendment": ("amendment_id", "finding_id", "rule", "subject_id"),
}


@dataclass(frozen=True, slots=True)
class Row:
    """What the ledger stores for one record; `index` is assigned when it is appended."""

    kind: str
    entry_id: str
    occurred_at: int
    rule: str
    account_id: str
    subject_id: str
    leaf: bytes
    leaf_hash: bytes
    finding_id: str = ""


@dataclass(frozen=True, slots=True)
class StoredRow:
    """A row as read back from the database. Its columns are only an index: whoever can
    write to the database can change them, so they are checked against the leaf bytes."""

    index: int
    kind: str
    entry_id: str
    occurred_at: int
    rule: str
    account_id: str
    subject_id: str
    leaf: bytes
    leaf_hash: bytes
    finding_id: str = ""


#: The columns derived from the leaf, compared with what the leaf gives.
_INDEX_COLUMNS = ("entry_id", "occurred_at", "rule", "account_id", "subject_id", "finding_id")
_EDITED = "(was the database edited?)"


def check_kind(kind: str) -> Kind:
    for known in KINDS:
        if kind == known:
            return known
    raise InvalidRecord(f"unknown ledger entry kind {kind!r} ({', '.join(KINDS)})")


def to_row(kind: str, record: Mapping[str, Any]) -> Row:
    """Check that `record` has what the ledger indexes, and canonicalise it.

    Raises InvalidRecord naming the field, never its value.
    """
    _check_fields(kind, record)
    try:
        leaf = rfc8785.dumps(dict(record))
    except rfc8785.CanonicalizationError as exc:
        raise InvalidRecord(f"the {kind} cannot be written as canonical JSON "
                            f"({type(exc).__name__})") from None
    return _row(kind, record, leaf)


def _row(kind: str, record: Mapping[str, Any], leaf: bytes) -> Row:
    """The row of a checked record whose leaf bytes are `leaf` (see the table above)."""
    entry_id = record[ID_FIELDS[kind]]
    if kind in ("finding", "amendment"):
        return Row(kind=kind, entry_id=entry_id, occurred_at=record["occurred_at"],
                   rule=record["rule"], account_id=record.get("account_id", "") or "",
                   subject_id=record["subject_id"], leaf=leaf, leaf_hash=leaf_hash(leaf),
                   finding_id=record["finding_id"])
    return Row(kind=kind, entry_id=entry_id, occurred_at=record["at_ms"],
               rule=(record.get("rule") or "") if kind == "exception" else "",
               account_id=record["account_id"] if kind == "exception" else "",
               subject_id="", leaf=leaf, leaf_hash=leaf_hash(leaf),
               finding_id=record["finding_id"] if kind == "review" else "")


def export_record(actor: str, purpose: str, query: Mapping[str, Any], manifest_sha256: str,
                  at_ms: int) -> dict[str, Any]:
    """The ledger record (kind `export`) of one export, with its export_id: the SHA-256
    of its other fields, as for reviews (one export is recorded once, however often the
    call is retried)."""
    record: dict[str, Any] = {"actor": actor, "purpose": purpose, "query": dict(query),
                              "manifest_sha256": manifest_sha256, "at_ms": at_ms}
    try:
        record["export_id"] = record_id(record, "export_id")
    except TrailError as exc:
        raise InvalidRecord(str(exc)) from None
    _check_export(record)
    return record


_EXPORT_FIELDS = frozenset({"export_id", "actor", "purpose", "query", "manifest_sha256",
                            "at_ms"})


def _check_export(record: Mapping[str, Any]) -> None:
    if not set(record) <= _EXPORT_FIELDS:
        raise InvalidRecord("the export has a field it does not take (it takes "
                            f"{', '.join(sorted(_EXPORT_FIELDS))})")
    for name in ("export_id", "actor", "purpose", "manifest_sha256"):
        value = record.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidRecord(f"the export has no {name} (a non-empty string)")
    if not isinstance(record.get("query"), Mapping):
        raise InvalidRecord("the export has no query (a JSON object)")
    if type(record.get("at_ms")) is not int:
        raise InvalidRecord("the export has no at_ms (epoch milliseconds)")
    try:
        same = record["export_id"] == record_id(record, "export_id")
    except TrailError as exc:
        raise InvalidRecord(str(exc)) from None
    if not same:
        raise InvalidRecord("the export's export_id is not the SHA-256 of its other fields")


def _check_fields(kind: str, record: Any) -> None:
    """What the ledger indexes is there, of the right type (InvalidRecord names the field)."""
    check_kind(kind)
    if not isinstance(record, Mapping):
        raise InvalidRecord(f"a {kind} must be a JSON object")
    if kind in ("review", "exception"):
        try:
            (check_review if kind == "review" else check_exception)(record)
        except TrailError as exc:
            raise InvalidRecord(str(exc)) from None
        return
    if kind == "export":
        _check_export(record)
        return
    for name in FOREIGN_ID_FIELDS[kind]:
        if name in record:
            raise InvalidRecord(f"a {kind} must not hold {name} (the id of another kind of "
                                "ledger entry)")
    for name in _TEXT_FIELDS[kind]:
        value = record.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidRecord(f"the {kind} has no {name} (a non-empty string)")
    if type(record.get("occurred_at")) is not int:
        raise InvalidRecord(f"the {kind} has no occurred_at (epoch milliseconds)")


def record_of(leaf: bytes) -> dict[str, Any]:
    """The record a stored leaf holds."""
    record: dict[str, Any] = orjson.loads(leaf)
    return record


def checked_row(stored: StoredRow, *, canonical: bool = True) -> Row:
    """The row the leaf bytes give, once the stored hash and columns agree with it.

    With `canonical`, the leaf must also be the RFC 8785 form of its record, which costs
    a re-serialisation (pure Python): the audit of a whole tree leaves it out, the entries
    an export writes keep it. Raises LedgerTampered naming the leaf index and the column,
    never a value.
    """
    where = f"ledger leaf {stored.index}"
    try:
        record = record_of(stored.leaf)
    except orjson.JSONDecodeError:
        raise LedgerTampered(f"{where} is not valid JSON {_EDITED}") from None
    try:
        row = to_row(stored.kind, record) if canonical else _row_as_stored(stored, record)
    except InvalidRecord as exc:
        raise LedgerTampered(f"{where} is not a {stored.kind} the ledger could have stored: "
                             f"{exc} {_EDITED}") from None
    if row.leaf != stored.leaf:
        raise LedgerTampered(f"{where} is not the canonical (RFC 8785) JSON of its record "
                             f"{_EDITED}")
    if row.leaf_hash != stored.leaf_hash:
        raise LedgerTampered(f"{where}: the stored leaf_hash is not the hash of its bytes "
                             f"{_EDITED}")
    for column in _INDEX_COLUMNS:
        if getattr(row, column) != getattr(stored, column):
            raise LedgerTampered(f"{where}: the {column} column disagrees with the leaf's "
                                 f"canonical JSON {_EDITED}")
    return row


def _row_as_stored(stored: StoredRow, record: Any) -> Row:
    """`to_row` without re-serialising: the stored bytes are taken as the leaf."""
    _check_fields(stored.kind, record)
    return _row(stored.kind, record, stored.leaf)


def checked_entry(stored: StoredRow) -> LedgerEntry:
    """The entry of a stored row, every value taken from its leaf bytes (see `checked_row`)."""
    row = checked_row(stored)
    return LedgerEntry(index=stored.index, kind=row.kind, entry_id=row.entry_id,
                       occurred_at=row.occurred_at, rule=row.rule, account_id=row.account_id,
                       subject_id=row.subject_id, record=record_of(row.leaf), leaf=row.leaf,
                       finding_id=row.finding_id)
