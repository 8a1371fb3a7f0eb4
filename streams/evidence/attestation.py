"""The bundle's in-toto attestation (issue 18): `attestation.intoto.jsonl`.

The export is also stated as an in-toto Statement v1
(github.com/in-toto/attestation, spec/v1/statement.md) in a DSSE envelope
(github.com/secure-systems-lab/dsse) signed with the ledger's Ed25519 key, so tools of
the software supply chain can check a bundle without consentwatch:

- subject: every file of the bundle but the attestation itself (manifest.json and
  manifest.sig included), by bundle path, with its SHA-256 (`{"sha256": hex}`);
- predicateType: PREDICATE_TYPE; predicate: the export's format, time, purpose, query
  (window and filters as the manifest has them), checkpoint (the signed note, its
  origin, size and root in hex) and counts of findings, amendments, reviews and
  exceptions (`predicate`);
- the envelope: payloadType `application/vnd.in-toto+json`, payload the RFC 8785 JSON
  of the statement in standard base64, one signature: Ed25519 over
  PAE("DSSEv1", payloadType, payload) (lengths in bytes, ASCII decimal), keyid the
  key's OpenSSH SHA256 fingerprint (what go-securesystemslib's dsse.SHA256KeyID, and so
  cosign, compute for a verifier without a key id);
- the file: in-toto's attestation bundle form (spec/v1/bundle.md), JSON Lines of DSSE
  envelopes: here one line, the envelope's RFC 8785 JSON.

`attest` writes it, `check_attestation` checks it (with the manifest `verify` read).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from streams.evidence.bundle import ATTESTATION
from streams.evidence.checkpoint import Checkpoint, verify_checkpoint
from streams.evidence.keys import public_key_bytes

__all__ = [
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "attest",
    "check_attestation",
    "key_id",
    "pae",
    "predicate",
    "statement",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
#: Ours: the meaning of the predicate's fields is docs/evidence-bundle.md's.
PREDICATE_TYPE = "https://consentwatch.dev/evidence-export/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
_ENTRIES = ("findings", "amendments", "reviews", "exceptions")
_ENVELOPE_KEYS = {"payload", "payloadType", "signatures"}
_STATEMENT_KEYS = {"_type", "subject", "predicateType", "predicate"}
_SHOWN = 3  # subject mismatches named in a failure line


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: the bytes that are signed. Lengths count bytes
    (of UTF-8), never characters."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def key_id(public_key: Ed25519PublicKey) -> str:
    """The key's OpenSSH fingerprint, `SHA256:` + unpadded base64 of the SHA-256 of its SSH
    wire form (`ssh-keygen -l` prints it)."""
    blob = b"".join(len(part).to_bytes(4, "big") + part
                    for part in (b"ssh-ed25519", public_key_bytes(public_key)))
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def predicate(manifest: Mapping[str, Any], checkpoint: Checkpoint) -> dict[str, Any]:
    """What the statement says about the export, taken from its manifest and its
    (verified) checkpoint."""
    return {
        "format": manifest.get("format"),
        "created_at": manifest.get("created_at"),
        "purpose": manifest.get("purpose"),
        "query": {"window": manifest.get("window"), "filters": manifest.get("filters")},
        "checkpoint": {"note": manifest.get("checkpoint"), "origin": checkpoint.origin,
                       "size": checkpoint.size, "root": checkpoint.root.hex()},
        "counts": {kind: len(entries) if isinstance(entries := manifest.get(kind), list)
                   else None for kind in _ENTRIES},
    }


def statement(digests: Mapping[str, str], manifest: Mapping[str, Any],
              checkpoint: Checkpoint) -> dict[str, Any]:
    """The in-toto Statement v1 of a bundle whose files (bundle path -> SHA-256 hex, all
    but the attestation) are `digests`."""
    return {"_type": STATEMENT_TYPE,
            "subject": [{"name": name, "digest": {"sha256": digest}}
                        for name, digest in sorted(digests.items())],
            "predicateType": PREDICATE_TYPE,
            "predicate": predicate(manifest, checkpoint)}


def attest(key: Ed25519PrivateKey, digests: Mapping[str, str],
           manifest: Mapping[str, Any]) -> bytes:
    """The bytes of `attestation.intoto.jsonl`: the signed envelope of `statement`, one
    line. CheckpointError if the manifest's checkpoint is not signed by `key`."""
    checkpoint = verify_checkpoint(manifest["checkpoint"], key.public_key())
    payload = rfc8785.dumps(statement(digests, manifest, checkpoint))
    signature = base64.b64encode(key.sign(pae(PAYLOAD_TYPE, payload))).decode()
    envelope: dict[str, Any] = {
        "payload": base64.b64encode(payload).decode(), "payloadType": PAYLOAD_TYPE,
        "signatures": [{"keyid": key_id(key.public_key()), "sig": signature}]}
    return rfc8785.dumps(envelope) + b"\n"


def _b64(value: Any) -> bytes | None:
    """Standard base64 with padding, exactly as `attest` writes it; else None."""
    if not isinstance(value, str) or not value.isascii():
        return None
    try:
        data = binascii.a2b_base64(value, strict_mode=True)
    except binascii.Error:
        return None
    return data if base64.b64encode(data).decode() == value else None


def check_attestation(raw: bytes, public_key: Ed25519PublicKey, manifest: Mapping[str, Any],
                      checkpoint: Checkpoint | None,
                      digests: Mapping[str, Any] | None) -> list[str]:
    """The failures of `attestation.intoto.jsonl` (`raw`), one line each.

    The envelope must be the one line `attest` writes and its signature verify with
    `public_key`; then the statement's subjects must be exactly `digests` (the bundle's
    files as the signed manifest lists them; None: not compared, a failure already says
    why) and its predicate `predicate(manifest, checkpoint)` (checkpoint None: not
    compared).
    """
    line, newline, rest = raw.partition(b"\n")
    if not newline or rest:
        return [f"{ATTESTATION}: not one DSSE envelope on one line ending with a newline"]
    try:
        envelope = orjson.loads(line)
    except orjson.JSONDecodeError:
        envelope = None
    if not isinstance(envelope, dict) or set(envelope) != _ENVELOPE_KEYS:
        return [f"{ATTESTATION}: not a DSSE envelope (a JSON object of payload, payloadType "
                "and signatures)"]
    if envelope["payloadType"] != PAYLOAD_TYPE:
        return [f"{ATTESTATION}: the envelope's payloadType is not {PAYLOAD_TYPE}"]
    payload = _b64(envelope["payload"])
    if payload is None:
        return [f"{ATTESTATION}: the envelope's payload is not standard base64"]
    signatures = envelope["signatures"]
    signature = signatures[0] if isinstance(signatures, list) and len(signatures) == 1 else None
    if not isinstance(signature, dict) or set(signature) != {"keyid", "sig"}:
        return [f"{ATTESTATION}: the envelope needs exactly one signature (keyid, sig)"]
    sig = _b64(signature["sig"])
    try:
        if sig is None:
            raise InvalidSignature
        public_key.verify(sig, pae(PAYLOAD_TYPE, payload))
    except InvalidSignature:
        return [f"{ATTESTATION}: the DSSE signature does not verify with the given public key "
                "(over PAE(payloadType, payload))"]
    problems = []
    if signature["keyid"] != key_id(public_key):
        problems.append(f"{ATTESTATION}: the signature's keyid is not the given key's "
                        f"({key_id(public_key)})")
    if rfc8785.dumps(envelope) != line:
        problems.append(f"{ATTESTATION}: the envelope is not in its canonical form "
                        "(RFC 8785): it was changed")
    return problems + _check_statement(payload, manifest, checkpoint, digests)


def _check_statement(payload: bytes, manifest: Mapping[str, Any],
                     checkpoint: Checkpoint | None,
                     digests: Mapping[str, Any] | None) -> list[str]:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict) or set(document) != _STATEMENT_KEYS:
        return [f"{ATTESTATION}: the payload is not an in-toto Statement (_type, subject, "
                "predicateType, predicate)"]
    if document["_type"] != STATEMENT_TYPE:
        return [f"{ATTESTATION}: the statement's _type is not {STATEMENT_TYPE}"]
    problems = []
    if document["predicateType"] != PREDICATE_TYPE:
        problems.append(f"{ATTESTATION}: the statement's predicateType is not {PREDICATE_TYPE}")
    subjects = _subjects(document["subject"])
    if subjects is None:
        problems.append(f"{ATTESTATION}: the statement's subject is not a list of files, "
                        "each with a name and only a sha256 digest, each named once")
    elif digests is not None and subjects != digests:
        differ = sorted(name for name in set(subjects) | set(digests)
                        if subjects.get(name) != digests.get(name))
        shown = ", ".join(differ[:_SHOWN]) + (f" and {len(differ) - _SHOWN} more"
                                             if len(differ) > _SHOWN else "")
        problems.append(f"{ATTESTATION}: the statement's subjects are not the bundle's files "
                        f"and digests ({shown})")
    if checkpoint is not None and document["predicate"] != predicate(manifest, checkpoint):
        expected = predicate(manifest, checkpoint)
        given = document["predicate"] if isinstance(document["predicate"], dict) else {}
        fields = ", ".join(sorted(k for k in expected if given.get(k) != expected[k])
                           + sorted(set(given) - set(expected))) or "predicate"
        problems.append(f"{ATTESTATION}: the statement's predicate differs from the manifest "
                        f"({fields})")
    return problems


def _subjects(value: Any) -> dict[str, str] | None:
    """name -> sha256 of the statement's subjects, or None when malformed."""
    if not isinstance(value, list):
        return None
    subjects: dict[str, str] = {}
    for item in value:
        if not (isinstance(item, dict) and set(item) == {"name", "digest"}
                and isinstance(name := item["name"], str) and name not in subjects
                and isinstance(digest := item["digest"], dict) and set(digest) == {"sha256"}
                and isinstance(digest["sha256"], str)):
            return None
        subjects[name] = digest["sha256"]
    return subjects
