"""What every ledger backend offers: the `Ledger` protocol and the `LedgerEntry` it yields.

The ledger is the append-only store of findings and amendments that exports and
regulators rely on. Each stored record is one leaf of an RFC 9162 Merkle tree, in the
order it was stored; the leaf data is the RFC 8785 canonical JSON of the record, so
anyone can recompute a leaf hash from the record alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.errors import ConsentwatchError

__all__ = ["CHECKPOINT_ORIGIN", "AuditedTree", "InvalidRecord", "Kind", "Ledger", "LedgerEntry",
           "LedgerError", "LedgerTampered"]

Kind = Literal["finding", "amendment"]

#: The origin line of every checkpoint the ledger signs.
CHECKPOINT_ORIGIN = "consentwatch ledger"


class LedgerError(ConsentwatchError):
    """The ledger cannot be opened or written (one line, no personal data)."""


class InvalidRecord(LedgerError):
    """A record the ledger cannot store: not an object, or a required field missing or of
    the wrong type. The message names the field, never its value."""


class LedgerTampered(LedgerError):
    """The stored ledger contradicts itself or a checkpoint it signed: a leaf whose hash or
    columns disagree with its bytes, a missing leaf, a tree that is not an extension of
    the last signed one. The message names the leaf index and column, never a value."""


@dataclass(frozen=True, slots=True)
class AuditedTree:
    """A tree recomputed from the stored leaf bytes, and the checkpoint signed of it.

    `leaf_hashes` are the RFC 9162 hashes of the first `size` leaves, computed from their
    bytes (never read from the leaf_hash column); `note` is the signed checkpoint of
    (size, root).
    """

    note: str
    size: int
    root: bytes
    leaf_hashes: list[bytes]


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One stored record and its place in the tree.

    `index` is the 0-based leaf index; `leaf` the RFC 8785 bytes of `record` (its
    leaf hash is `merkle.leaf_hash(leaf)`). `entry_id` is the finding_id or the
    amendment_id. Amendments carry no account, so their `account_id` is "".
    """

    index: int
    kind: str
    entry_id: str
    occurred_at: int
    rule: str
    account_id: str
    subject_id: str
    record: dict[str, Any]
    leaf: bytes


class Ledger(Protocol):
    """The evidence ledger, on SQLite or PostgreSQL (see `open_ledger`)."""

    def append(self, kind: Kind, records: Iterable[dict[str, Any]]) -> int:
        """Store the records not stored yet, in ONE transaction; returns how many were new.

        Idempotent by finding_id (kind "finding") or amendment_id (kind "amendment"):
        a record whose id is already there is skipped, whatever its content. Raises
        `InvalidRecord` (nothing stored) when a record lacks the fields the ledger needs.
        """
        ...

    def size(self) -> int:
        """The number of leaves (findings and amendments together)."""
        ...

    def leaf_hashes(self, size: int | None = None) -> list[bytes]:
        """The first `size` leaf hashes (all when None), in leaf order."""
        ...

    def entries(self, *, kind: Kind = "finding", from_ms: int | None = None,
                to_ms: int | None = None, rule: str | None = None,
                account: str | None = None, subject: str | None = None,
                ) -> Iterator[LedgerEntry]:
        """Stored entries of one kind in leaf order, filtered.

        The window is half-open on `occurred_at`: from_ms <= occurred_at < to_ms;
        either bound may be None. rule/account/subject match exactly.
        """
        ...

    def checkpoint(self, key: Ed25519PrivateKey, key_name: str) -> str:
        """Sign the current tree (origin CHECKPOINT_ORIGIN), store the note and return it."""
        ...

    def audited_checkpoint(self, key: Ed25519PrivateKey, key_name: str) -> AuditedTree:
        """Recompute the tree from every stored leaf's bytes, check it, then sign it.

        Raises `LedgerTampered`, signing and storing nothing, when a leaf's stored hash
        or columns disagree with its bytes, a leaf is missing, the tree state disagrees
        with the leaves, or the tree is not consistent (RFC 9162) with the latest
        checkpoint stored that this key signed.
        """
        ...

    def latest_checkpoint(self) -> str | None:
        """The note of the checkpoint signed last, or None before the first."""
        ...

    def record_export(self, actor: str, purpose: str, query: dict[str, Any],
                      bundle_sha256: str, at_ms: int) -> None:
        """Keep, append-only, who exported what, when and why."""
        ...

    def exports(self) -> list[dict[str, Any]]:
        """Every recorded export, oldest first: dicts with actor, purpose, query,
        bundle_sha256, at_ms."""
        ...

    def close(self) -> None:
        """Release the connection; the ledger cannot be used afterwards."""
        ...
