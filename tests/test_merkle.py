"""RFC 9162 Merkle tree against published vectors (transparency-dev/merkle).

Vectors are kept in tests/data/merkle/ (see its README.md for provenance):
- verify_test_vectors.json: transparency-dev/merkle proof/verify_test.go
  (https://github.com/transparency-dev/merkle/blob/02194e9afb6c1d95b5381350007963aa70fff472/proof/verify_test.go)
- transparency-dev-testdata/: transparency-dev/merkle testdata/{inclusion,consistency}/<n>/*.json
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.evidence.merkle import (
    consistency_proof,
    inclusion_proof,
    inclusion_proofs,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from tests.hypothesis_profiles import examples

DATA = Path(__file__).parent / "data" / "merkle"
VECTORS: dict[str, Any] = json.loads((DATA / "verify_test_vectors.json").read_text())
LEAVES = [leaf_hash(bytes.fromhex(entry)) for entry in VECTORS["leaves"]]
ROOTS = [bytes.fromhex(root) for root in VECTORS["roots"]]
SOME_HASH = bytes.fromhex(VECTORS["some_hash"])
EMPTY_HASH = bytes.fromhex(VECTORS["empty_tree_hash"])


def _hexes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert root_hash([]) == EMPTY_HASH


@pytest.mark.parametrize("size", range(1, 9))
def test_root_of_published_trees(size: int) -> None:
    assert root_hash(LEAVES[:size]) == ROOTS[size - 1]


def test_prefixes_separate_leaves_from_nodes() -> None:
    left, right = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(left, right) != leaf_hash(left + right)


@pytest.mark.parametrize("vector", VECTORS["inclusion"], ids=lambda v: f"{v['leaf']}of{v['size']}")
def test_inclusion_proofs_match_published(vector: dict[str, Any]) -> None:
    index, size, proof = vector["leaf"] - 1, vector["size"], _hexes(vector["proof"])
    assert inclusion_proof(index, LEAVES[:size]) == proof
    assert verify_inclusion(LEAVES[index], index, size, proof, ROOTS[size - 1])


def _inclusion_probes(index: int, size: int, proof: list[bytes], root: bytes,
                      leaf: bytes) -> list[tuple[int, int, bytes, bytes, list[bytes], str]]:
    """The corruptions of verify_test.go's corruptInclusionProof, one for one."""
    probes = [
        (index - 1, size, root, leaf, proof, "leafIndex - 1"),
        (index + 1, size, root, leaf, proof, "leafIndex + 1"),
        (index ^ 2, size, root, leaf, proof, "leafIndex ^ 2"),
        (index, size * 2, root, leaf, proof, "treeSize * 2"),
        (index, size // 2, root, leaf, proof, "treeSize / 2"),
        (index, size, root, b"WrongLeaf", proof, "wrong leaf"),
        (index, size, EMPTY_HASH, leaf, proof, "empty root"),
        (index, size, SOME_HASH, leaf, proof, "random root"),
        (index, size, root, leaf, [*proof, b""], "trailing garbage"),
        (index, size, root, leaf, [*proof, root], "trailing root"),
        (index, size, root, leaf, [b"", *proof], "preceding garbage"),
        (index, size, root, leaf, [root, *proof], "preceding root"),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = bytes([wrong[i][0] ^ 8]) + wrong[i][1:]
        probes.append((index, size, root, leaf, wrong, f"modified proof[{i}] bit 3"))
    if proof:
        probes.append((index, size, root, leaf, proof[:-1], "removed component"))
    if len(proof) > 1:
        probes.append((index, size, root, leaf, [proof[0], SOME_HASH, *proof[1:]],
                       "inserted component"))
    return probes


@pytest.mark.parametrize("vector", VECTORS["inclusion"], ids=lambda v: f"{v['leaf']}of{v['size']}")
def test_corrupted_inclusion_proofs_fail(vector: dict[str, Any]) -> None:
    index, size, proof = vector["leaf"] - 1, vector["size"], _hexes(vector["proof"])
    probes = _inclusion_probes(index, size, proof, ROOTS[size - 1], LEAVES[index])
    wrongly_ok = [desc for (i, n, root, leaf, p, desc) in probes
                  if verify_inclusion(leaf, i, n, p, root)]
    assert wrongly_ok == []


@pytest.mark.parametrize("vector", VECTORS["consistency"],
                         ids=lambda v: f"{v['size1']}to{v['size2']}")
def test_consistency_proofs_match_published(vector: dict[str, Any]) -> None:
    old, new, proof = vector["size1"], vector["size2"], _hexes(vector["proof"])
    assert consistency_proof(old, LEAVES[:new]) == proof
    assert verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], proof)


@pytest.mark.parametrize("vector", [v for v in VECTORS["consistency"] if v["proof"]],
                         ids=lambda v: f"{v['size1']}to{v['size2']}")
def test_corrupted_consistency_proofs_fail(vector: dict[str, Any]) -> None:
    """The corruptions of verify_test.go's corruptConsistencyProof, one for one."""
    m, n, proof = vector["size1"], vector["size2"], _hexes(vector["proof"])
    r1, r2 = ROOTS[m - 1], ROOTS[n - 1]
    probes = [
        (m - 1, n, r1, r2, proof), (m + 1, n, r1, r2, proof), (m ^ 2, n, r1, r2, proof),
        (m, n * 2, r1, r2, proof), (m, n // 2, r1, r2, proof),
        (m, n, b"WrongRoot", r2, proof), (m, n, r1, b"WrongRoot", proof), (m, n, r2, r1, proof),
        (m, n, r1, r2, []),
        (m, n, r1, r2, [*proof, b""]), (m, n, r1, r2, [*proof, r1]), (m, n, r1, r2, [*proof, r2]),
        (m, n, r1, r2, [b"", *proof]), (m, n, r1, r2, [r1, *proof]), (m, n, r1, r2, [r2, *proof]),
        (m, n, r1, r2, [proof[0], *proof]), (m, n, r1, r2, proof[:-1]),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = bytes([wrong[i][0] ^ 16]) + wrong[i][1:]
        probes.append((m, n, r1, r2, wrong))
    wrongly_ok = [k for k, (a, b, x, y, p) in enumerate(probes)
                  if verify_consistency(a, b, x, y, p)]
    assert wrongly_ok == []


def test_consistency_edge_cases_of_verify_test_go() -> None:
    """TestVerifyConsistency's table in verify_test.go."""
    r1, r2 = b"don't care 1", b"don't care 2"
    assert not verify_consistency(0, 0, r1, r2, [])
    assert not verify_consistency(1, 1, r1, r2, [])
    assert verify_consistency(0, 0, r1, r1, [])
    assert verify_consistency(0, 1, r1, r2, [])
    assert verify_consistency(1, 1, r2, r2, [])
    assert not verify_consistency(1, 0, r1, r2, [])
    assert not verify_consistency(2, 1, r1, r2, [])
    assert not verify_consistency(1, 2, r1, r2, [])
    assert not verify_consistency(0, 0, EMPTY_HASH, r2, [])
    assert not verify_consistency(1, 1, EMPTY_HASH, r2, [])
    for old, new in ((0, 0), (0, 1), (1, 1)):
        assert not verify_consistency(old, new, EMPTY_HASH, EMPTY_HASH, [EMPTY_HASH])


def test_inclusion_edge_cases_of_verify_test_go() -> None:
    """TestVerifyInclusion and TestVerifyInclusionSingleEntry in verify_test.go."""
    for index, size in ((0, 0), (0, 1), (1, 0), (2, 1)):
        assert not verify_inclusion(SOME_HASH, index, size, [], b"")
        assert not verify_inclusion(b"", index, size, [], EMPTY_HASH)
        assert not verify_inclusion(SOME_HASH, index, size, [], EMPTY_HASH)
    single = leaf_hash(b"data")
    assert verify_inclusion(single, 0, 1, [], single)
    assert not verify_inclusion(b"", 0, 1, [], single)
    assert not verify_inclusion(single, 0, 1, [], b"")


def _b64(values: list[str] | None) -> list[bytes]:
    return [base64.b64decode(v) for v in values or []]


@pytest.mark.parametrize("path", sorted((DATA / "transparency-dev-testdata" / "inclusion").rglob(
    "*.json")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_published_inclusion_testdata(path: Path) -> None:
    case = json.loads(path.read_text())
    ok = verify_inclusion(base64.b64decode(case["leafHash"]), case["leafIdx"], case["treeSize"],
                          _b64(case["proof"]), base64.b64decode(case["root"]))
    assert ok is not case["wantErr"]


@pytest.mark.parametrize("path", sorted((DATA / "transparency-dev-testdata" / "consistency").rglob(
    "*.json")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_published_consistency_testdata(path: Path) -> None:
    case = json.loads(path.read_text())
    ok = verify_consistency(case["size1"], case["size2"], base64.b64decode(case["root1"]),
                            base64.b64decode(case["root2"]), _b64(case["proof"]))
    assert ok is not case["wantErr"]


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(st.binary(max_size=8), min_size=1, max_size=40), st.data())
def test_generated_proofs_verify_for_every_shape(entries: list[bytes], data: st.DataObject) -> None:
    hashes = [leaf_hash(e) for e in entries]
    n = len(hashes)
    index = data.draw(st.integers(0, n - 1))
    old = data.draw(st.integers(1, n))
    root = root_hash(hashes)
    assert verify_inclusion(hashes[index], index, n, inclusion_proof(index, hashes), root)
    assert verify_consistency(old, n, root_hash(hashes[:old]), root,
                              consistency_proof(old, hashes))


def test_batch_proofs_verify_for_every_leaf_of_small_trees() -> None:
    for n in range(1, 34):
        hashes = [leaf_hash(bytes([i])) for i in range(n)]
        root = root_hash(hashes)
        proofs = inclusion_proofs(list(range(n)), hashes)
        assert all(verify_inclusion(hashes[i], i, n, proofs[i], root) for i in range(n))
    with pytest.raises(ValueError, match="outside"):
        inclusion_proofs([3], hashes[:3])
