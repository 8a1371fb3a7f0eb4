"""Witnesses (issue 18): `consentwatch witness cosign` adds a C2SP tlog-cosignature to a
ledger checkpoint only as the log grows; `ledger add-cosignature` stores it; `export
--require-witnesses` uses a checkpoint cosigned enough; `verify --witness-key` counts
the cosignatures. The user's path runs the real CLI in subprocesses."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.evidence.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from streams.evidence.cosignature import (
    Witness,
    add_cosignature,
    check_cosignatures,
    cosignature_key_id,
    parse_witness_key,
)
from streams.evidence.keys import KEY_NAME, generate_keypair, load_private_key, public_key_bytes
from streams.evidence.ledger import CHECKPOINT_ORIGIN, open_ledger
from tests.conftest import run_cli
from tests.evidence.test_consistency import manifest_of, resign
from tests.evidence.test_ledger import finding as ledger_finding

FROM, TO = "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z"
DASH = "\u2014"


def cli(*args: Any) -> tuple[int, str, str]:
    done = run_cli(*(str(arg) for arg in args))
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr, stderr
    return done.returncode, done.stdout.decode(), stderr


class Setup:
    """A ledger with findings, its key pair, and two witnesses (keys, state files)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = root / "ledger.db"
        self.key, self.pub = generate_keypair(root / "keys")
        with open_ledger(str(self.db)) as ledger:
            ledger.append("finding", [ledger_finding(n) for n in range(5)])
        self.witnesses = {name: self.witness(name) for name in ("w1.example/a", "w2.example/b")}

    def witness(self, name: str) -> dict[str, Path]:
        folder = self.root / name.replace("/", "_")
        code, _out, err = cli("witness", "keys", "generate", "--name", name, "--out", folder)
        assert code == 0, err
        return {"key": folder / "witness.key", "vkey": folder / "witness.vkey",
                "state": folder / "state.json"}

    def checkpoint(self, name: str) -> Path:
        note = self.root / name
        code, _, err = cli("ledger", "checkpoint", "--ledger", self.db, "--private-key",
                           self.key, "--out", note)
        assert code == 0, err
        return note

    def cosign(self, name: str, note: Path, *extra: Any) -> tuple[int, str, str]:
        w = self.witnesses[name]
        out = note.with_name(f"{note.name}.{name.replace('/', '_')}")
        code, stdout, err = cli("witness", "cosign", "--state", w["state"], "--key", w["key"],
                                "--log-key", self.pub, "--checkpoint", note, "--out", out,
                                *extra)
        return code, (out.read_text() if code == 0 else stdout), err

    def cosign_all(self, note: Path, *extra: Any) -> list[Path]:
        paths = []
        for name in self.witnesses:
            code, _, err = self.cosign(name, note, *extra)
            assert code == 0, err
            paths.append(note.with_name(f"{note.name}.{name.replace('/', '_')}"))
        return paths

    def vkeys(self) -> list[str]:
        return [arg for w in self.witnesses.values() for arg in ("--witness-key", str(w["vkey"]))]

    def export(self, out: Path, *extra: Any) -> tuple[int, str, str]:
        return cli("export", "--ledger", self.db, "--from", FROM, "--to", TO, "--purpose",
                   "inquiry", "--private-key", self.key, *extra, out)

    def verify(self, path: Path, *extra: Any) -> tuple[int, list[str]]:
        code, out, _ = cli("verify", path, "--public-key", self.pub, *extra)
        return code, out.splitlines()


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


@pytest.fixture
def cosigned_bundle(setup: Setup) -> Path:
    """Two witnesses cosigned a checkpoint, stored, and an export requiring both."""
    note = setup.checkpoint("cp1")
    code, _, err = cli("ledger", "add-cosignature", "--ledger", setup.db, "--public-key",
                       setup.pub, *setup.cosign_all(note))
    assert code == 0, err
    out = setup.root / "bundle"
    code, _, err = setup.export(out, "--require-witnesses", 2, *setup.vkeys())
    assert code == 0, err
    return out


def test_two_witnesses_cosign_and_verify_names_them(setup: Setup,
                                                    cosigned_bundle: Path) -> None:
    note = manifest_of(cosigned_bundle)["checkpoint"]
    signers = [line.split(" ")[1] for line in note.split("\n\n")[1].splitlines()]
    assert signers == [KEY_NAME, "w1.example/a", "w2.example/b"]
    checkpoint = verify_checkpoint(note, load_private_key(setup.key).public_key())
    assert checkpoint.origin.startswith(f"{CHECKPOINT_ORIGIN} ") and checkpoint.size == 5
    code, lines = setup.verify(cosigned_bundle, *setup.vkeys())
    assert code == 0, lines
    assert lines[-1] == ("OK: the checkpoint is cosigned by 2 of the 2 witness keys given "
                         "(w1.example/a, w2.example/b); 2 required")
    code, lines = setup.verify(cosigned_bundle.with_name("bundle.zip"), *setup.vkeys(),
                               "--require-witnesses", 1)
    assert code == 0 and lines[-1].endswith("1 required"), lines
    # the witness states hold this log's tree
    state = json.loads(setup.witnesses["w1.example/a"]["state"].read_text())
    assert state["logs"][checkpoint.origin]["size"] == 5


def test_the_witness_follows_the_log_with_consistency_proofs(setup: Setup) -> None:
    first = setup.checkpoint("cp1")
    setup.cosign_all(first)
    with open_ledger(str(setup.db)) as ledger:
        ledger.append("finding", [ledger_finding(n) for n in range(5, 9)])
    second = setup.checkpoint("cp2")
    state_file = setup.witnesses["w1.example/a"]["state"]
    before = state_file.read_bytes()
    code, out, err = setup.cosign("w1.example/a", second)
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert "give --proof from `consentwatch ledger prove --from 5 --to 9`" in err
    proof = setup.root / "proof.json"
    code, _, err = cli("ledger", "prove", "--ledger", setup.db, "--from", 5, "--to", 9,
                       "--out", proof)
    assert code == 0, err
    # a truncated proof, a wrong one, one of other sizes: refused, the state unchanged
    document = json.loads(proof.read_text())
    hashes = document["consistency_proof"]
    for name, damaged in (("short", document | {"consistency_proof": hashes[:-1]}),
                          ("wrong", document | {"consistency_proof": ["00" * 32, *hashes[1:]]}),
                          ("sizes", document | {"old_size": 4})):
        bad = setup.root / f"{name}.json"
        bad.write_text(json.dumps(damaged))
        code, out, err = setup.cosign("w1.example/a", second, "--proof", bad)
        assert code == 1 and err.startswith("consentwatch: error: refused: "), err
        assert err.count("\n") == 1, err
        assert state_file.read_bytes() == before
    (setup.root / "cut.json").write_text(proof.read_text()[:40])
    code, _, err = setup.cosign("w1.example/a", second, "--proof", setup.root / "cut.json")
    assert code == 1 and "not a consistency proof file" in err and err.count("\n") == 1
    code, _, err = setup.cosign("w1.example/a", second, "--proof", proof)
    assert code == 0 and "cosigned size 9 (grew from size 5)" in err, err
    # never back to a smaller tree
    code, _, err = setup.cosign("w1.example/a", first)
    assert code == 1 and "is smaller than the tree of size 9" in err, err


def test_a_witness_refuses_another_tree_of_a_size_it_cosigned(setup: Setup) -> None:
    note = setup.checkpoint("cp1")
    code, _, err = setup.cosign("w1.example/a", note)
    assert code == 0, err
    code, _, err = setup.cosign("w1.example/a", note)  # the same tree again: fine
    assert code == 0, err
    key = load_private_key(setup.key)
    real = verify_checkpoint(note.read_text(), key.public_key())
    forked = setup.root / "forked"
    forked.write_text(sign_checkpoint(Checkpoint(real.origin, real.size, b"\x07" * 32), key,
                                      KEY_NAME))
    state = setup.witnesses["w1.example/a"]["state"].read_bytes()
    code, out, err = setup.cosign("w1.example/a", forked)
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert "this witness cosigned a different tree of size 5 for this log" in err
    assert setup.witnesses["w1.example/a"]["state"].read_bytes() == state
    # another ledger (its own origin) is another log to the witness: its own state
    other = Setup(setup.root / "other")
    other.witnesses = setup.witnesses
    code, _, err = other.cosign("w1.example/a", other.checkpoint("cp"))
    assert code == 0 and "first checkpoint of this log" in err, err


def test_bad_input_is_one_line_and_exit_1(setup: Setup, cosigned_bundle: Path) -> None:
    note = setup.checkpoint("cp2")
    text = note.read_text()
    cut = setup.root / "cut"
    for damaged in (text[:20], text[:text.index("\n\n") + 3], "", "\udcff"):
        cut.write_text(damaged, errors="surrogateescape")
        code, out, err = setup.cosign("w1.example/a", cut)
        assert code == 1 and out == "" and err.count("\n") == 1, err
        assert err.startswith("consentwatch: "), err
    other = Setup(setup.root / "other")  # a checkpoint of another log, by another key
    code, _, err = setup.cosign("w1.example/a", other.checkpoint("cp"))
    assert code == 1 and "not signed by the given key" in err and err.count("\n") == 1, err
    code, _, err = cli("ledger", "add-cosignature", "--ledger", setup.db, "--public-key",
                       other.pub, other.checkpoint("cp3"))
    assert code == 1 and "another log" in err and err.count("\n") == 1, err
    code, _, err = cli("ledger", "add-cosignature", "--ledger", setup.db, "--public-key",
                       setup.pub, cut)
    assert code == 1 and err.count("\n") == 1, err
    # a bundle of another ledger: no cosignature by these witnesses
    bundle_path = other.root / "bundle"
    code, _, err = other.export(bundle_path)
    assert code == 0, err
    code, lines = other.verify(bundle_path, *setup.vkeys())
    assert code == 1 and lines == ["FAIL witnesses: 0 valid cosignature(s) by the witness keys "
                                   "given (none), 2 required"], lines
    code, _, err = cli("verify", cosigned_bundle, "--public-key", setup.pub, "--witness-key",
                       setup.pub)
    assert code == 2 and "is not a witness key" in err and err.count("\n") == 1, err


def test_export_refuses_a_checkpoint_with_too_few_cosignatures(setup: Setup) -> None:
    code, _, err = setup.export(setup.root / "none", "--require-witnesses", 1, *setup.vkeys())
    assert code == 1 and err.count("\n") == 1, err
    assert "export refused: no checkpoint has 1 valid witness cosignatures" in err
    note = setup.checkpoint("cp1")
    code, _, err = setup.cosign("w1.example/a", note)
    assert code == 0, err
    code, _, err = cli("ledger", "add-cosignature", "--ledger", setup.db, "--public-key",
                       setup.pub, note.with_name("cp1.w1.example_a"))
    assert code == 0, err
    code, _, err = setup.export(setup.root / "one", "--require-witnesses", 2, *setup.vkeys())
    assert code == 1 and err.count("\n") == 1, err
    assert "the most found: 1 on the checkpoint of size 5" in err
    assert not (setup.root / "one").exists()
    with open_ledger(str(setup.db)) as ledger:
        ledger.append("finding", [ledger_finding(n) for n in range(5, 9)])
    code, out, err = setup.export(setup.root / "ok", "--require-witnesses", 1, *setup.vkeys())
    assert code == 0 and "(checkpoint size 5)" in out, err  # the cosigned one, not size 9


def test_removed_unknown_and_tampered_cosignatures(setup: Setup, cosigned_bundle: Path) -> None:
    manifest = manifest_of(cosigned_bundle)
    note = manifest["checkpoint"]
    body, block = note.split("\n\n")
    lines = block.splitlines()

    def with_lines(new: list[str], name: str) -> Path:
        copy = setup.root / name
        import shutil

        shutil.copytree(cosigned_bundle, copy)
        resign(copy, manifest | {"checkpoint": body + "\n\n" + "\n".join(new) + "\n"},
               setup.key)
        return copy

    removed = with_lines(lines[:2], "removed")  # the operator drops w2's (and re-signs)
    code, out = setup.verify(removed, *setup.vkeys())
    assert code == 1 and out == ["FAIL witnesses: 1 valid cosignature(s) by the witness keys "
                                 "given (w1.example/a), 2 required"], out
    code, out = setup.verify(removed, *setup.vkeys(), "--require-witnesses", 1)
    assert code == 0 and "cosigned by 1 of the 2" in out[-1], out
    # a cosignature by a key nobody gave is not counted (nor named)
    stranger = Witness("w2.example/b", Ed25519PrivateKey.generate())
    foreign = add_cosignature(body + "\n\n" + "\n".join(lines[:2]) + "\n", stranger, 1)
    code, out = setup.verify(with_lines(foreign.split("\n\n")[1].splitlines(), "unknown"),
                             *setup.vkeys())
    assert code == 1 and out[-1].startswith("FAIL witnesses: 1 valid"), out
    # a damaged cosignature by a witness given fails
    name, blob = lines[2].split(" ")[1:]
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    tampered = f"{DASH} {name} {base64.b64encode(bytes(raw)).decode()}"
    code, out = setup.verify(with_lines([*lines[:2], tampered], "tampered"), *setup.vkeys(),
                             "--require-witnesses", 1)
    assert code == 1 and out == ["FAIL checkpoint: the cosignature of witness w2.example/b "
                                 "does not verify"], out
    # the bundle itself, without witness keys, still verifies (cosignatures are not its)
    code, out = setup.verify(with_lines([*lines[:2], tampered], "plain"))
    assert code == 0, out


def test_the_verify_only_package_checks_witnesses(tmp_path: Path, setup: Setup,
                                                  cosigned_bundle: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.evidence.test_export_verify import (
        _BLOCKED_RUN,
        PIPELINE_MODULES,
        _verify_only_install,
    )

    site = _verify_only_install(tmp_path / "site")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CONSENTWATCH_NATIVE")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _BLOCKED_RUN, ",".join(PIPELINE_MODULES), str(site), *args],
            cwd=tmp_path, env=env | {"PYTHONPATH": str(site)}, capture_output=True, text=True,
            timeout=120, check=False)

    ok = run(str(cosigned_bundle), "--public-key", str(setup.pub), *setup.vkeys())
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[-1].startswith("OK: the checkpoint is cosigned by 2 of the 2")
    one = [str(setup.witnesses["w1.example/a"]["vkey"])]
    other = Setup(tmp_path / "other")
    bad = run(str(cosigned_bundle), "--public-key", str(setup.pub),
              "--witness-key", str(other.witnesses["w1.example/a"]["vkey"]))
    assert bad.returncode == 1 and bad.stdout.startswith("FAIL witnesses: 0 valid"), bad.stdout
    usage = run(str(cosigned_bundle), "--public-key", str(setup.pub), "--witness-key", *one,
                "--require-witnesses", "2")
    assert usage.returncode == 2, usage.stderr


def test_the_cosignature_is_c2sp_tlog_cosignature_v1() -> None:
    """Built by hand from the spec (c2sp.org/tlog-cosignature), independently of the code."""
    log_key, seed = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    note = sign_checkpoint(Checkpoint("example.com/log", 3, b"\x01" * 32), log_key, "log")
    witness = Witness("witness.example.com/w1", seed)
    cosigned = add_cosignature(note, witness, 1679315147)
    assert cosigned.startswith(note)  # one line more, the log's line kept
    line = cosigned[len(note):]
    assert line.startswith(f"{DASH} witness.example.com/w1 ") and line.count("\n") == 1
    blob = base64.b64decode(line.split(" ")[2])
    public = public_key_bytes(seed.public_key())
    key_id = hashlib.sha256(b"witness.example.com/w1\n\x04" + public).digest()[:4]
    assert blob[:4] == key_id == cosignature_key_id(witness.name, seed.public_key())
    assert struct.unpack(">Q", blob[4:12]) == (1679315147,) and len(blob) == 76
    message = (b"cosignature/v1\ntime 1679315147\nexample.com/log\n3\n"
               + base64.b64encode(b"\x01" * 32) + b"\n")
    seed.public_key().verify(blob[12:], message)
    vkey = witness.public().vkey()
    material = base64.b64encode(b"\x04" + public).decode()
    assert vkey == f"witness.example.com/w1+{key_id.hex()}+{material}"
    assert check_cosignatures(cosigned, [parse_witness_key(vkey)]).signed == {
        "witness.example.com/w1": 1679315147}
    # cosigning again replaces the witness's own line
    again = add_cosignature(cosigned, witness, 1679315200)
    assert again.count(f"{DASH} witness.example.com/w1 ") == 1


def test_a_ledger_with_older_checkpoints_keeps_the_shared_origin(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    db = tmp_path / "old.db"
    with open_ledger(str(db)) as ledger:
        ledger.append("finding", [ledger_finding(0)])
    legacy = sign_checkpoint(Checkpoint(CHECKPOINT_ORIGIN, 0, hashlib.sha256(b"").digest()),
                             key, KEY_NAME)
    with sqlite3.connect(db) as raw:  # as signed before origins were per ledger
        raw.execute("INSERT INTO checkpoints (size, root, note, key_name, signed_at) VALUES "
                    "(0, ?, ?, ?, 0)", (hashlib.sha256(b"").digest(), legacy, KEY_NAME))
    raw.close()
    with open_ledger(str(db)) as ledger:
        note = ledger.audited_checkpoint(key, KEY_NAME).note
        assert verify_checkpoint(note, key.public_key()).origin == CHECKPOINT_ORIGIN
        assert ledger.checkpoint_origin() == CHECKPOINT_ORIGIN
