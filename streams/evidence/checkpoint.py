"""Signed checkpoints of the ledger's Merkle tree, as C2SP signed notes.

A checkpoint (c2sp.org/tlog-checkpoint) is the note text

    <origin>\\n<tree size, decimal>\\n<base64 root hash>\\n

signed as a C2SP signed note (c2sp.org/signed-note): a blank line, then one line per
signature, `— <key name> <base64(key id || Ed25519 signature over the text)>`, with
key id = SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4]. Using the
published format means any signed-note tool (Go's golang.org/x/mod/sumdb/note,
transparency-dev) can check our checkpoints with the verifier key `verifier_key()`
prints; nothing here is specific to consentwatch.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from streams.errors import ConsentwatchError
from streams.evidence.keys import public_key_bytes

__all__ = [
    "ORIGIN",
    "Checkpoint",
    "CheckpointError",
    "NotSignedByKey",
    "key_id",
    "open_note",
    "sign_checkpoint",
    "sign_note",
    "verifier_key",
    "verify_checkpoint",
]

ORIGIN = "consentwatch ledger"
_ED25519 = b"\x01"  # signed-note signature type of Ed25519
_DASH = "\u2014"  # em dash, the start of every signature line
_HASH_SIZE = 32
_MAX_SIGNATURES = 100  # as Go's sumdb/note; the spec asks for at least 16
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")


class CheckpointError(ConsentwatchError):
    """A note or checkpoint that is malformed or not signed by the expected key."""


class NotSignedByKey(CheckpointError):
    """A well-formed note with no signature line by the expected key (another key's)."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        """The checkpoint body, the text that is signed."""
        if not self.origin or "\n" in self.origin or _has_control(self.origin):
            raise ValueError("checkpoint origin must be one non-empty line")
        if self.size < 0 or len(self.root) != _HASH_SIZE:
            raise ValueError("checkpoint needs a size >= 0 and a 32-byte root")
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 and c != "\n" for c in text)


def _check_key_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() for c in name) or _has_control(name):
        raise ValueError("key name must be non-empty, with no spaces and no '+'")


def key_id(key_name: str, public_key: Ed25519PublicKey) -> bytes:
    """The 4-byte signed-note key id of an Ed25519 key under `key_name`."""
    digest = hashlib.sha256(key_name.encode() + b"\n" + _ED25519 + public_key_bytes(public_key))
    return digest.digest()[:4]


def verifier_key(key_name: str, public_key: Ed25519PublicKey) -> str:
    """The verifier key string of Go's sumdb/note: `<name>+<hex key id>+<base64(0x01||key)>`."""
    _check_key_name(key_name)
    material = base64.b64encode(_ED25519 + public_key_bytes(public_key)).decode()
    return f"{key_name}+{key_id(key_name, public_key).hex()}+{material}"


def sign_note(text: str, key: Ed25519PrivateKey, key_name: str) -> str:
    """A signed note of `text` (which must end in a newline) with one Ed25519 signature."""
    _check_key_name(key_name)
    if not text.endswith("\n") or _has_control(text):
        raise ValueError("note text must end in a newline and hold no control characters")
    signature = key.sign(text.encode())
    blob = base64.b64encode(key_id(key_name, key.public_key()) + signature).decode()
    return f"{text}\n{_DASH} {key_name} {blob}\n"


def open_note(note: str, public_key: Ed25519PublicKey) -> str:
    """The text of `note` if a signature line by `public_key` verifies; else CheckpointError.

    Signature lines by other keys are ignored, as the spec requires; a line whose name
    and key id match the key but whose signature fails rejects the whole note.
    """
    if _has_control(note) or not note.endswith("\n"):
        raise CheckpointError("malformed signed note")
    split = note.rfind("\n\n")
    if split < 0:
        raise CheckpointError("malformed signed note: no signature block")
    text, block = note[:split + 1], note[split + 2:]
    # "\n" only: str.splitlines would also split at U+2028 and the like, which Go's
    # sumdb/note reads as part of one (malformed) line.
    lines = block.removesuffix("\n").split("\n") if block else []
    if not lines or len(lines) > _MAX_SIGNATURES:
        raise CheckpointError("malformed signed note: bad number of signatures")
    verified = False
    for line in lines:
        name, signature = _parse_signature_line(line)
        if len(signature) < 4 or signature[:4] != key_id(name, public_key):
            continue
        try:
            public_key.verify(signature[4:], text.encode())
        except InvalidSignature as exc:
            raise CheckpointError("checkpoint signature does not verify") from exc
        verified = True
    if not verified:
        raise NotSignedByKey("checkpoint is not signed by the given key")
    return text


def _parse_signature_line(line: str) -> tuple[str, bytes]:
    parts = line.split(" ")
    if len(parts) != 3 or parts[0] != _DASH or not parts[1] or "+" in parts[1]:
        raise CheckpointError("malformed signed note: bad signature line")
    try:
        return parts[1], base64.b64decode(parts[2], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointError("malformed signed note: signature is not base64") from exc


def sign_checkpoint(cp: Checkpoint, key: Ed25519PrivateKey, key_name: str) -> str:
    """The signed-note text of checkpoint `cp`."""
    return sign_note(cp.text(), key, key_name)


def verify_checkpoint(note: str, public_key: Ed25519PublicKey) -> Checkpoint:
    """The checkpoint in `note`, once its signature by `public_key` verified.

    Extension lines after the root (allowed by tlog-checkpoint) are accepted and ignored.
    """
    text = open_note(note, public_key)
    lines = text.split("\n")[:-1]
    if len(lines) < 3 or not lines[0]:
        raise CheckpointError("malformed checkpoint: needs origin, size and root lines")
    if not _SIZE.fullmatch(lines[1]):
        raise CheckpointError("malformed checkpoint: tree size is not a decimal number")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointError("malformed checkpoint: root is not base64") from exc
    if len(root) != _HASH_SIZE:
        raise CheckpointError("malformed checkpoint: root is not a SHA-256 hash")
    return Checkpoint(origin=lines[0], size=int(lines[1]), root=root)
