"""The bundle's in-toto attestation (issue 18): `attestation.intoto.jsonl`, an in-toto
Statement v1 in a DSSE envelope signed with the ledger key.

A real export through the CLI (in a subprocess), then `verify`; each tampering of the
envelope, its payload, its signature, a subject or a file of the bundle fails with one
line; so do an envelope signed by another key and one whose PAE counts characters
instead of bytes (the purpose is not ASCII). The Go reference check of the same cases,
with go-securesystemslib and in-toto's own Statement type, is in test_reference_go.py.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.evidence import bundle
from streams.evidence.attestation import PAYLOAD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE, key_id, pae
from streams.evidence.keys import load_private_key, load_public_key
from streams.evidence.ledger import open_ledger
from streams.evidence.verify import verify_bundle
from tests.conftest import run_cli
from tests.evidence.test_consistency import manifest_of, resign
from tests.evidence.test_export_verify import VERIFY_ONLY, _verify_only_install
from tests.evidence.test_ledger import amendment
from tests.evidence.test_ledger import finding as ledger_finding

#: Not ASCII: a PAE that counts characters instead of bytes differs from the right one.
PURPOSE = "Anfrage der Aufsichtsbehörde 2026/17 — prüfen ✓"
FROM, TO = "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Keys and a ledger made through the CLI, and one real export of it (`export` in a
    subprocess); tests change copies of it."""
    root = tmp_path_factory.mktemp("attested")
    assert run_cli("keys", "generate", "--out", str(root / "keys")).returncode == 0
    records = [ledger_finding(n) for n in range(6)]
    with open_ledger(str(root / "ledger.db")) as ledger:
        ledger.append("finding", records)
        ledger.append("amendment", [amendment(records[2])])
    out = root / "bundle"
    done = run_cli("export", "--ledger", str(root / "ledger.db"), "--from", FROM, "--to", TO,
                   "--purpose", PURPOSE, "--private-key", str(root / "keys" / "consentwatch.key"),
                   str(out))
    assert done.returncode == 0, done.stderr
    return {"bundle": out, "zip": out.with_name("bundle.zip"),
            "private": root / "keys" / "consentwatch.key",
            "public": root / "keys" / "consentwatch.pub"}


@pytest.fixture
def copy(tmp_path: Path, source: dict[str, Path]) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(source["bundle"], target)
    return target


def envelope_of(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads((path / bundle.ATTESTATION).read_bytes())
    return result


def statement_of(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(base64.b64decode(envelope_of(path)["payload"]))
    return result


def write_envelope(path: Path, payload: bytes, key: Ed25519PrivateKey, *,
                   encoding: Callable[[str, bytes], bytes] = pae) -> None:
    """Write `payload` as the bundle's attestation, signed by `key` over `encoding`."""
    envelope = {"payload": base64.b64encode(payload).decode(), "payloadType": PAYLOAD_TYPE,
                "signatures": [{"keyid": key_id(key.public_key()), "sig": base64.b64encode(
                    key.sign(encoding(PAYLOAD_TYPE, payload))).decode()}]}
    (path / bundle.ATTESTATION).write_bytes(rfc8785.dumps(envelope) + b"\n")


def pae_in_characters(payload_type: str, payload: bytes) -> bytes:
    """A wrong PAE: the payload's length in characters, not bytes."""
    return (f"DSSEv1 {len(payload_type)} {payload_type} {len(payload.decode())} ".encode()
            + payload)


def restate(path: Path, key_path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Change the statement and sign it again with the real key: what only the key's
    holder can do; the checks the signature does not cover must still catch it."""
    statement = statement_of(path)
    change(statement)
    write_envelope(path, rfc8785.dumps(statement), load_private_key(key_path))


def failures(path: Path, public: Path) -> list[str]:
    return verify_bundle(path, load_public_key(public))[0]


def verify_cli(path: Path, public: Path) -> tuple[int, list[str]]:
    done = run_cli("verify", str(path), "--public-key", str(public))
    assert b"Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout.decode().splitlines()


# --- what export writes ------------------------------------------------------------------

def test_export_writes_an_in_toto_statement_in_a_dsse_envelope(source: dict[str, Path]) -> None:
    path = source["bundle"]
    raw = (path / bundle.ATTESTATION).read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1  # .intoto.jsonl: one envelope a line
    envelope = envelope_of(path)
    assert set(envelope) == {"payload", "payloadType", "signatures"}
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    statement = statement_of(path)
    assert statement["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == PREDICATE_TYPE
    # subjects: every file of the bundle but the attestation, with its SHA-256
    on_disk = {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in path.rglob("*") if p.is_file() and p.name != bundle.ATTESTATION}
    assert {bundle.MANIFEST, bundle.SIGNATURE, bundle.FINDINGS} <= set(on_disk)
    assert statement["subject"] == [{"name": name, "digest": {"sha256": digest}}
                                    for name, digest in sorted(on_disk.items())]
    manifest = manifest_of(path)
    predicate = statement["predicate"]
    assert predicate["purpose"] == manifest["purpose"] == PURPOSE
    assert predicate["query"] == {"window": manifest["window"], "filters": manifest["filters"]}
    assert predicate["counts"] == {"findings": 6, "amendments": 1, "reviews": 0,
                                   "exceptions": 0}
    origin, size, root = manifest["checkpoint"].split("\n")[0:3]
    assert origin.startswith("consentwatch ledger ")  # each ledger its own origin
    assert predicate["checkpoint"] == {"note": manifest["checkpoint"],
                                       "origin": origin, "size": int(size),
                                       "root": base64.b64decode(root).hex()}
    assert predicate["format"] == manifest["format"] == bundle.FORMAT
    # the zip holds the same file
    import zipfile
    with zipfile.ZipFile(source["zip"]) as archive:
        assert archive.read(f"bundle/{bundle.ATTESTATION}") == raw


def test_the_signature_is_ed25519_over_the_pae_of_the_spec(source: dict[str, Path]) -> None:
    """DSSE's PAE, written out from the spec: lengths in bytes (the purpose is not ASCII)."""
    envelope = envelope_of(source["bundle"])
    payload = base64.b64decode(envelope["payload"], validate=True)
    assert len(payload) != len(payload.decode())
    signed = b"DSSEv1 28 application/vnd.in-toto+json " + str(len(payload)).encode() + b" " \
        + payload
    [signature] = envelope["signatures"]
    load_public_key(source["public"]).verify(base64.b64decode(signature["sig"]), signed)
    # keyid: the key's OpenSSH SHA256 fingerprint (as `ssh-keygen -l` prints it)
    openssh = load_public_key(source["public"]).public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).split()[1]
    fingerprint = base64.b64encode(hashlib.sha256(base64.b64decode(openssh)).digest())
    assert signature["keyid"] == "SHA256:" + fingerprint.decode().rstrip("=")


def test_verify_accepts_it_dir_and_zip(source: dict[str, Path]) -> None:
    for target in (source["bundle"], source["zip"]):
        code, lines = verify_cli(target, source["public"])
        assert code == 0 and lines[0].startswith("OK: "), lines


def test_the_commands_in_docs_verifying_check_it(tmp_path: Path, copy: Path,
                                                 source: dict[str, Path]) -> None:
    """The shell commands of docs/verifying.md (openssl, sha256sum, python3 for JSON)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "verifying.md").read_text()
    [block] = [block for part in doc.split("```sh\n")
               if "DSSEv1" in (block := part.split("```")[0])]
    script = tmp_path / "check-attestation.sh"
    script.write_text(block)

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(script), str(copy),
                               str(source["public"])], capture_output=True, text=True,
                              timeout=60, check=False)

    done = run()
    assert done.returncode == 0 and "Signature Verified Successfully" in done.stdout, \
        done.stdout + done.stderr
    assert "all files are subjects" in done.stdout, done.stdout
    _flip(copy / bundle.SUMMARY, 3)
    assert run().returncode != 0


# --- tampering ----------------------------------------------------------------------------

def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


SIGNATURE_FAILS = (f"{bundle.ATTESTATION}: the DSSE signature does not verify with the given "
                   "public key (over PAE(payloadType, payload))")


def _only(path: Path, public: Path, expected: str) -> None:
    """`verify` fails with exactly `expected`, and the CLI says it in one line, exit 1."""
    assert failures(path, public) == [expected]
    code, lines = verify_cli(path, public)
    assert code == 1 and lines == [f"FAIL {expected}"], lines


def test_one_byte_of_the_payload(copy: Path, source: dict[str, Path]) -> None:
    envelope = envelope_of(copy)
    payload = bytearray(base64.b64decode(envelope["payload"]))
    payload[payload.index(b"Aufsicht")] ^= 0x01  # one byte of the purpose
    envelope["payload"] = base64.b64encode(bytes(payload)).decode()
    (copy / bundle.ATTESTATION).write_bytes(rfc8785.dumps(envelope) + b"\n")
    _only(copy, source["public"], SIGNATURE_FAILS)


def test_one_byte_of_the_signature(copy: Path, source: dict[str, Path]) -> None:
    envelope = envelope_of(copy)
    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    sig[7] ^= 0x01
    envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    (copy / bundle.ATTESTATION).write_bytes(rfc8785.dumps(envelope) + b"\n")
    _only(copy, source["public"], SIGNATURE_FAILS)


def test_one_character_of_the_file(copy: Path, source: dict[str, Path]) -> None:
    raw = bytearray((copy / bundle.ATTESTATION).read_bytes())
    at = raw.index(b'"payload":"') + 40
    raw[at] = ord("A") if raw[at] != ord("A") else ord("B")
    (copy / bundle.ATTESTATION).write_bytes(bytes(raw))
    _only(copy, source["public"], SIGNATURE_FAILS)


def test_a_subject_digest_resigned_with_the_real_key(copy: Path,
                                                      source: dict[str, Path]) -> None:
    def change(statement: dict[str, Any]) -> None:
        subject = next(s for s in statement["subject"] if s["name"] == bundle.FINDINGS)
        digest = subject["digest"]["sha256"]
        subject["digest"]["sha256"] = ("0" if digest[0] != "0" else "1") + digest[1:]

    restate(copy, source["private"], change)
    _only(copy, source["public"], f"{bundle.ATTESTATION}: the statement's subjects are not "
          f"the bundle's files and digests ({bundle.FINDINGS})")


def test_a_subject_left_out_resigned_with_the_real_key(copy: Path,
                                                       source: dict[str, Path]) -> None:
    def change(statement: dict[str, Any]) -> None:
        statement["subject"] = [s for s in statement["subject"] if s["name"] != bundle.REPORT]

    restate(copy, source["private"], change)
    _only(copy, source["public"], f"{bundle.ATTESTATION}: the statement's subjects are not "
          f"the bundle's files and digests ({bundle.REPORT})")


def test_the_predicate_resigned_with_the_real_key(copy: Path, source: dict[str, Path]) -> None:
    def change(statement: dict[str, Any]) -> None:
        statement["predicate"]["counts"]["findings"] -= 1
        statement["predicate"]["checkpoint"]["size"] += 1

    restate(copy, source["private"], change)
    _only(copy, source["public"], f"{bundle.ATTESTATION}: the statement's predicate differs "
          "from the manifest (checkpoint, counts)")


def test_another_predicate_type(copy: Path, source: dict[str, Path]) -> None:
    restate(copy, source["private"],
            lambda statement: statement.update(predicateType="https://slsa.dev/provenance/v1"))
    _only(copy, source["public"], f"{bundle.ATTESTATION}: the statement's predicateType is "
          f"not {PREDICATE_TYPE}")


def test_a_file_of_the_bundle(copy: Path, source: dict[str, Path]) -> None:
    _flip(copy / bundle.SUMMARY, 5)
    # reported once, by the manifest's hash (the attestation agrees with the manifest)
    _only(copy, source["public"],
          f"{bundle.SUMMARY}: SHA-256 does not match the manifest (file changed)")


def test_the_attestation_covers_the_manifest(copy: Path, source: dict[str, Path]) -> None:
    """A manifest re-signed with the real key but not re-attested: the statement names the
    manifest and its signature as they were exported."""
    manifest = manifest_of(copy)
    manifest["purpose"] = "something else"
    raw = rfc8785.dumps(manifest)
    (copy / bundle.MANIFEST).write_bytes(raw)
    (copy / bundle.SIGNATURE).write_bytes(load_private_key(source["private"]).sign(raw))
    assert failures(copy, source["public"]) == [
        f"{bundle.ATTESTATION}: the statement's subjects are not the bundle's files and "
        f"digests ({bundle.MANIFEST}, {bundle.SIGNATURE})",
        f"{bundle.ATTESTATION}: the statement's predicate differs from the manifest (purpose)"]


def test_an_envelope_signed_by_another_key(copy: Path, source: dict[str, Path]) -> None:
    payload = base64.b64decode(envelope_of(copy)["payload"])
    write_envelope(copy, payload, Ed25519PrivateKey.generate())
    _only(copy, source["public"], SIGNATURE_FAILS)


def test_a_pae_with_lengths_in_characters(copy: Path, source: dict[str, Path]) -> None:
    payload = base64.b64decode(envelope_of(copy)["payload"])
    assert pae_in_characters(PAYLOAD_TYPE, payload) != pae(PAYLOAD_TYPE, payload)
    write_envelope(copy, payload, load_private_key(source["private"]),
                   encoding=pae_in_characters)
    _only(copy, source["public"], SIGNATURE_FAILS)


def test_the_keyid(copy: Path, source: dict[str, Path]) -> None:
    envelope = envelope_of(copy)
    envelope["signatures"][0]["keyid"] = "SHA256:somebody-else"
    (copy / bundle.ATTESTATION).write_bytes(rfc8785.dumps(envelope) + b"\n")
    _only(copy, source["public"], f"{bundle.ATTESTATION}: the signature's keyid is not the "
          f"given key's ({key_id(load_public_key(source['public']))})")


@pytest.mark.parametrize(("change", "expected"), [
    (lambda raw: raw.replace(b'{"payload"', b'{ "payload"'),
     "the envelope is not in its canonical form (RFC 8785): it was changed"),
    (lambda raw: raw + raw, "not one DSSE envelope on one line ending with a newline"),
    (lambda raw: raw.rstrip(b"\n"), "not one DSSE envelope on one line ending with a newline"),
    (lambda raw: b"[]\n", "not a DSSE envelope (a JSON object of payload, payloadType and "
                          "signatures)"),
    (lambda raw: raw.replace(b"vnd.in-toto+json", b"json"),
     "the envelope's payloadType is not application/vnd.in-toto+json"),
    (lambda raw: raw.replace(b'"payload":"', b'"payload":"*'),
     "the envelope's payload is not standard base64"),
    (lambda raw: raw.replace(b'"signatures":[', b'"signatures":[{"keyid":"","sig":""},'),
     "the envelope needs exactly one signature (keyid, sig)"),
])
def test_a_malformed_envelope(copy: Path, source: dict[str, Path],
                              change: Callable[[bytes], bytes], expected: str) -> None:
    path = copy / bundle.ATTESTATION
    path.write_bytes(change(path.read_bytes()))
    _only(copy, source["public"], f"{bundle.ATTESTATION}: {expected}")


def test_a_malformed_statement_signed_with_the_real_key(copy: Path,
                                                        source: dict[str, Path]) -> None:
    write_envelope(copy, b'{"_type": "https://in-toto.io/Statement/v1"}',
                   load_private_key(source["private"]))
    _only(copy, source["public"], f"{bundle.ATTESTATION}: the payload is not an in-toto "
          "Statement (_type, subject, predicateType, predicate)")
    restate_statement = {"_type": STATEMENT_TYPE, "subject": [{"name": "x"}],
                         "predicateType": PREDICATE_TYPE, "predicate": {}}
    write_envelope(copy, rfc8785.dumps(restate_statement), load_private_key(source["private"]))
    assert failures(copy, source["public"])[0] == (
        f"{bundle.ATTESTATION}: the statement's subject is not a list of files, each with a "
        "name and only a sha256 digest, each named once")


# --- which formats need it ----------------------------------------------------------------

def test_a_format_4_bundle_without_its_attestation_fails(copy: Path,
                                                         source: dict[str, Path]) -> None:
    (copy / bundle.ATTESTATION).unlink()
    _only(copy, source["public"], f"{bundle.ATTESTATION}: missing (a bundle of format "
          f"{bundle.FORMAT} carries its in-toto attestation)")


def test_older_formats_need_none(copy: Path, source: dict[str, Path]) -> None:
    (copy / bundle.ATTESTATION).unlink()
    manifest = manifest_of(copy)
    resign(copy, manifest | {"format": "consentwatch-evidence-bundle/3"}, source["private"])
    assert not (copy / bundle.ATTESTATION).exists()
    assert failures(copy, source["public"]) == []


def test_the_standalone_verifier_checks_it(tmp_path: Path, copy: Path,
                                           source: dict[str, Path]) -> None:
    """consentwatch-verify (verify/, what it ships only) fails the same way."""
    site = _verify_only_install(tmp_path / "site")
    assert (VERIFY_ONLY / "pyproject.toml").read_text().count("evidence/attestation.py") == 2
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", "import sys, consentwatch_verify; "
                               "sys.exit(consentwatch_verify.main(sys.argv[1:]))", str(copy),
                               "--public-key", str(source["public"])], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    assert run().returncode == 0
    payload = base64.b64decode(envelope_of(copy)["payload"])
    write_envelope(copy, payload, load_private_key(source["private"]),
                   encoding=pae_in_characters)
    done = run()
    assert done.returncode == 1 and done.stdout.splitlines() == [f"FAIL {SIGNATURE_FAILS}"], \
        done.stdout + done.stderr
