"""Key files and C2SP signed-note checkpoints.

The signed-note known answers are those of golang.org/x/mod, sumdb/note/note_test.go
(TestSign, TestOpen; repository golang/mod, commit 02c991387e35f9e4c0a9b7ce137717055f8d716d):
Ed25519 is deterministic, so signing their text with their key must give their note
byte for byte, which shows Go's note package would accept our checkpoints.
"""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.errors import ConfigError
from streams.evidence.checkpoint import (
    ORIGIN,
    Checkpoint,
    CheckpointError,
    key_id,
    open_note,
    sign_checkpoint,
    sign_note,
    verifier_key,
    verify_checkpoint,
)
from streams.evidence.keys import (
    KEY_NAME,
    generate_keypair,
    load_private_key,
    load_public_key,
)
from streams.evidence.merkle import leaf_hash, root_hash

# golang.org/x/mod sumdb/note/note_test.go
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = ("If you think cryptography is the answer to your problem,\n"
           "then you don't know what your problem is.\n")
PETER_SIG = ("\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FF"
             "YC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n")
ENOCH_SIG = ("\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1"
             "aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n")


def _go_key() -> Ed25519PrivateKey:
    material = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert material[0] == 1  # signature type Ed25519
    return Ed25519PrivateKey.from_private_bytes(material[1:])


def test_sign_note_reproduces_go_sumdb_note() -> None:
    key = _go_key()
    assert sign_note(GO_TEXT, key, "PeterNeumann") == GO_TEXT + "\n" + PETER_SIG
    assert verifier_key("PeterNeumann", key.public_key()) == GO_VKEY
    assert key_id("PeterNeumann", key.public_key()).hex() == "c74f20a3"


def test_open_note_accepts_go_note_and_ignores_unknown_signers() -> None:
    public = _go_key().public_key()
    assert open_note(GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG, public) == GO_TEXT
    with pytest.raises(CheckpointError, match="not signed by the given key"):
        open_note(GO_TEXT + "\n" + ENOCH_SIG, public)


@pytest.mark.parametrize("note", [
    GO_TEXT,
    GO_TEXT + "\n",
    GO_TEXT + "\n" + PETER_SIG[:-1],
    "\x01" + GO_TEXT + "\n" + PETER_SIG,
    GO_TEXT + "\n" + "\u2014 Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2p"
    "ZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n",
    GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
    GO_TEXT + "\n" + PETER_SIG * 101,
], ids=["no-sigs", "blank-only", "no-final-newline", "control-char", "bad-name",
        "unexpected-line", "too-many"])
def test_open_note_rejects_malformed_notes_of_go_tests(note: str) -> None:
    with pytest.raises(CheckpointError, match="malformed"):
        open_note(note, _go_key().public_key())


def test_open_note_rejects_invalid_signature_of_known_key() -> None:
    bad = GO_TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(CheckpointError, match="does not verify"):
        open_note(bad, _go_key().public_key())
    with pytest.raises(CheckpointError, match="does not verify"):
        open_note(GO_TEXT.replace("cryptography", "cryptographY") + "\n" + PETER_SIG,
                  _go_key().public_key())


def _checkpoint() -> Checkpoint:
    return Checkpoint(ORIGIN, 3, root_hash([leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c")]))


def test_checkpoint_round_trip_and_format() -> None:
    key = Ed25519PrivateKey.generate()
    cp = _checkpoint()
    note = sign_checkpoint(cp, key, KEY_NAME)
    lines = note.split("\n")
    assert lines[:3] == [ORIGIN, "3", base64.b64encode(cp.root).decode()]
    assert lines[3] == ""
    assert lines[4].startswith(f"\u2014 {KEY_NAME} ")
    assert len(base64.b64decode(lines[4].split(" ")[2])) == 4 + 64
    assert verify_checkpoint(note, key.public_key()) == cp


def test_checkpoint_with_another_key_or_tampered_fails() -> None:
    key = Ed25519PrivateKey.generate()
    note = sign_checkpoint(_checkpoint(), key, KEY_NAME)
    with pytest.raises(CheckpointError, match="not signed by the given key"):
        verify_checkpoint(note, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_checkpoint(note.replace("\n3\n", "\n4\n", 1), key.public_key())


def test_checkpoint_body_is_validated() -> None:
    key = Ed25519PrivateKey.generate()
    for body in ("origin\n03\nAAAA\n", "origin\nx\nAAAA\n", "origin\n1\nAAAA\n", "origin\n1\n"):
        with pytest.raises(CheckpointError, match="malformed checkpoint"):
            verify_checkpoint(sign_note(body, key, KEY_NAME), key.public_key())
    with pytest.raises(ValueError, match="key name"):
        sign_checkpoint(_checkpoint(), key, "two words")


def test_generate_keypair_writes_0600_pem_and_loads(tmp_path: Path) -> None:
    key_path, pub_path = generate_keypair(tmp_path / "keys")
    assert key_path.name == "consentwatch.key" and pub_path.name == "consentwatch.pub"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert b"PRIVATE" not in pub_path.read_bytes()
    private, public = load_private_key(key_path), load_public_key(pub_path)
    note = sign_checkpoint(_checkpoint(), private, KEY_NAME)
    assert verify_checkpoint(note, public) == _checkpoint()


def test_generate_keypair_refuses_to_overwrite(tmp_path: Path) -> None:
    key_path, _ = generate_keypair(tmp_path)
    before = key_path.read_bytes()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate_keypair(tmp_path)
    assert key_path.read_bytes() == before


def test_bad_key_files_give_one_line_errors(tmp_path: Path) -> None:
    key_path, pub_path = generate_keypair(tmp_path)
    junk = tmp_path / "junk"
    junk.write_text("not a key\n")
    for loader, path, message in (
        (load_private_key, junk, "not an unencrypted PEM private key"),
        (load_public_key, junk, "not a PEM public key"),
        (load_public_key, key_path, "this is a private key"),
        (load_private_key, pub_path, "not an unencrypted PEM private key"),
        (load_private_key, tmp_path / "missing", "cannot read private key"),
    ):
        with pytest.raises(ConfigError, match=message) as info:
            loader(path)  # type: ignore[operator]
        assert "\n" not in str(info.value)


def test_a_signature_block_splits_at_newlines_only() -> None:
    """U+2028 inside a signature line keeps it one (malformed) line, as Go's sumdb/note
    reads it, never two."""
    from streams.evidence.cosignature import note_parts

    key = Ed25519PrivateKey.generate()
    note = sign_note("consentwatch ledger\n1\nAAAA\n", key, "consentwatch")
    text, _, line = note.rstrip("\n").rpartition("\n")
    broken = f"{text}\n{line}\u2028{line}\n"
    with pytest.raises(CheckpointError, match="signature"):
        open_note(broken, key.public_key())
    with pytest.raises(CheckpointError, match="bad signature line"):
        note_parts(broken)
    assert len(note_parts(note)[1]) == 1
