"""The right edge of an RFC 9162 tree: enough to extend it and compute its root in O(log n).

A tree of n leaves is a sequence of perfect subtrees, one per set bit of n, largest
first (RFC 9162's MTH splits off the largest power of two below n, recursively). The
ledger keeps the roots of those subtrees (at most 64 hashes) with the tree size, in
the same transaction as the leaves, so appending a leaf costs O(log n) hashes
amortised and a checkpoint never rereads millions of leaf hashes.
"""

from __future__ import annotations

from collections.abc import Iterable

from streams.evidence.merkle import node_hash, root_hash

__all__ = ["HASH_SIZE", "Frontier"]

HASH_SIZE = 32


class Frontier:
    """The perfect-subtree roots of a tree of `size` leaves, left to right."""

    __slots__ = ("_roots", "size")

    def __init__(self, size: int = 0, roots: Iterable[bytes] = ()) -> None:
        self.size = size
        self._roots = list(roots)
        if len(self._roots) != size.bit_count():
            raise ValueError("the frontier does not match the tree size")

    @classmethod
    def from_bytes(cls, size: int, packed: bytes) -> Frontier:
        if len(packed) % HASH_SIZE:
            raise ValueError("the packed frontier is not a whole number of hashes")
        return cls(size, (packed[i:i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE)))

    def to_bytes(self) -> bytes:
        return b"".join(self._roots)

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf: merge equal-sized subtrees, as carrying in binary addition."""
        node, size = leaf_hash, self.size
        while size & 1:
            node = node_hash(self._roots.pop(), node)
            size >>= 1
        self._roots.append(node)
        self.size += 1

    def root(self) -> bytes:
        """MTH of the whole tree: the subtree roots folded from the right."""
        if not self._roots:
            return root_hash([])
        node = self._roots[-1]
        for left in reversed(self._roots[:-1]):
            node = node_hash(left, node)
        return node
