"""From a finding or amendment record to the row the ledger stores, and back.

The leaf data is the RFC 8785 canonical JSON of the record as received: the same
finding read from the findings topic or from a `replay --out` file gives the same
bytes, hence the same leaf hash, whatever the key order of its source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import rfc8785

from streams.evidence.ledger.base import InvalidRecord, Kind, LedgerEntry, LedgerTampered
from streams.evidence.merkle import leaf_hash

__all__ = ["ID_FIELDS", "Row", "StoredRow", "check_kind", "checked_entry", "checked_row",
           "record_of", "to_row"]

#: The field that makes a record unique in the ledger, per kind.
ID_FIELDS: dict[str, str] = {"finding": "finding_id", "amendment": "amendment_id"}

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


#: The columns derived from the leaf, compared with what the leaf gives.
_INDEX_COLUMNS = ("entry_id", "occurred_at", "rule", "account_id", "subject_id")
_EDITED = "(was the database edited?)"


def check_kind(kind: str) -> Kind:
    if kind == "finding":
        return "finding"
    if kind == "amendment":
        return "amendment"
    raise InvalidRecord(f"unknown ledger entry kind {kind!r} (finding or amendment)")


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
    return Row(kind=kind, entry_id=record[ID_FIELDS[kind]], occurred_at=record["occurred_at"],
               rule=record["rule"], account_id=record.get("account_id", "") or "",
               subject_id=record["subject_id"], leaf=leaf, leaf_hash=leaf_hash(leaf))


def _check_fields(kind: str, record: Any) -> None:
    """What the ledger indexes is there, of the right type (InvalidRecord names the field)."""
    check_kind(kind)
    if not isinstance(record, Mapping):
        raise InvalidRecord(f"a {kind} must be a JSON object")
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
    return Row(kind=stored.kind, entry_id=record[ID_FIELDS[stored.kind]],
               occurred_at=record["occurred_at"], rule=record["rule"],
               account_id=record.get("account_id", "") or "", subject_id=record["subject_id"],
               leaf=stored.leaf, leaf_hash=leaf_hash(stored.leaf))


def checked_entry(stored: StoredRow) -> LedgerEntry:
    """The entry of a stored row, every value taken from its leaf bytes (see `checked_row`)."""
    row = checked_row(stored)
    return LedgerEntry(index=stored.index, kind=row.kind, entry_id=row.entry_id,
                       occurred_at=row.occurred_at, rule=row.rule, account_id=row.account_id,
                       subject_id=row.subject_id, record=record_of(row.leaf), leaf=row.leaf)
