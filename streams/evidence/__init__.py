"""Evidence a regulator can verify offline.

`merkle` (RFC 9162 tree and proofs), `keys` (Ed25519 key files), `checkpoint`
(C2SP signed-note checkpoints of the tree), `ledger` (the append-only store whose
entries are the tree's leaves), `export` (the signed bundle) and `verify` (its
offline check). Import the submodules; this package exports nothing itself so that
importing one part never loads another (the CLI stays fast to start).
"""

__all__: list[str] = []
