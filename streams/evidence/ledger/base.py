"""What every ledger backend offers: the `Ledger` protocol and the `LedgerEntry` it yields.

The ledger is the append-only store of findings and amendments that exports and
regulators rely on, and of what people did with them: reviews, exceptions and exports
(issue 17). Each stored record is one leaf of an RFC 9162 Merkle tree, in the
order it was stored; the leaf data is the RFC 8785 canonical JSON of the record, so
anyone can recompute a leaf hash from the record alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.errors import ConsentwatchError

if TYPE_CHECKING:
    from streams.evidence.review import ReviewStatus

__all__ = ["CHECKPOINT_ORIGIN", "KINDS", "AuditedTree", "InvalidRecord", "Kind", "Ledger",
           "LedgerEntry", "LedgerError", "LedgerTampered"]

Kind = Literal["finding", "amendment", "review", "exception", "export"]
#: Every kind of record the ledger stores, each a leaf of the one tree.
KINDS: tuple[Kind, ...] = ("finding", "amendment", "review", "exception", "export")

#: The origin line of the checkpoints of a ledger that signed some before origins were
#: per ledger; every other ledger's is this followed by a space and its ledger id
#: (`Ledger.checkpoint_origin`), so that witnesses, which keep their state per origin,
#: tell ledgers apart.
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
    leaf hash is `merkle.leaf_hash(leaf)`). `entry_id` is the record's id (finding_id,
    amendment_id, review_id, exception_id, export_id); `finding_id` the finding a
    finding, amendment or review is about ("" for exceptions and exports). Columns a
    kind has no value for are "" (see `records`); `occurred_at` of a review,
    exception or export is its `at_ms`.
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
    finding_id: str = ""


class Ledger(Protocol):
    """The evidence ledger, on SQLite or PostgreSQL (see `open_ledger`)."""

    def append(self, kind: Kind, records: Iterable[dict[str, Any]]) -> int:
        """Store the records not stored yet, in ONE transaction; returns how many were new.

        Idempotent by the kind's id (finding_id, amendment_id, review_id, exception_id,
        export_id): a record whose id is already there is skipped, whatever its content.
        Raises `InvalidRecord` (nothing stored) when a record lacks the fields the ledger
        needs, and when a review is refused: its finding (or the original it names as
        duplicate_of) is not in the ledger, its prev_review_id is not its finding's
        latest review (written against a stale view), its at_ms is earlier than that
        review's, or its finding's status does not allow its action
        (`streams.evidence.review`); and when a new review or exception is dated (at_ms)
        more than 5 minutes from the ledger's clock.
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
                finding: str | None = None) -> Iterator[LedgerEntry]:
        """Stored entries of one kind in leaf order, filtered.

        The window is half-open on `occurred_at` (`at_ms` for reviews, exceptions and
        exports): from_ms <= occurred_at < to_ms; either bound may be None.
        rule/account/subject/finding match the entry's columns exactly.
        """
        ...

    def finding(self, finding_id: str) -> LedgerEntry | None:
        """The stored finding of this id, or None."""
        ...

    def reviews(self, finding_id: str) -> list[LedgerEntry]:
        """The reviews of one finding in ledger order (the order `review.fold` takes)."""
        ...

    def reviews_of(self, finding_ids: Iterable[str]) -> dict[str, list[LedgerEntry]]:
        """The reviews of many findings at once, by finding_id, each in ledger order
        (findings without reviews are left out)."""
        ...

    def review_status(self, finding_id: str) -> ReviewStatus:
        """The fold of the finding's reviews."""
        ...

    def review_statuses(self, finding_ids: Iterable[str]) -> dict[str, ReviewStatus]:
        """The status of each of the findings (open for one without reviews)."""
        ...

    def exceptions(self, *, account: str | None = None) -> list[LedgerEntry]:
        """Every recorded exception (of one account when given), in ledger order."""
        ...

    def covering_exceptions(self, finding: Mapping[str, Any], at_ms: int) -> list[LedgerEntry]:
        """The exceptions in force at `at_ms` whose scope covers the finding (a finding
        record): it is excepted at `at_ms` when this is not empty."""
        ...

    def checkpoint(self, key: Ed25519PrivateKey, key_name: str) -> str:
        """Sign the current tree (origin `checkpoint_origin()`), store the note, return it."""
        ...

    def checkpoint_origin(self) -> str:
        """The origin line of this ledger's checkpoints: `consentwatch ledger <ledger id>`,
        fixed when the first is signed; CHECKPOINT_ORIGIN for a ledger that signed
        checkpoints before origins were per ledger (its old checkpoints stay valid)."""
        ...

    def add_cosigned(self, note: str, size: int, root: bytes, key_name: str) -> None:
        """Store `note`, a checkpoint this ledger signed (size, root) with witness
        cosignatures added, as one more checkpoint row (the caller checks it)."""
        ...

    def audit(self) -> tuple[int, bytes, list[bytes]]:
        """Recompute the tree from every stored leaf's bytes: (size, root, leaf hashes);
        LedgerTampered when a leaf or the tree state disagrees with them."""
        ...

    def checkpoint_rows(self) -> list[dict[str, Any]]:
        """Every stored checkpoint, oldest first: size, root, key_name, signed_at, note."""
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

    def checkpoint_notes(self, size: int) -> list[str]:
        """The notes of every stored checkpoint of tree size `size`, oldest first (by any
        key: the caller verifies them)."""
        ...

    def add_timestamp(self, size: int, root: bytes, token: bytes) -> None:
        """Store `token`, an RFC 3161 time-stamp reply (DER) of the checkpoint of tree
        (size, root) (streams/evidence/timestamp.py; the caller checks it)."""
        ...

    def timestamp_token(self, size: int, root: bytes) -> bytes | None:
        """The time-stamp reply stored last for the checkpoint of tree (size, root)."""
        ...

    def record_export(self, actor: str, purpose: str, query: dict[str, Any],
                      bundle_sha256: str, at_ms: int) -> None:
        """Append who exported what, when and why as a ledger leaf of kind `export`
        (`bundle_sha256` is the SHA-256 of the bundle's manifest.json)."""
        ...

    def exports(self) -> list[dict[str, Any]]:
        """Every recorded export, oldest first: dicts with actor, purpose, query,
        bundle_sha256, at_ms (those a schema-1 ledger kept in its exports table, then
        the export leaves)."""
        ...

    def close(self) -> None:
        """Release the connection; the ledger cannot be used afterwards."""
        ...
