"""`export --require-witnesses N --witness-key FILE...` (issue 18): export against a
checkpoint the witnesses cosigned, never one signed just now.

Witnesses cosign out of band (docs/witnesses.md): `consentwatch ledger checkpoint` signs
and prints a checkpoint, each witness cosigns it, `consentwatch ledger add-cosignature`
stores the cosigned note. The export then uses the **newest stored checkpoint of this
ledger, signed by the export's key, with at least N valid cosignatures by the witness
keys given** (cosignatures by other keys are not counted, a damaged one is not counted),
after recomputing the tree from every leaf's bytes and checking that checkpoint's root
is the root of the first `size` leaves. When no stored checkpoint has N, the export is
refused with one line naming the best found. The bundle carries that cosigned note as
its checkpoint, so `verify --witness-key` can count the same cosignatures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from streams.errors import ConsentwatchError
from streams.evidence.cosignature import WitnessKey, check_cosignatures
from streams.evidence.export.previous import own_checkpoint
from streams.evidence.ledger import AuditedTree, LedgerTampered
from streams.evidence.merkle import root_hash

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from streams.evidence.ledger import Ledger

__all__ = ["TooFewCosignatures", "WitnessPolicy", "cosigned_tree"]


class TooFewCosignatures(ConsentwatchError):
    """No stored checkpoint has the cosignatures the export requires (one line)."""


@dataclass(frozen=True, slots=True)
class WitnessPolicy:
    """How many valid cosignatures, by which witness keys, an export requires."""

    required: int
    keys: tuple[WitnessKey, ...]


def cosigned_tree(ledger: Ledger, public_key: Ed25519PublicKey,
                  policy: WitnessPolicy) -> AuditedTree:
    """The audited tree of the newest cosigned checkpoint meeting `policy` (module doc)."""
    size, _root, hashes = ledger.audit()
    origin = ledger.checkpoint_origin()
    best: tuple[int, int] | None = None  # (cosignatures, size) of the best one short of N
    for row in reversed(ledger.checkpoint_rows()):
        note = row["note"]
        checkpoint = own_checkpoint(note, public_key, origin)
        if checkpoint is None:
            continue
        count = len(check_cosignatures(note, list(policy.keys)).signed)
        if count < policy.required:
            if best is None or count > best[0]:
                best = (count, checkpoint.size)
            continue
        if checkpoint.size > size or root_hash(hashes[:checkpoint.size]) != checkpoint.root:
            raise LedgerTampered(f"the cosigned checkpoint of size {checkpoint.size} is not the "
                                 f"tree of the ledger's first {checkpoint.size} leaves: leaves "
                                 "were rewritten (was the database edited?)")
        return AuditedTree(note=note, size=checkpoint.size, root=checkpoint.root,
                           leaf_hashes=hashes[:checkpoint.size])
    found = ("no checkpoint of this ledger signed by this key is cosigned" if best is None
             or best[0] == 0 else
             f"the most found: {best[0]} on the checkpoint of size {best[1]}")
    raise TooFewCosignatures(f"export refused: no checkpoint has {policy.required} valid witness "
                             f"cosignatures by the --witness-key keys given ({found}); "
                             "see docs/witnesses.md: ledger checkpoint, witness cosign, "
                             "ledger add-cosignature")
