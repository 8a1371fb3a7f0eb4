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

from streams.evidence.ledger.base import InvalidRecord, Kind
from streams.evidence.merkle import leaf_hash

__all__ = ["ID_FIELDS", "Row", "check_kind", "record_of", "to_row"]

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
    check_kind(kind)
    if not isinstance(record, Mapping):
        raise InvalidRecord(f"a {kind} must be a JSON object")
    for name in _TEXT_FIELDS[kind]:
        value = record.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidRecord(f"the {kind} has no {name} (a non-empty string)")
    occurred_at = record.get("occurred_at")
    if type(occurred_at) is not int:
        raise InvalidRecord(f"the {kind} has no occurred_at (epoch milliseconds)")
    try:
        leaf = rfc8785.dumps(dict(record))
    except rfc8785.CanonicalizationError as exc:
        raise InvalidRecord(f"the {kind} cannot be written as canonical JSON "
                            f"({type(exc).__name__})") from None
    return Row(kind=kind, entry_id=record[ID_FIELDS[kind]], occurred_at=occurred_at,
               rule=record["rule"], account_id=record.get("account_id", "") or "",
               subject_id=record["subject_id"], leaf=leaf, leaf_hash=leaf_hash(leaf))


def record_of(leaf: bytes) -> dict[str, Any]:
    """The record a stored leaf holds."""
    record: dict[str, Any] = orjson.loads(leaf)
    return record
