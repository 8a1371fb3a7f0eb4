"""The reference implementations check our bundles (issue 18): tests/reference/ is a Go
program that verifies the checkpoint with golang.org/x/mod/sumdb/note and every
inclusion and consistency proof with github.com/transparency-dev/merkle.

Go is required (the test fails, never skips, without it): `./dev setup` checks for it and
fetches the Go modules beforehand (`go mod download` in tests/reference), so the build
here needs no network when it ran. GOTOOLCHAIN=local: the Go on the machine builds it,
never a downloaded toolchain.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.evidence import bundle
from streams.evidence.keys import generate_keypair, load_public_key
from streams.evidence.ledger import open_ledger
from streams.evidence.verify import verify_bundle
from tests.conftest import run_cli
from tests.evidence.test_consistency import export, manifest_of, resign
from tests.evidence.test_ledger import amendment
from tests.evidence.test_ledger import finding as ledger_finding

REFERENCE = Path(__file__).resolve().parents[1] / "reference"


def go_command() -> str:
    """The `go` on PATH, or Go's default install location; the test fails without one."""
    found = shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if os.access(p, os.X_OK)),
        None)
    if found is None:
        pytest.fail("Go is not installed: the reference check of the bundles needs it "
                    "(./dev setup says how to install it)")
    return found


@pytest.fixture(scope="module")
def refcheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = tmp_path_factory.mktemp("go") / "refcheck"
    env = os.environ | {"GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly -buildvcs=false"}
    done = subprocess.run([go_command(), "build", "-o", str(binary), "."], cwd=REFERENCE,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return binary


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three real exports of one ledger, findings (and an amendment) appended between
    them; the keys; and a `ledger prove` file from the first to the third."""
    root = tmp_path_factory.mktemp("bundles")
    private, public = generate_keypair(root / "keys")
    db = root / "ledger.db"
    records = [ledger_finding(n) for n in range(12)]
    with open_ledger(str(db)) as ledger:
        ledger.append("finding", records[:5])
        first = export(ledger, private, root / "first")
        ledger.append("finding", records[5:9])
        ledger.append("amendment", [amendment(records[1])])
        second = export(ledger, private, root / "second")
        ledger.append("finding", records[9:])
        third = export(ledger, private, root / "third")
    sizes = [manifest_size(path, public) for path in (first, third)]
    proof = root / "proof.json"
    done = run_cli("ledger", "prove", "--ledger", str(db), "--from", str(sizes[0]), "--to",
                   str(sizes[1]), "--out", str(proof))
    assert done.returncode == 0, done.stderr
    return {"first": first, "second": second, "third": third, "proof": proof,
            "private": private, "public": public}


def manifest_size(path: Path, public: Path) -> int:
    from streams.evidence.checkpoint import verify_checkpoint

    return verify_checkpoint(manifest_of(path)["checkpoint"], load_public_key(public)).size


def run(refcheck: Path, public: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(refcheck), "-pub", str(public), *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_the_reference_implementations_accept_real_bundles(refcheck: Path,
                                                           bundles: dict[str, Path]) -> None:
    public = bundles["public"]
    for name in ("first", "second", "third"):
        done = run(refcheck, public, str(bundles[name]))
        assert done.returncode == 0 and done.stdout.startswith("OK: "), done.stdout + done.stderr
    manifest = manifest_of(bundles["second"])
    proofs = sum(len(manifest[k]) for k in ("findings", "amendments", "reviews", "exceptions"))
    assert manifest["amendments"] and f"; {proofs + 1} proofs verified" in \
        run(refcheck, public, str(bundles["second"])).stdout  # + the previous-export proof
    pair = run(refcheck, public, "-since", str(bundles["first"]), str(bundles["second"]))
    assert pair.returncode == 0, pair.stdout
    # an earlier bundle than the previous one: with the proof `ledger prove` wrote
    far = run(refcheck, public, "-since", str(bundles["first"]), str(bundles["third"]))
    assert far.returncode == 1 and "give -proof" in far.stdout, far.stdout
    far = run(refcheck, public, "-since", str(bundles["first"]), "-proof",
              str(bundles["proof"]), str(bundles["third"]))
    assert far.returncode == 0, far.stdout


@pytest.fixture
def copy(tmp_path: Path, bundles: dict[str, Path]) -> Iterator[Path]:
    target = tmp_path / "second"
    shutil.copytree(bundles["second"], target)
    yield target


def _changed_hex(value: str) -> str:
    return ("1" if value[0] == "0" else "0") + value[1:]


def _fails_both(refcheck: Path, bundles: dict[str, Path], path: Path, expected: str,
                *extra: str) -> None:
    done = run(refcheck, bundles["public"], *extra, str(path))
    assert done.returncode == 1, done.stdout
    assert expected in done.stdout, done.stdout
    assert verify_bundle(path, load_public_key(bundles["public"]))[0]  # and ours agrees


def test_one_byte_of_a_leaf(refcheck: Path, bundles: dict[str, Path], copy: Path) -> None:
    data = bytearray((copy / bundle.FINDINGS).read_bytes())
    data[20] ^= 0x01
    (copy / bundle.FINDINGS).write_bytes(bytes(data))
    _fails_both(refcheck, bundles, copy, "findings.jsonl line 1: leaf hash is not the manifest's")
    _fails_both(refcheck, bundles, copy, "findings.jsonl line 1: inclusion proof")


def test_an_inclusion_proof_hash(refcheck: Path, bundles: dict[str, Path], copy: Path) -> None:
    manifest = manifest_of(copy)
    first: dict[str, Any] = manifest["findings"][0]
    first["inclusion_proof"][0] = _changed_hex(first["inclusion_proof"][0])
    resign(copy, manifest, bundles["private"])
    _fails_both(refcheck, bundles, copy, "findings.jsonl line 1: inclusion proof at leaf")


def test_a_consistency_proof_hash(refcheck: Path, bundles: dict[str, Path], copy: Path) -> None:
    manifest = manifest_of(copy)
    proof = manifest["previous"]["consistency_proof"]
    proof[-1] = _changed_hex(proof[-1])
    resign(copy, manifest, bundles["private"])
    _fails_both(refcheck, bundles, copy, "previous: consistency proof from size")
    _fails_both(refcheck, bundles, copy, "consistency: OLD", "-since", str(bundles["first"]))


def test_the_checkpoint_signature(refcheck: Path, bundles: dict[str, Path], copy: Path) -> None:
    manifest = manifest_of(copy)
    text, _, line = manifest["checkpoint"].rstrip("\n").rpartition("\n")
    dash, name, blob = line.split(" ")
    flipped = blob[:10] + ("A" if blob[10] != "A" else "B") + blob[11:]
    manifest["checkpoint"] = f"{text}\n{dash} {name} {flipped}\n"
    resign(copy, manifest, bundles["private"])
    _fails_both(refcheck, bundles, copy, "checkpoint: note.Open")


def test_the_manifest_signature(refcheck: Path, bundles: dict[str, Path], copy: Path) -> None:
    data = bytearray((copy / bundle.SIGNATURE).read_bytes())
    data[5] ^= 0x01
    (copy / bundle.SIGNATURE).write_bytes(bytes(data))
    _fails_both(refcheck, bundles, copy, "manifest.sig: not an Ed25519 signature")


def test_a_truncated_proof_file(refcheck: Path, bundles: dict[str, Path], tmp_path: Path) -> None:
    document = orjson.loads(bundles["proof"].read_bytes())
    short = tmp_path / "short.json"
    short.write_bytes(orjson.dumps(document | {
        "consistency_proof": document["consistency_proof"][:-1]}))
    done = run(refcheck, bundles["public"], "-since", str(bundles["first"]), "-proof",
               str(short), str(bundles["third"]))
    assert done.returncode == 1 and "consistency: OLD" in done.stdout, done.stdout


def test_another_key(refcheck: Path, bundles: dict[str, Path], tmp_path: Path) -> None:
    _, other = generate_keypair(tmp_path / "other")
    done = run(refcheck, other, str(bundles["second"]))
    assert done.returncode == 1 and "checkpoint: note.Open" in done.stdout, done.stdout


@pytest.fixture(scope="module")
def cosigned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real export against a checkpoint two witnesses cosigned (`witness cosign`), their
    verifier key files, and a third witness's that did not cosign."""
    root = tmp_path_factory.mktemp("cosigned")
    private, public = generate_keypair(root / "keys")
    db = root / "ledger.db"
    with open_ledger(str(db)) as ledger:
        ledger.append("finding", [ledger_finding(n) for n in range(6)])
    note = root / "checkpoint"
    done = run_cli("ledger", "checkpoint", "--ledger", str(db), "--private-key", str(private),
                   "--out", str(note))
    assert done.returncode == 0, done.stderr
    paths: dict[str, Path] = {"public": public, "private": private}
    cosigned_notes = []
    for name in ("w1.example/a", "w2.example/b", "w3.example/c"):
        folder = root / name.replace("/", "_")
        done = run_cli("witness", "keys", "generate", "--name", name, "--out", str(folder))
        assert done.returncode == 0, done.stderr
        paths[name] = folder / "witness.vkey"
        if name == "w3.example/c":
            continue
        out = folder / "cosigned"
        done = run_cli("witness", "cosign", "--state", str(folder / "state.json"), "--key",
                       str(folder / "witness.key"), "--log-key", str(public), "--checkpoint",
                       str(note), "--out", str(out))
        assert done.returncode == 0, done.stderr
        cosigned_notes.append(str(out))
    done = run_cli("ledger", "add-cosignature", "--ledger", str(db), "--public-key", str(public),
                   *cosigned_notes)
    assert done.returncode == 0, done.stderr
    paths["bundle"] = root / "bundle"
    done = run_cli("export", "--ledger", str(db), "--from", "2000-01-01T00:00:00Z", "--to",
                   "2100-01-01T00:00:00Z", "--purpose", "inquiry", "--private-key",
                   str(private), "--require-witnesses", "2", "--witness-key",
                   str(paths["w1.example/a"]), "--witness-key", str(paths["w2.example/b"]),
                   str(paths["bundle"]))
    assert done.returncode == 0, done.stderr
    return paths


def _witnesses(paths: dict[str, Path], *names: str) -> list[str]:
    return [arg for name in names for arg in ("-witness", str(paths[name]))]


def test_the_reference_check_verifies_witness_cosignatures(
        refcheck: Path, cosigned: dict[str, Path], tmp_path: Path) -> None:
    both = _witnesses(cosigned, "w1.example/a", "w2.example/b")
    done = run(refcheck, cosigned["public"], *both, str(cosigned["bundle"]))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == ("OK: cosigned (cosignature/v1) by 2 of 2 "
                                            "witnesses: w1.example/a, w2.example/b")
    # a witness that did not cosign: not counted
    done = run(refcheck, cosigned["public"], *_witnesses(cosigned, "w3.example/c"),
               str(cosigned["bundle"]))
    assert done.returncode == 1 and "witnesses: 0 valid cosignatures" in done.stdout
    done = run(refcheck, cosigned["public"], *both, *_witnesses(cosigned, "w3.example/c"),
               "-require-witnesses", "2", str(cosigned["bundle"]))
    assert done.returncode == 0, done.stdout
    # a tampered cosignature fails, in Go and in ours
    target = tmp_path / "tampered"
    shutil.copytree(cosigned["bundle"], target)
    manifest = manifest_of(target)
    text, _, line = manifest["checkpoint"].rstrip("\n").rpartition("\n")
    dash, name, blob = line.split(" ")
    flipped = blob[:30] + ("A" if blob[30] != "A" else "B") + blob[31:]
    manifest["checkpoint"] = f"{text}\n{dash} {name} {flipped}\n"
    resign(target, manifest, cosigned["private"])
    done = run(refcheck, cosigned["public"], *both, "-require-witnesses", "1", str(target))
    assert done.returncode == 1 and "cosignature of w2.example/b: does not verify" in \
        done.stdout, done.stdout
    ours = run_cli("verify", str(target), "--public-key", str(cosigned["public"]),
                   "--witness-key", str(cosigned["w2.example/b"]))
    assert ours.returncode == 1 and b"does not verify" in ours.stdout
    # a removed one drops below the count
    manifest["checkpoint"] = f"{text}\n"
    resign(target, manifest, cosigned["private"])
    done = run(refcheck, cosigned["public"], *both, str(target))
    assert done.returncode == 1 and "witnesses: 1 valid cosignatures (w1.example/a), 2 " \
        "required" in done.stdout, done.stdout
