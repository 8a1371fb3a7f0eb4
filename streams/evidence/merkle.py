"""RFC 9162 Merkle tree hashes, inclusion and consistency proofs (section 2.1).

Every ledger entry is a leaf of one append-only tree; a signed checkpoint of its size
and root lets anyone holding an exported finding prove, offline, that the ledger held
that finding (inclusion) and that a later tree extends an earlier one (consistency).
Hashes are SHA-256 with the RFC's domain separation: 0x00 before a leaf, 0x01 before
a pair of child hashes, so a leaf can never be passed off as an inner node.

Inclusion proofs are read off the levels of the tree, built once for many proofs;
consistency proofs follow the RFC's recursive PROOF; the verifiers follow the
iterative algorithms of sections 2.1.3.2 and 2.1.4.2 word for word, so they are
independent of the generators they check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "consistency_proof",
    "inclusion_proof",
    "inclusion_proofs",
    "leaf_hash",
    "node_hash",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_HASH_SIZE = 32


def leaf_hash(entry: bytes) -> bytes:
    """MTH of a one-leaf tree: SHA-256(0x00 || entry)."""
    return hashlib.sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash of an inner node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1): the size of the left subtree."""
    return 1 << ((n - 1).bit_length() - 1)


def _levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaves first, root last (one list per level).

    Built bottom-up: adjacent nodes are paired and an unpaired last node is carried up
    a level unchanged, which gives exactly RFC 9162's left-heavy tree (the left subtree
    of n leaves holds the largest power of two below n).
    """
    levels = [list(leaf_hashes)]
    while len(levels[-1]) > 1:
        level = levels[-1]
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        levels.append(paired)
    return levels


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) from the leaf hashes; the empty tree's root is SHA-256 of nothing."""
    if not leaf_hashes:
        return hashlib.sha256(b"").digest()
    return _levels(leaf_hashes)[-1][0]


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]): the audit path of leaf `index` in the tree of all `leaf_hashes`."""
    return inclusion_proofs([index], leaf_hashes)[0]


def inclusion_proofs(indices: Sequence[int], leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """The audit paths of several leaves, building the tree once (O(n + k log n)).

    An export proves many findings against one checkpoint; one PATH per finding
    computed from scratch would cost O(n) each.
    """
    size = len(leaf_hashes)
    if any(not 0 <= index < size for index in indices):
        raise ValueError("leaf index outside the tree")
    levels = _levels(leaf_hashes)
    proofs = []
    for index in indices:
        proof = []
        position = index
        for level in levels[:-1]:
            sibling = position ^ 1
            if sibling < len(level):  # else the node is carried up: no hash at this level
                proof.append(level[sibling])
            position >>= 1
        proofs.append(proof)
    return proofs


def consistency_proof(old_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]): proves the first `old_size` leaves form a prefix of the tree.

    Empty for old_size 0 or old_size == n (nothing to prove).
    """
    n = len(leaf_hashes)
    if not 0 <= old_size <= n:
        raise ValueError("old tree size outside 0..new size")
    if old_size in (0, n):
        return []
    return _subproof(old_size, leaf_hashes, complete=True)


def _subproof(m: int, leaves: Sequence[bytes], *, complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root_hash(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete=complete), root_hash(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], complete=False), root_hash(leaves[:k])]


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes],
                     root: bytes) -> bool:
    """RFC 9162 2.1.3.2: does `proof` lead from the leaf at `index` to `root`?"""
    if not 0 <= index < size or any(len(p) != _HASH_SIZE for p in proof):
        return False
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2: does `proof` show the old tree is a prefix of the new one?

    Equal sizes need an empty proof and equal roots; an empty old tree is consistent
    with anything (and needs an empty proof).
    """
    if not 0 <= old_size <= new_size or any(len(p) != _HASH_SIZE for p in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the path
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
