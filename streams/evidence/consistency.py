"""`verify NEW --since OLD`: the log only grew from OLD's checkpoint to NEW's, and every
entry of OLD is in NEW's tree unchanged (issue 18). Offline, with the public key only.

Why it holds: verifying OLD proves each of its entries is leaf `leaf_index` of OLD's
signed tree (size m, root r), byte for byte (inclusion proofs under r); an RFC 9162
consistency proof from (m, r) to NEW's signed (n, R) proves OLD's tree is the first m
leaves of NEW's. So every entry of OLD is the same leaf, at the same index, of NEW's
tree; a log rewritten and re-signed with the same key has no such proof (it would take
a SHA-256 second preimage). The proof needs no signature of its own: both roots are
signed.

Where the proof comes from:
- NEW carries one (manifest `previous`, format /3) from its previous export's
  checkpoint: it is used when that checkpoint is OLD's (same size and root);
- otherwise (OLD is an earlier export than NEW's previous one, or NEW is of format
  /1-/2) the ledger's operator writes one between any two sizes with
  `consentwatch ledger prove --from m --to n` (the file `proof_file` describes), and it
  is given with `--proof FILE`.

Bad input is one line each, never a traceback: OLD not signed by the key (another log,
another key), checkpoints of different origins, OLD newer than NEW, a proof file that
is malformed, truncated or for other sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from streams.evidence.checkpoint import Checkpoint
from streams.evidence.merkle import verify_consistency
from streams.evidence.small_file import TooLarge, read_small
from streams.evidence.verify import BundleCheck, check_bundle, parse_hashes

__all__ = ["MAX_PROOF_FILE_BYTES", "PROOF_FORMAT", "SinceReport", "proof_file", "read_proof",
           "verify_since"]

PROOF_FORMAT = "consentwatch-consistency-proof/1"
#: 128 hashes in hex are some 8.5 kB; a larger file is not a proof file.
MAX_PROOF_FILE_BYTES = 64 << 10


def proof_file(old_size: int, new_size: int, proof: list[bytes]) -> bytes:
    """The bytes of a consistency proof file (RFC 8785 JSON and a newline):
    {"format", "old_size", "new_size", "consistency_proof": [hex, ...]}."""
    return rfc8785.dumps({"format": PROOF_FORMAT, "old_size": old_size, "new_size": new_size,
                          "consistency_proof": [h.hex() for h in proof]}) + b"\n"


@dataclass(frozen=True, slots=True)
class SinceReport:
    """NEW's own check, and what comparing it with OLD found; no failures = OK."""

    new: BundleCheck
    failures: list[str]
    old_size: int = 0
    new_size: int = 0
    old_entries: int = 0
    carried: bool = False  # the proof was NEW's own (else the --proof file's)
    predecessor: bool = False  # NEW's previous export is OLD (by its manifest's SHA-256)

    def summary(self, old_name: str) -> str:
        """The OK line of a comparison without failures."""
        source = "its own previous-export proof" if self.carried else "the --proof file"
        if self.old_size == self.new_size:
            source = "the same tree"
        if self.predecessor:
            source += f"; {old_name} is its previous export"
        return (f"OK: consistent with {old_name} ({source}): its checkpoint (size "
                f"{self.old_size}) is a prefix of this one's (size {self.new_size}), so the "
                f"log only grew, and its {self.old_entries} entries are leaves of this tree, "
                "unchanged")


def verify_since(new_path: Path, old_path: Path, public_key: Ed25519PublicKey,
                 proof_path: Path | None = None) -> SinceReport:
    """Verify NEW and OLD, then that OLD's checkpoint is a prefix of NEW's (see the module
    doc). The failures are NEW's own, then OLD's (each prefixed `--since OLD:`), then
    at most one line about the consistency itself."""
    new = check_bundle(new_path, public_key)
    old = check_bundle(old_path, public_key)
    failures = list(new.failures)
    old_label = f"--since {old_path.name}"
    if old.checkpoint is None:
        reason = next((f for f in old.failures if f.startswith("checkpoint: ")), None)
        if reason is not None:
            failures.append(f"{old_label}: its checkpoint does not verify with the given key "
                            f"({reason}): a bundle of another log or key; not compared")
        else:
            failures.append(f"{old_label}: not a bundle with a checkpoint that can be read ("
                            f"{old.failures[0] if old.failures else 'no checkpoint'}); not "
                            "compared")
        return SinceReport(new, failures)
    failures += [f"{old_label}: {failure}" for failure in old.failures]
    if new.checkpoint is None:
        return SinceReport(new, failures)  # reported among NEW's failures
    problem, carried = _consistency(new, old.checkpoint, new_path.name, old_path.name,
                                    proof_path)
    if problem is None:
        problem = _same_places(new, old, new_path.name, old_path.name)
    if problem is not None:
        failures.append(problem)
    predecessor = (new.previous is not None and old.manifest_sha256 is not None
                   and new.previous.manifest_sha256 == old.manifest_sha256)
    return SinceReport(new, failures, old.checkpoint.size, new.checkpoint.size,
                       len(old.leaves), carried, predecessor)


def _consistency(new: BundleCheck, old_cp: Checkpoint, new_name: str, old_name: str,
                 proof_path: Path | None) -> tuple[str | None, bool]:
    """(the one failure line or None, whether NEW's carried proof was used)."""
    assert new.checkpoint is not None
    new_cp = new.checkpoint
    if old_cp.origin != new_cp.origin:
        return (f"consistency: {old_name}'s checkpoint is of the log {old_cp.origin!r}, "
                f"{new_name}'s of {new_cp.origin!r}: bundles of different logs; not compared",
                False)
    if old_cp.size > new_cp.size:
        return (f"consistency: {old_name}'s checkpoint (size {old_cp.size}) is larger than "
                f"{new_name}'s (size {new_cp.size}): {old_name} is the newer bundle (verify "
                "NEWER --since OLDER)", False)
    if old_cp.size == new_cp.size:
        if old_cp.root == new_cp.root:
            return None, False
        return (f"consistency: {old_name} and {new_name} have checkpoints of the same size "
                f"{new_cp.size} with different roots: the log was rewritten", False)
    carried = proof_path is None
    if proof_path is not None:
        proof, problem = _read_proof(proof_path, old_cp.size, new_cp.size)
        if problem is not None:
            return problem, False
    else:
        previous = new.previous
        if previous is None and new.previous_given:
            return None, True  # NEW's own check reported why its proof is not usable
        if previous is None or previous.checkpoint.size != old_cp.size:
            since = ("carries no consistency proof (the ledger's first export, or a bundle "
                     "of format /1 or /2)" if previous is None else
                     f"carries the consistency proof from its previous export's checkpoint "
                     f"(size {previous.checkpoint.size}), not from {old_name}'s (size "
                     f"{old_cp.size})")
            return (f"consistency: {new_name} {since}: ask the ledger's operator for "
                    f"`consentwatch ledger prove --from {old_cp.size} --to {new_cp.size} "
                    "--out FILE` and pass it with --proof FILE", False)
        if previous.checkpoint.root != old_cp.root:
            return (f"consistency: {new_name}'s previous export has a checkpoint of size "
                    f"{old_cp.size} whose root is not {old_name}'s: the log was rewritten",
                    True)
        proof = previous.consistency_proof
    if not verify_consistency(old_cp.size, new_cp.size, old_cp.root, new_cp.root, proof):
        return (f"consistency: {old_name}'s checkpoint (size {old_cp.size}) is not a prefix "
                f"of {new_name}'s (size {new_cp.size}): the consistency proof does not verify: "
                "the log was rewritten, or the proof is damaged", carried)
    return None, carried


def _read_proof(path: Path, old_size: int, new_size: int) -> tuple[list[bytes], str | None]:
    """(proof, None) from a `ledger prove` file proving old_size to new_size, or ([], why)."""
    where = f"--proof {path.name}"
    try:
        document = orjson.loads(read_small(path, MAX_PROOF_FILE_BYTES))
    except OSError as exc:
        return [], f"{where}: cannot be read ({exc.strerror})"
    except (TooLarge, orjson.JSONDecodeError):
        document = None
    if not isinstance(document, dict) or document.get("format") != PROOF_FORMAT:
        return [], (f"{where}: not a consistency proof file ({PROOF_FORMAT}, from "
                    "`consentwatch ledger prove`)")
    sizes = document.get("old_size"), document.get("new_size")
    if any(type(size) is not int for size in sizes):
        return [], f"{where}: malformed old_size or new_size"
    if sizes != (old_size, new_size):
        return [], (f"{where}: proves size {sizes[0]} to {sizes[1]}, not {old_size} to "
                    f"{new_size} (the two bundles' checkpoints)")
    proof = parse_hashes(document.get("consistency_proof"))
    if proof is None:
        return [], f"{where}: consistency_proof is not a list of SHA-256 hashes (hex)"
    return proof, None


def _same_places(new: BundleCheck, old: BundleCheck, new_name: str,
                 old_name: str) -> str | None:
    """An entry in both bundles must be the same leaf at the same index (it is, when both
    verified and the trees are consistent, unless the ledger stored one id twice)."""
    moved = sorted(key for key, place in old.leaves.items()
                   if key in new.leaves and new.leaves[key] != place)
    if not moved:
        return None
    name, entry_id = moved[0]
    return (f"consistency: {len(moved)} of {old_name}'s entries differ in {new_name} or "
            f"sit at another leaf there (the first: {name} {entry_id})")


#: For the witness (streams.evidence.witness): the same reading of a proof file.
read_proof = _read_proof
