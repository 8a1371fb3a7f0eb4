"""The reference implementations check our bundles (issue 18): tests/reference/ is a Go
program that verifies the checkpoint with golang.org/x/mod/sumdb/note, every
inclusion and consistency proof with github.com/transparency-dev/merkle, and the in-toto
attestation with github.com/secure-systems-lab/go-securesystemslib (DSSE) and
github.com/in-toto/attestation/go/v1 (the Statement).

Go is required (the test fails, never skips, without it): `./dev setup` checks for it and
fetches the Go modules beforehand (`go mod download` in tests/reference), so the build
here needs no network when it ran. GOTOOLCHAIN=local: the Go on the machine builds it,
never a downloaded toolchain.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.evidence import bundle
from streams.evidence.export import ExportQuery, export_bundle
from streams.evidence.keys import generate_keypair, load_private_key, load_public_key
from streams.evidence.ledger import open_ledger
from streams.evidence.verify import verify_bundle
from tests.conftest import run_cli
from tests.evidence.test_attestation import (
    envelope_of,
    pae_in_characters,
    restate,
    write_envelope,
)
from tests.evidence.test_consistency import FROM_MS, TO_MS, export, manifest_of, resign
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
    # the attestation, with go-securesystemslib and in-toto's Statement type
    subjects = sum(1 for p in bundles["second"].rglob("*") if p.is_file()) - 1
    assert (f"OK: {bundle.ATTESTATION}: DSSE envelope and in-toto Statement v1 verified: "
            f"second ({subjects} subjects)") in run(refcheck, public, str(bundles["second"])
                                                    ).stdout.splitlines()


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
    assert ("OK: cosigned (cosignature/v1) by 2 of 2 witnesses: w1.example/a, w2.example/b"
            in done.stdout.splitlines()), done.stdout
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


# --- the attestation: go-securesystemslib's DSSE and in-toto's Statement ------------------

def _payload(path: Path) -> bytes:
    return base64.b64decode(envelope_of(path)["payload"])


def test_attestation_one_byte_of_the_payload(refcheck: Path, bundles: dict[str, Path],
                                             copy: Path) -> None:
    envelope = envelope_of(copy)
    payload = bytearray(_payload(copy))
    payload[payload.index(b"inquiry")] ^= 0x01
    envelope["payload"] = base64.b64encode(bytes(payload)).decode()
    (copy / bundle.ATTESTATION).write_bytes(orjson.dumps(envelope) + b"\n")
    _fails_both(refcheck, bundles, copy, f"{bundle.ATTESTATION}: dsse: EnvelopeVerifier.Verify")


def test_attestation_the_signature(refcheck: Path, bundles: dict[str, Path], copy: Path) -> None:
    envelope = envelope_of(copy)
    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    sig[3] ^= 0x01
    envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    (copy / bundle.ATTESTATION).write_bytes(orjson.dumps(envelope) + b"\n")
    _fails_both(refcheck, bundles, copy, f"{bundle.ATTESTATION}: dsse: EnvelopeVerifier.Verify")


def test_attestation_a_subject_digest(refcheck: Path, bundles: dict[str, Path],
                                      copy: Path) -> None:
    def change(statement: dict[str, Any]) -> None:
        subject = next(s for s in statement["subject"] if s["name"] == bundle.FINDINGS)
        subject["digest"]["sha256"] = _changed_hex(subject["digest"]["sha256"])

    restate(copy, bundles["private"], change)  # re-signed with the real key
    _fails_both(refcheck, bundles, copy,
                f'{bundle.ATTESTATION}: subject "{bundle.FINDINGS}": its sha256 is not the file\'s')


def test_attestation_a_file_of_the_bundle(refcheck: Path, bundles: dict[str, Path],
                                          copy: Path) -> None:
    data = bytearray((copy / bundle.REPORT).read_bytes())
    data[100] ^= 0x01
    (copy / bundle.REPORT).write_bytes(bytes(data))
    _fails_both(refcheck, bundles, copy,
                f'{bundle.ATTESTATION}: subject "{bundle.REPORT}": its sha256 is not the file\'s')


def test_attestation_a_file_added(refcheck: Path, bundles: dict[str, Path], copy: Path) -> None:
    (copy / "extra.txt").write_text("added\n")
    _fails_both(refcheck, bundles, copy,
                f"{bundle.ATTESTATION}: extra.txt is not a subject of the statement")


def test_attestation_the_predicate(refcheck: Path, bundles: dict[str, Path], copy: Path) -> None:
    def change(statement: dict[str, Any]) -> None:
        statement["predicate"]["counts"]["findings"] += 1

    restate(copy, bundles["private"], change)
    _fails_both(refcheck, bundles, copy,
                f"{bundle.ATTESTATION}: predicate counts is not the manifest's")


def test_attestation_signed_by_another_key(refcheck: Path, bundles: dict[str, Path],
                                           copy: Path) -> None:
    write_envelope(copy, _payload(copy), Ed25519PrivateKey.generate())
    _fails_both(refcheck, bundles, copy, f"{bundle.ATTESTATION}: dsse: EnvelopeVerifier.Verify")


def test_attestation_a_pae_with_lengths_in_characters(refcheck: Path, bundles: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """A bundle whose purpose is not ASCII, its envelope signed by the real key over a PAE
    that counts characters: go-securesystemslib's PAE (bytes) does not match it."""
    path = tmp_path / "unicode"
    with open_ledger(str(tmp_path / "ledger.db")) as ledger:
        ledger.append("finding", [ledger_finding(n) for n in range(3)])
        export_bundle(ledger, path, ExportQuery(FROM_MS, TO_MS, "Prüfung der Behörde — ✓"),
                      load_private_key(bundles["private"]), actor="tester")
    payload = _payload(path)
    assert len(payload) != len(payload.decode())
    assert run(refcheck, bundles["public"], str(path)).returncode == 0
    write_envelope(path, payload, load_private_key(bundles["private"]),
                   encoding=pae_in_characters)
    _fails_both(refcheck, bundles, path, f"{bundle.ATTESTATION}: dsse: EnvelopeVerifier.Verify")


def test_attestation_missing_from_a_format_4_bundle(refcheck: Path, bundles: dict[str, Path],
                                                    copy: Path) -> None:
    (copy / bundle.ATTESTATION).unlink()
    _fails_both(refcheck, bundles, copy, f"{bundle.ATTESTATION}: missing (format "
                f"{bundle.FORMAT} requires it)")
    resign(copy, manifest_of(copy) | {"format": "consentwatch-evidence-bundle/3"},
           bundles["private"])
    done = run(refcheck, bundles["public"], str(copy))
    assert done.returncode == 0 and bundle.ATTESTATION not in done.stdout, done.stdout


def _findings_resigned(copy: Path, bundles: dict[str, Path], lines: list[bytes],
                       claims: list[Any]) -> None:
    """findings.jsonl and its manifest entries replaced, signed with the real key."""
    manifest = manifest_of(copy)
    data = b"".join(line + b"\n" for line in lines)
    (copy / bundle.FINDINGS).write_bytes(data)
    manifest["files"][bundle.FINDINGS] = bundle.sha256_hex(data)
    manifest["findings"] = claims
    resign(copy, manifest, bundles["private"])


def test_a_finding_listed_twice(refcheck: Path, bundles: dict[str, Path], copy: Path) -> None:
    lines = (copy / bundle.FINDINGS).read_bytes().splitlines()
    claims = manifest_of(copy)["findings"]
    _findings_resigned(copy, bundles, [lines[0], *lines], [claims[0], *claims])
    _fails_both(refcheck, bundles, copy,
                "findings.jsonl line 2: is ledger leaf 0, which findings.jsonl line 1 is too")


def test_findings_out_of_ledger_order(refcheck: Path, bundles: dict[str, Path],
                                      copy: Path) -> None:
    lines = (copy / bundle.FINDINGS).read_bytes().splitlines()
    claims = manifest_of(copy)["findings"]
    _findings_resigned(copy, bundles, lines[::-1], claims[::-1])
    _fails_both(refcheck, bundles, copy, "findings.jsonl line 2: is ledger leaf")
    _fails_both(refcheck, bundles, copy, "(not in ledger order)")


def test_an_amendment_passed_off_as_a_finding(refcheck: Path, bundles: dict[str, Path],
                                              copy: Path) -> None:
    manifest = manifest_of(copy)
    line = (copy / bundle.AMENDMENTS).read_bytes().splitlines()[0]
    claim = dict(manifest["amendments"][0], id=orjson.loads(line)["finding_id"])
    lines = (copy / bundle.FINDINGS).read_bytes().splitlines()
    # in ledger order: the amendment was appended after the findings exported
    _findings_resigned(copy, bundles, [*lines, line], [*manifest["findings"], claim])
    _fails_both(refcheck, bundles, copy, f"findings.jsonl line {len(lines) + 1}: holds "
                                         "amendment_id, the id of another kind of ledger entry")
