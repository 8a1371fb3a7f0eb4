"""Consistency between bundles (issue 18): each bundle carries the RFC 9162 consistency
proof from the previous export's checkpoint; `verify NEW --since OLD [--proof FILE]`
proves the log only grew and OLD's entries are in NEW's tree unchanged."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.evidence import bundle
from streams.evidence.attestation import attest
from streams.evidence.checkpoint import CheckpointError, verify_checkpoint
from streams.evidence.consistency import PROOF_FORMAT, verify_since
from streams.evidence.export import ExportQuery, export_bundle
from streams.evidence.keys import KEY_NAME, generate_keypair, load_private_key, load_public_key
from streams.evidence.ledger import Ledger, open_ledger
from streams.evidence.verify import verify_bundle
from tests.conftest import run_cli
from tests.evidence.test_ledger import HOUR_MS, T0
from tests.evidence.test_ledger import finding as ledger_finding

FROM_MS, TO_MS = T0 - HOUR_MS, T0 + 1000 * HOUR_MS


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "keys")


def export(ledger: Ledger, key_path: Path, out: Path, **filters: str) -> Path:
    query = ExportQuery(FROM_MS, TO_MS, "inquiry 7", **filters)
    export_bundle(ledger, out, query, load_private_key(key_path), actor="tester")
    return out


def manifest_of(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads((path / bundle.MANIFEST).read_bytes())
    return result


def resign(path: Path, manifest: dict[str, Any], key_path: Path) -> None:
    """Rewrite a bundle's manifest and sign it with the (real) key: what only the key's
    holder can do; then only the checks a signature does not cover are left."""
    raw = rfc8785.dumps(manifest)
    (path / bundle.MANIFEST).write_bytes(raw)
    (path / bundle.SIGNATURE).write_bytes(load_private_key(key_path).sign(raw))
    reattest(path, key_path)


def reattest(path: Path, key_path: Path) -> None:
    """Write a bundle's attestation (if it has one) again over its manifest and files as
    they are now, with the (real) key: what `resign` does to the manifest. (Not when the
    manifest's checkpoint no longer verifies: nothing states a broken checkpoint.)"""
    if not (path / bundle.ATTESTATION).exists():
        return
    manifest = manifest_of(path)
    digests = {name: hashlib.sha256((path / name).read_bytes()).hexdigest()
               for name in (*manifest["files"], bundle.MANIFEST, bundle.SIGNATURE)
               if (path / name).is_file()}
    try:
        attested = attest(load_private_key(key_path), digests, manifest)
    except CheckpointError:
        return
    (path / bundle.ATTESTATION).write_bytes(attested)


def verify_cli(new: Path, public: Path, *extra: str) -> tuple[int, list[str]]:
    done = run_cli("verify", str(new), "--public-key", str(public), *extra)
    assert b"Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout.decode().splitlines()


@pytest.fixture
def chain(tmp_path: Path, keys: tuple[Path, Path]) -> tuple[Path, Path, Path, Path]:
    """A ledger (path) and three exports of it, findings appended between them."""
    db = tmp_path / "ledger.db"
    with open_ledger(str(db)) as ledger:
        ledger.append("finding", [ledger_finding(n) for n in range(5)])
        first = export(ledger, keys[0], tmp_path / "march")
        ledger.append("finding", [ledger_finding(n) for n in range(5, 9)])
        second = export(ledger, keys[0], tmp_path / "june")
        ledger.append("finding", [ledger_finding(n) for n in range(9, 12)])
        third = export(ledger, keys[0], tmp_path / "sept", rule="enrichment-without-consent")
    return db, first, second, third


def test_each_bundle_carries_the_proof_from_the_previous_export(
        chain: tuple[Path, Path, Path, Path], keys: tuple[Path, Path]) -> None:
    _, first, second, third = chain
    manifests = [manifest_of(b) for b in (first, second, third)]
    assert all(m["format"] == "consentwatch-evidence-bundle/4" for m in manifests)
    assert manifests[0]["previous"] is None  # the ledger's first export
    public = load_public_key(keys[1])
    for older, newer, older_path in ((manifests[0], manifests[1], first),
                                     (manifests[1], manifests[2], second)):
        previous = newer["previous"]
        # the very note the previous bundle carries, and that bundle's id
        assert previous["checkpoint"] == older["checkpoint"]
        assert previous["manifest_sha256"] == hashlib.sha256(
            (older_path / bundle.MANIFEST).read_bytes()).hexdigest()
        old_cp = verify_checkpoint(previous["checkpoint"], public)
        new_cp = verify_checkpoint(newer["checkpoint"], public)
        # the export leaf of the previous export is in between
        assert old_cp.size < new_cp.size and previous["consistency_proof"]
    for path in (first, second, third):
        assert verify_bundle(path, public) == ([], verify_bundle(path, public)[1])
    code, lines = verify_cli(second, keys[1], "--since", str(first))
    assert code == 0 and len(lines) == 2, lines
    assert lines[1].startswith("OK: consistent with march (its own previous-export proof; "
                               "march is its previous export)")
    assert "entries are leaves of this tree, unchanged" in lines[1]
    code, lines = verify_cli(third.with_name("sept.zip"), keys[1], "--since",
                             str(second.with_name("june.zip")))
    assert code == 0, lines


def test_an_earlier_bundle_than_the_previous_needs_a_proof_from_ledger_prove(
        tmp_path: Path, chain: tuple[Path, Path, Path, Path], keys: tuple[Path, Path]) -> None:
    db, first, _, third = chain
    old_size = verify_checkpoint(manifest_of(first)["checkpoint"],
                                 load_public_key(keys[1])).size
    new_size = verify_checkpoint(manifest_of(third)["checkpoint"],
                                 load_public_key(keys[1])).size
    code, lines = verify_cli(third, keys[1], "--since", str(first))
    assert code == 1 and len(lines) == 1, lines
    assert f"`consentwatch ledger prove --from {old_size} --to {new_size} --out FILE`" in lines[0]
    proof = tmp_path / "proof.json"
    done = run_cli("ledger", "prove", "--ledger", str(db), "--from", str(old_size), "--to",
                   str(new_size), "--out", str(proof))
    assert done.returncode == 0, done.stderr
    document = orjson.loads(proof.read_bytes())
    assert document["format"] == PROOF_FORMAT and document["old_size"] == old_size
    code, lines = verify_cli(third, keys[1], "--since", str(first), "--proof", str(proof))
    assert code == 0 and lines[1].startswith("OK: consistent with march (the --proof file): ")
    # the proof's sizes must be the bundles'
    code, lines = verify_cli(third, keys[1], "--since", str(chain[2]), "--proof", str(proof))
    assert code == 1 and len(lines) == 1 and "proves size" in lines[0], lines
    # and a truncated proof, or one that is not a proof file, is one line, exit 1
    short = tmp_path / "short.json"
    short.write_bytes(orjson.dumps(document | {
        "consistency_proof": document["consistency_proof"][:-1]}))
    code, lines = verify_cli(third, keys[1], "--since", str(first), "--proof", str(short))
    assert code == 1 and len(lines) == 1 and "does not verify" in lines[0], lines
    for garbage in (b"", b"{", b"[]", proof.read_bytes()[:40], b"x" * 100_000):
        short.write_bytes(garbage)
        code, lines = verify_cli(third, keys[1], "--since", str(first), "--proof", str(short))
        assert code == 1 and len(lines) == 1 and lines[0].startswith("FAIL --proof short.json"), \
            lines
    # `ledger prove` refuses sizes the ledger has not got, in one line
    done = run_cli("ledger", "prove", "--ledger", str(db), "--from", "3", "--to", "9999")
    assert done.returncode == 2 and done.stderr.count(b"\n") == 1, done.stderr
    done = run_cli("ledger", "prove", "--ledger", str(db), "--from", "9", "--to", "3")
    assert done.returncode == 2 and done.stderr.count(b"\n") == 1, done.stderr


def test_bad_pairs_are_one_line_and_exit_1(tmp_path: Path, chain: tuple[Path, Path, Path, Path],
                                           keys: tuple[Path, Path]) -> None:
    _, first, second, _ = chain
    # OLD newer than NEW
    code, lines = verify_cli(first, keys[1], "--since", str(second))
    assert code == 1 and len(lines) == 1 and "is the newer bundle" in lines[0], lines
    # OLD from another log and key
    other_keys = generate_keypair(tmp_path / "other")
    with open_ledger(str(tmp_path / "other.db")) as other:
        other.append("finding", [ledger_finding(n) for n in range(3)])
        foreign = export(other, other_keys[0], tmp_path / "foreign")
    code, lines = verify_cli(second, keys[1], "--since", str(foreign))
    assert code == 1 and len(lines) == 1, lines
    assert "does not verify with the given key" in lines[0] and "another log or key" in lines[0]
    # OLD's checkpoint of another log (another origin), signed with the same key
    from streams.evidence.checkpoint import Checkpoint, sign_checkpoint

    cp = verify_checkpoint(manifest_of(first)["checkpoint"], load_public_key(keys[1]))
    renamed = tmp_path / "renamed"
    shutil.copytree(first, renamed)
    resign(renamed, manifest_of(first) | {"checkpoint": sign_checkpoint(
        Checkpoint("another log", cp.size, cp.root), load_private_key(keys[0]), KEY_NAME)},
        keys[0])
    code, lines = verify_cli(second, keys[1], "--since", str(renamed))
    assert code == 1 and len(lines) == 1 and "bundles of different logs" in lines[0], lines
    # a --since that is not a bundle at all
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    code, lines = verify_cli(second, keys[1], "--since", str(tmp_path / "junk.zip"))
    assert code == 1 and len(lines) == 1, lines
    # --proof without --since is a usage error
    done = run_cli("verify", str(second), "--public-key", str(keys[1]), "--proof",
                   str(second / bundle.MANIFEST))
    assert done.returncode == 2 and done.stderr.count(b"\n") == 1


def test_a_damaged_carried_proof_fails_the_bundle_alone(
        chain: tuple[Path, Path, Path, Path], keys: tuple[Path, Path]) -> None:
    _, first, second, _ = chain
    manifest = manifest_of(second)
    proof = manifest["previous"]["consistency_proof"]
    for damaged in (proof[:-1], [*proof[:-1], "00" * 32], ["zz" * 32], "nope"):
        resign(second, manifest | {"previous": manifest["previous"] | {
            "consistency_proof": damaged}}, keys[0])
        failures = verify_bundle(second, load_public_key(keys[1]))[0]
        assert len(failures) == 1 and failures[0].startswith(
            f"{bundle.MANIFEST}: previous: "), failures
        code, lines = verify_cli(second, keys[1], "--since", str(first))
        assert code == 1 and lines[0] == f"FAIL {failures[0]}", lines
    # a /3 manifest without `previous` fails; an older format needs none, but then
    # --since needs a proof
    resign(second, {k: v for k, v in manifest.items() if k != "previous"}, keys[0])
    assert verify_bundle(second, load_public_key(keys[1]))[0] == [
        f"{bundle.MANIFEST}: no previous (null, or the previous export's checkpoint and "
        "consistency proof)"]
    resign(second, {k: v for k, v in manifest.items() if k != "previous"}
           | {"format": "consentwatch-evidence-bundle/2"}, keys[0])
    assert verify_bundle(second, load_public_key(keys[1]))[0] == []
    code, lines = verify_cli(second, keys[1], "--since", str(first))
    assert code == 1 and len(lines) == 1 and "carries no consistency proof" in lines[0], lines


def _rewritten_ledger(db: Path, key: Ed25519PrivateKey, old_db: Path) -> None:
    """The same ledger's history rewritten and re-signed with the same key: leaf 2 is
    another finding, everything else is copied leaf for leaf (the export record too),
    and the checkpoint of the old export's size is signed again over the new leaves."""
    import sqlite3

    changed = ledger_finding(2) | {"explanation": "Finding number 2, reworded."}
    with open_ledger(str(old_db)) as old, open_ledger(str(db)) as new:
        with sqlite3.connect(db) as raw:  # the forger keeps the log's origin (its id)
            raw.execute("INSERT INTO meta (key, value) VALUES ('checkpoint_origin', ?)",
                        (old.checkpoint_origin(),))
        export_entry = next(iter(old.entries(kind="export")))
        findings = [e.record for e in old.entries(kind="finding") if e.index < 5]
        new.append("finding", [changed if r["finding_id"] == changed["finding_id"] else r
                               for r in findings])
        new.checkpoint(key, KEY_NAME)
        new.append("export", [export_entry.record])
        new.append("finding", [ledger_finding(n) for n in range(5, 9)])


def test_a_rewritten_history_resigned_with_the_same_key_fails_verify_since(
        tmp_path: Path, keys: tuple[Path, Path]) -> None:
    old_db = tmp_path / "ledger.db"
    with open_ledger(str(old_db)) as ledger:
        ledger.append("finding", [ledger_finding(n) for n in range(5)])
        old = export(ledger, keys[0], tmp_path / "old")
    forged_db = tmp_path / "forged.db"
    _rewritten_ledger(forged_db, load_private_key(keys[0]), old_db)
    with open_ledger(str(forged_db)) as forged:
        new = export(forged, keys[0], tmp_path / "new")
    # the forged bundle verifies on its own: same key, consistent with its own history
    assert verify_bundle(new, load_public_key(keys[1]))[0] == []
    old_cp = verify_checkpoint(manifest_of(old)["checkpoint"], load_public_key(keys[1]))
    assert verify_checkpoint(manifest_of(new)["previous"]["checkpoint"],
                             load_public_key(keys[1])).size == old_cp.size
    code, lines = verify_cli(new, keys[1], "--since", str(old))
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith("FAIL consistency: ") and "the log was rewritten" in lines[0]
    # nor can the forger's own `ledger prove` help
    proof = tmp_path / "proof.json"
    new_size = verify_checkpoint(manifest_of(new)["checkpoint"], load_public_key(keys[1])).size
    done = run_cli("ledger", "prove", "--ledger", str(forged_db), "--from", str(old_cp.size),
                   "--to", str(new_size), "--out", str(proof))
    assert done.returncode == 0, done.stderr
    code, lines = verify_cli(new, keys[1], "--since", str(old), "--proof", str(proof))
    assert code == 1 and len(lines) == 1, lines
    assert "is not a prefix" in lines[0] and "the log was rewritten" in lines[0]
    # nor a carried proof claiming the old checkpoint (the forger holds the key)
    manifest = manifest_of(new)
    resign(new, manifest | {"previous": manifest["previous"] | {
        "checkpoint": manifest_of(old)["checkpoint"]}}, keys[0])
    report = verify_since(new, old, load_public_key(keys[1]))
    assert len(report.failures) == 2, report.failures
    assert report.failures[0].startswith(f"{bundle.MANIFEST}: previous: the consistency proof")
    assert report.failures[0].endswith("does not verify: the log was rewritten in between, or "
                                       "the proof is damaged")
    assert report.failures[1].startswith("consistency: 1 of old's entries differ in new")


def test_a_finding_changed_in_old_fails_the_comparison(
        chain: tuple[Path, Path, Path, Path], keys: tuple[Path, Path]) -> None:
    _, first, second, _ = chain
    lines = (first / bundle.FINDINGS).read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"Finding number", b"Finding Number")
    (first / bundle.FINDINGS).write_bytes(b"".join(lines))
    code, out = verify_cli(second, keys[1], "--since", str(first))
    assert code == 1 and all(line.startswith("FAIL --since march: ") for line in out), out
    assert any("is not proven in the ledger" in line for line in out), out


def test_the_verify_only_package_has_since_too(tmp_path: Path,
                                              chain: tuple[Path, Path, Path, Path],
                                              keys: tuple[Path, Path]) -> None:
    import os
    import subprocess
    import sys

    from tests.evidence.test_export_verify import (
        _BLOCKED_RUN,
        PIPELINE_MODULES,
        _verify_only_install,
    )

    db, first, second, third = chain
    site = _verify_only_install(tmp_path / "site")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CONSENTWATCH_NATIVE")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _BLOCKED_RUN, ",".join(PIPELINE_MODULES), str(site), *args],
            cwd=tmp_path, env=env | {"PYTHONPATH": str(site)}, capture_output=True, text=True,
            timeout=120, check=False)

    ok = run(str(second), "--public-key", str(keys[1]), "--since", str(first))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[1].startswith("OK: consistent with march")
    needs = run(str(third), "--public-key", str(keys[1]), "--since", str(first))
    assert needs.returncode == 1 and len(needs.stdout.splitlines()) == 1, needs.stdout
    proof = tmp_path / "proof.json"
    command = needs.stdout.split("`")[1].replace("--out FILE", f"--out {proof}").split()[1:]
    done = run_cli(*command, "--ledger", str(db))
    assert done.returncode == 0, done.stderr
    ok = run(str(third), "--public-key", str(keys[1]), "--since", str(first), "--proof",
             str(proof))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    swapped = run(str(first), "--public-key", str(keys[1]), "--since", str(second))
    assert swapped.returncode == 1 and "is the newer bundle" in swapped.stdout
    usage = run(str(first), "--public-key", str(keys[1]), "--proof", str(proof))
    assert usage.returncode == 2


def test_export_refuses_when_the_previous_exports_checkpoint_is_not_of_these_leaves(
        tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """A checkpoint of the previous export's size with another root, signed by the key,
    slipped into the checkpoints table (the latest checkpoint stays a true one)."""
    import sqlite3

    from streams.evidence.checkpoint import Checkpoint, sign_checkpoint
    from streams.evidence.ledger import LedgerTampered

    db = tmp_path / "ledger.db"
    key = load_private_key(keys[0])
    with open_ledger(str(db)) as ledger:
        ledger.append("finding", [ledger_finding(n) for n in range(5)])
        first = export(ledger, keys[0], tmp_path / "first")
        size = verify_checkpoint(manifest_of(first)["checkpoint"], key.public_key()).size
        origin = ledger.checkpoint_origin()
    forged = sign_checkpoint(Checkpoint(origin, size, b"\x07" * 32), key, KEY_NAME)
    with sqlite3.connect(db) as connection:
        connection.execute("INSERT INTO checkpoints (size, root, note, key_name, signed_at) "
                           "VALUES (?, ?, ?, ?, 0)", (size, b"\x07" * 32, forged, KEY_NAME))
    connection.close()
    with open_ledger(str(db)) as ledger:
        ledger.checkpoint(key, KEY_NAME)
        with pytest.raises(LedgerTampered, match=r"export refused: the checkpoint of the "
                           r"previous export \(size \d+\) is not the tree"):
            export(ledger, keys[0], tmp_path / "second")
    assert not (tmp_path / "second").exists()


def test_the_python_check_in_docs_verifying_checks_the_carried_proof(
        tmp_path: Path, chain: tuple[Path, Path, Path, Path], keys: tuple[Path, Path]) -> None:
    import subprocess
    import sys

    doc = (Path(__file__).resolve().parents[2] / "docs" / "verifying.md").read_text()
    script = tmp_path / "check_bundle.py"
    script.write_text(doc.split("```python\n")[1].split("```")[0])

    def run(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script), str(path), str(keys[1])],
                              capture_output=True, text=True, timeout=60, check=False)

    _, first, second, _ = chain
    done = run(first)
    assert done.returncode == 0 and "prefix" not in done.stdout, done.stderr
    done = run(second)
    assert done.returncode == 0, done.stderr
    assert "the previous export's tree (size 5) is a prefix of this one" in done.stdout
    manifest = manifest_of(second)
    proof = manifest["previous"]["consistency_proof"]
    for damaged in (proof[:-1], [*proof[:-1], "00" * 32]):
        resign(second, manifest | {"previous": manifest["previous"] | {
            "consistency_proof": damaged}}, keys[0])
        done = run(second)
        assert done.returncode != 0 and "is not a prefix of this one" in done.stderr
