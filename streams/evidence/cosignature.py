"""C2SP tlog-cosignature (cosignature/v1, Ed25519): a witness's signature on a checkpoint.

A cosignature is one more signature line of the checkpoint's signed note
(c2sp.org/tlog-cosignature):

    — <witness name> base64(key id || timestamp || signature)

- key id = SHA-256(<name> || 0x0A || 0x04 || 32-byte Ed25519 public key)[:4] (0x04: the
  cosignature/v1 key type, so a witness key can never be taken for a log key);
- timestamp: 8 bytes, big-endian, POSIX seconds when the witness signed;
- signature: Ed25519 over `cosignature/v1\\ntime <timestamp>\\n` followed by the whole
  note body (the checkpoint with its final newline, without signature lines).

A witness's public key is given as its C2SP verifier key (vkey)
`<name>+<hex key id>+<base64(0x04 || public key)>`, which names the witness too; its
private key file is the same with `PRIVATE+KEY+` in front and the 32-byte seed.
Any signed-note reader (Go's golang.org/x/mod/sumdb/note) reads the line as a
signature by a key it does not know, and ignores it.

Verifying follows the spec: a line whose name and key id are not those of a witness
key given is ignored (not counted); a line that names a given witness key but whose
signature does not verify is a failure.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from streams.errors import ConfigError
from streams.evidence.checkpoint import CheckpointError
from streams.evidence.keys import public_key_bytes
from streams.evidence.small_file import TooLarge, read_small

__all__ = [
    "COSIGNATURE_V1",
    "Witness",
    "WitnessCheck",
    "WitnessKey",
    "add_cosignature",
    "check_cosignatures",
    "check_witnesses",
    "cosignature_key_id",
    "load_witness_key",
    "load_witness_keys",
    "merge_signatures",
    "note_parts",
    "parse_witness_key",
    "parse_witness_private_key",
    "witness_private_key_text",
]

COSIGNATURE_V1 = b"\x04"  # signed-note key type of cosignature/v1 (Ed25519)
_DASH = "\u2014"
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_MAX_KEY_FILE_BYTES = 4096
_MAX_SIGNATURES = 100
_SIGNATURE_BYTES = 4 + 8 + 64


@dataclass(frozen=True, slots=True)
class WitnessKey:
    """A witness's public key and name (what a verifier is given)."""

    name: str
    public_key: Ed25519PublicKey

    @property
    def key_id(self) -> bytes:
        return cosignature_key_id(self.name, self.public_key)

    def vkey(self) -> str:
        """The C2SP verifier key: `<name>+<hex key id>+<base64(0x04 || key)>`."""
        material = base64.b64encode(COSIGNATURE_V1 + public_key_bytes(self.public_key))
        return f"{self.name}+{self.key_id.hex()}+{material.decode()}"


@dataclass(frozen=True, slots=True)
class Witness:
    """A witness's private key and name (what `consentwatch witness cosign` signs with)."""

    name: str
    private_key: Ed25519PrivateKey

    def public(self) -> WitnessKey:
        return WitnessKey(self.name, self.private_key.public_key())


def _check_name(name: str) -> None:
    if (not name or "+" in name or any(c.isspace() for c in name)
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)):
        raise ConfigError("a witness name must be non-empty, with no spaces and no '+'")


def cosignature_key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """The 4-byte key id of a cosignature/v1 key under `name`."""
    data = name.encode() + b"\n" + COSIGNATURE_V1 + public_key_bytes(public_key)
    return hashlib.sha256(data).digest()[:4]


def signed_message(body: str, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: header line, time line, the whole note body."""
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()


def witness_private_key_text(witness: Witness) -> str:
    """The private key file's one line: `PRIVATE+KEY+<name>+<hex id>+<base64(0x04||seed)>`."""
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    _check_name(witness.name)
    seed = witness.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = witness.public()
    material = base64.b64encode(COSIGNATURE_V1 + seed).decode()
    return f"{_PRIVATE_PREFIX}{witness.name}+{public.key_id.hex()}+{material}\n"


def _split_key(text: str, what: str) -> tuple[str, bytes, bytes]:
    """(name, key id, material after the type byte) of a vkey or skey body."""
    parts = text.strip().split("+", 2)  # base64 may hold "+"
    if len(parts) != 3:
        raise ConfigError(f"{what} is not a witness key (<name>+<key id>+<key>)")
    name, hex_id, encoded = parts
    try:
        _check_name(name)
    except ConfigError:  # e.g. a PEM file, whose base64 may hold "+"
        raise ConfigError(f"{what} is not a witness key (its name part is not a name)") \
            from None
    try:
        key_id = bytes.fromhex(hex_id)
        material = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error):
        raise ConfigError(f"{what} is not a witness key (bad key id or base64)") from None
    if len(key_id) != 4 or len(material) != 33 or material[:1] != COSIGNATURE_V1:
        raise ConfigError(f"{what} is not a cosignature/v1 Ed25519 witness key")
    return name, key_id, material[1:]


def parse_witness_key(text: str, what: str = "the witness key") -> WitnessKey:
    """A WitnessKey from its vkey; ConfigError (one line) when it is not one."""
    name, key_id, raw = _split_key(text, what)
    key = WitnessKey(name, Ed25519PublicKey.from_public_bytes(raw))
    if key.key_id != key_id:
        raise ConfigError(f"{what}: its key id does not match its name and key")
    return key


def parse_witness_private_key(text: str, what: str = "the witness private key") -> Witness:
    if not text.startswith(_PRIVATE_PREFIX):
        raise ConfigError(f"{what} is not a witness private key (PRIVATE+KEY+...)")
    name, key_id, seed = _split_key(text[len(_PRIVATE_PREFIX):], what)
    witness = Witness(name, Ed25519PrivateKey.from_private_bytes(seed))
    if witness.public().key_id != key_id:
        raise ConfigError(f"{what}: its key id does not match its name and key")
    return witness


def _read_text(path: Path, what: str) -> str:
    try:
        return read_small(path, _MAX_KEY_FILE_BYTES).decode("ascii")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except TooLarge:
        raise ConfigError(f"{what} {path} is not a witness key (too large)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not a witness key (not ASCII)") from None


def load_witness_key(path: Path) -> WitnessKey:
    return parse_witness_key(_read_text(path, "witness key"), f"witness key {path}")


def load_witness_keys(paths: list[Path] | tuple[Path, ...]) -> list[WitnessKey]:
    """The witness keys in `paths`; ConfigError when two have the same name."""
    keys = [load_witness_key(path) for path in paths]
    if len({key.name for key in keys}) != len(keys):
        raise ConfigError("two witness keys have the same name")
    return keys


def note_parts(note: str) -> tuple[str, list[str]]:
    """(body, signature lines) of a signed note; CheckpointError when malformed."""
    if not note.endswith("\n") or any(ord(c) < 0x20 and c != "\n" for c in note):
        raise CheckpointError("malformed signed note")
    split = note.rfind("\n\n")
    if split < 0:
        raise CheckpointError("malformed signed note: no signature block")
    block = note[split + 2:]  # lines end at "\n" only, as Go's sumdb/note reads them
    body, lines = note[:split + 1], block.removesuffix("\n").split("\n") if block else []
    if not lines or len(lines) > _MAX_SIGNATURES:
        raise CheckpointError("malformed signed note: bad number of signatures")
    for line in lines:
        _parse_line(line)
    return body, lines


def _parse_line(line: str) -> tuple[str, bytes]:
    parts = line.split(" ")
    if len(parts) != 3 or parts[0] != _DASH or not parts[1] or "+" in parts[1]:
        raise CheckpointError("malformed signed note: bad signature line")
    try:
        blob = base64.b64decode(parts[2], validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError("malformed signed note: signature is not base64") from None
    if len(blob) < 5:
        raise CheckpointError("malformed signed note: signature too short")
    return parts[1], blob


def add_cosignature(note: str, witness: Witness, timestamp: int) -> str:
    """`note` with this witness's cosignature line (replacing an earlier one of its own)."""
    if not 0 <= timestamp < 2**63:
        raise ValueError("a cosignature timestamp must be in 0 .. 2^63-1")
    body, lines = note_parts(note)
    public = witness.public()
    signature = witness.private_key.sign(signed_message(body, timestamp))
    blob = base64.b64encode(public.key_id + struct.pack(">Q", timestamp) + signature).decode()
    kept = [line for line in lines
            if _parse_line(line)[0] != witness.name or _parse_line(line)[1][:4] != public.key_id]
    return body + "\n" + "\n".join([*kept, f"{_DASH} {witness.name} {blob}"]) + "\n"


def merge_signatures(base: str, others: list[str]) -> str:
    """`base` with the signature lines of `others` (notes of the same body) it lacks; of
    two lines by one name and key id, the later given wins. CheckpointError when a note
    is malformed or another checkpoint."""
    body, lines = note_parts(base)
    by_key: dict[tuple[str, bytes], str] = {}
    for line in lines:
        name, blob = _parse_line(line)
        by_key[(name, blob[:4])] = line
    for other in others:
        other_body, other_lines = note_parts(other)
        if other_body != body:
            raise CheckpointError("the notes are of different checkpoints")
        for line in other_lines:
            name, blob = _parse_line(line)
            by_key[(name, blob[:4])] = line
    if len(by_key) > _MAX_SIGNATURES:
        raise CheckpointError("malformed signed note: bad number of signatures")
    return body + "\n" + "\n".join(by_key.values()) + "\n"


@dataclass(slots=True)
class WitnessCheck:
    """Which of the given witness keys validly cosigned a note (`signed`, by name, with
    the cosignature's timestamp), and the lines that name a given key but do not verify
    (`failures`)."""

    signed: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def summary(self, required: int, given: int) -> str:
        names = ", ".join(sorted(self.signed)) or "none"
        return (f"OK: the checkpoint is cosigned by {len(self.signed)} of the {given} witness "
                f"keys given ({names}); {required} required")


def check_cosignatures(note: str, keys: list[WitnessKey]) -> WitnessCheck:
    """Check the note's cosignatures against `keys` (see the module doc)."""
    result = WitnessCheck()
    try:
        body, lines = note_parts(note)
    except CheckpointError as exc:
        result.failures.append(f"checkpoint: {exc}")
        return result
    wanted = {(key.name, key.key_id): key for key in keys}
    for line in lines:
        name, blob = _parse_line(line)
        key = wanted.get((name, blob[:4]))
        if key is None:
            continue  # another key's signature (the log's, an unknown witness's)
        if len(blob) != _SIGNATURE_BYTES:
            result.failures.append(f"checkpoint: the cosignature of witness {name} is "
                                   "malformed (not key id, timestamp and Ed25519 signature)")
            continue
        (timestamp,) = struct.unpack(">Q", blob[4:12])
        try:
            if timestamp >= 2**63:
                raise InvalidSignature
            key.public_key.verify(blob[12:], signed_message(body, timestamp))
        except InvalidSignature:
            result.failures.append(f"checkpoint: the cosignature of witness {name} does not "
                                   "verify")
            continue
        result.signed[name] = timestamp
    return result


def check_witnesses(note: str | None, keys: list[WitnessKey],
                    required: int) -> tuple[list[str], str]:
    """What `verify --witness-key ... --require-witnesses N` says of a bundle's checkpoint
    note (None when it did not verify: nothing can be counted): (failure lines, OK line)."""
    if note is None:
        return ([f"witnesses: no verified checkpoint, so no cosignature counts ({required} "
                 "required)"], "")
    check = check_cosignatures(note, keys)
    failures = list(check.failures)
    if len(check.signed) < required:
        names = ", ".join(sorted(check.signed)) or "none"
        failures.append(f"witnesses: {len(check.signed)} valid cosignature(s) by the witness "
                        f"keys given ({names}), {required} required")
    return failures, check.summary(required, len(keys))
