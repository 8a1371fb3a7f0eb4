"""The manifest's `previous` (bundle format /3, issue 18): the previous export's signed
checkpoint and the RFC 9162 consistency proof from it to this export's checkpoint.

Which export is "previous": the **last export leaf of the tree this export proves**
(leaf index below its checkpoint's size N), i.e. the latest export the ledger had
recorded when it signed this export's checkpoint. Export leaves are part of the tree, so
the choice is the ledger's own record, not the exporter's; and following `previous`
from each bundle to the one before walks every export of the ledger in the order they
were recorded (two exports signed at once may both point to the same earlier one: then a
proof between them comes from `consentwatch ledger prove`).

The previous checkpoint is the note the previous bundle carries: the export leaf
records its tree size (`query.checkpoint_size`), and the ledger keeps every checkpoint
it signed; a checkpoint is a deterministic text and Ed25519 signatures are
deterministic (RFC 8032), so the stored note of that size by this key is, byte for
byte, the previous bundle's. Its root must be the root of the audited tree's first
`size` leaves, else the ledger was rewritten since and the export is refused. When no
stored note of that size was signed by this key (the previous export was signed with
another key), `previous` is null: this key cannot vouch for another key's checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streams.evidence.checkpoint import (
    Checkpoint,
    CheckpointError,
    NotSignedByKey,
    verify_checkpoint,
)
from streams.evidence.ledger import LedgerTampered
from streams.evidence.merkle import consistency_proof, leaf_hash, root_hash

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from streams.evidence.ledger import AuditedTree, Ledger, LedgerEntry

__all__ = ["own_checkpoint", "previous_export"]


def own_checkpoint(note: str, public_key: Ed25519PublicKey, origin: str
                   ) -> Checkpoint | None:
    """The checkpoint of a stored note when `public_key` signed it for this ledger's
    `origin`; None for another key's or origin's; LedgerTampered for a note that is not
    a valid checkpoint at all."""
    try:
        checkpoint = verify_checkpoint(note, public_key)
    except NotSignedByKey:
        return None
    except CheckpointError as exc:
        raise LedgerTampered(f"a stored checkpoint is not valid: {exc} (was the database "
                             "edited?)") from None
    return checkpoint if checkpoint.origin == origin else None


def previous_export(ledger: Ledger, tree: AuditedTree,
                    public_key: Ed25519PublicKey) -> dict[str, Any] | None:
    """The manifest's `previous` for an export proving `tree`, or None (first export, or
    the previous one signed by another key). LedgerTampered when the ledger contradicts
    the previous export's checkpoint."""
    last: LedgerEntry | None = None
    for entry in ledger.entries(kind="export"):
        if entry.index < tree.size:
            last = entry
    if last is None:
        return None
    if leaf_hash(last.leaf) != tree.leaf_hashes[last.index]:
        raise LedgerTampered(f"ledger leaf {last.index} changed after the ledger was checked "
                             "(was the database edited?)")
    size = last.record["query"].get("checkpoint_size")
    if type(size) is not int or not 0 <= size <= last.index:
        raise LedgerTampered(f"the export at ledger leaf {last.index} names no checkpoint "
                             "size below its own leaf (was the database edited?)")
    root = root_hash(tree.leaf_hashes[:size])
    origin = ledger.checkpoint_origin()
    note = None
    for candidate in ledger.checkpoint_notes(size):
        checkpoint = own_checkpoint(candidate, public_key, origin)
        if checkpoint is None:
            continue
        if checkpoint.root != root:
            raise LedgerTampered(f"the checkpoint of the previous export (size {size}) is not "
                                 f"the tree of the ledger's first {size} leaves: leaves were "
                                 "rewritten (was the database edited?)")
        note = candidate
    if note is None:
        return None
    return {"manifest_sha256": last.record["manifest_sha256"], "checkpoint": note,
            "consistency_proof": [h.hex() for h in consistency_proof(size, tree.leaf_hashes)]}
