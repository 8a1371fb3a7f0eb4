"""`consentwatch verify`: check an evidence bundle offline (no Kafka, no ledger).

Checks, each reported as one line naming the file and what is wrong:
- manifest.json is signed by the given public key (manifest.sig);
- every file has the SHA-256 the manifest lists, none is missing, none is extra;
- the checkpoint in the manifest is a signed note by the same key;
- findings.jsonl (and amendments.jsonl) hold exactly the manifest's entries, in order,
  each line canonical JSON (RFC 8785) whose leaf hash has a valid inclusion proof
  against the checkpoint, each finding inside the exported window;
- every evidence/ file is the canonical JSON of an event a finding cites.
All checks run even after a failure, so one run lists everything that is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from streams.evidence import bundle
from streams.evidence.checkpoint import Checkpoint, CheckpointError, verify_checkpoint
from streams.evidence.merkle import leaf_hash, verify_inclusion

__all__ = ["verify_bundle", "verify_files"]


def verify_bundle(path: Path, public_key: Ed25519PublicKey) -> tuple[list[str], dict[str, int]]:
    """(failures, counts) for the bundle directory or zip at `path`; no failures = OK."""
    return verify_files(bundle.read_bundle(path), public_key)


def verify_files(files: Mapping[str, bytes],
                 public_key: Ed25519PublicKey) -> tuple[list[str], dict[str, int]]:
    failures: list[str] = []
    raw = files.get(bundle.MANIFEST)
    if raw is None:
        return [f"{bundle.MANIFEST}: missing"], {}
    signature = files.get(bundle.SIGNATURE)
    if signature is None:
        failures.append(f"{bundle.SIGNATURE}: missing")
    else:
        try:
            public_key.verify(signature, raw)
        except InvalidSignature:
            failures.append(f"{bundle.SIGNATURE}: the signature of {bundle.MANIFEST} does not "
                            "verify with the given public key")
    try:
        manifest = orjson.loads(raw)
        if not isinstance(manifest, dict):
            raise ValueError("not an object")
    except ValueError:
        return [*failures, f"{bundle.MANIFEST}: not a JSON object"], {}
    if manifest.get("format") != bundle.FORMAT:
        failures.append(f"{bundle.MANIFEST}: format is not {bundle.FORMAT}")
    failures += _check_hashes(files, manifest.get("files"))
    checkpoint = _check_checkpoint(manifest.get("checkpoint"), public_key, failures)
    findings = _check_entries(files, bundle.FINDINGS, manifest.get("findings"), checkpoint,
                              failures)
    amendments = _check_entries(files, bundle.AMENDMENTS, manifest.get("amendments"),
                                checkpoint, failures)
    failures += _check_window(findings, manifest.get("window"))
    failures += _check_evidence(files, findings)
    counts = {"findings": len(findings), "amendments": len(amendments),
              "files": len(files), "checkpoint_size": checkpoint.size if checkpoint else 0}
    return failures, counts


def _check_hashes(files: Mapping[str, bytes], listed: Any) -> list[str]:
    if not isinstance(listed, dict):
        return [f"{bundle.MANIFEST}: no list of file hashes"]
    failures = []
    for name, expected in sorted(listed.items()):
        data = files.get(name)
        if data is None:
            failures.append(f"{name}: missing from the bundle")
        elif bundle.sha256_hex(data) != expected:
            failures.append(f"{name}: SHA-256 does not match the manifest (file changed)")
    for name in sorted(set(files) - set(listed) - {bundle.MANIFEST, bundle.SIGNATURE}):
        failures.append(f"{name}: not listed in the manifest (file added)")
    return failures


def _check_checkpoint(note: Any, public_key: Ed25519PublicKey,
                      failures: list[str]) -> Checkpoint | None:
    if not isinstance(note, str):
        failures.append(f"{bundle.MANIFEST}: no checkpoint")
        return None
    try:
        return verify_checkpoint(note, public_key)
    except CheckpointError as exc:
        failures.append(f"checkpoint: {exc}")
        return None


def _check_entries(files: Mapping[str, bytes], name: str, listed: Any,
                   checkpoint: Checkpoint | None, failures: list[str]) -> list[dict[str, Any]]:
    """The records of `name` that are proven; failures for every mismatch."""
    data = files.get(name)
    if data is None:
        if listed:
            failures.append(f"{name}: missing from the bundle")
        return []
    if not isinstance(listed, list):
        failures.append(f"{bundle.MANIFEST}: no list of the entries of {name}")
        return []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    else:
        failures.append(f"{name}: does not end with a newline")
    if len(lines) != len(listed):
        failures.append(f"{name}: holds {len(lines)} entries where the manifest lists "
                        f"{len(listed)} (entry removed or added)")
    records = []
    for number, (line, claim) in enumerate(zip(lines, listed, strict=False), 1):
        record = _entry(name, number, line, claim, checkpoint, failures)
        if record is not None:
            records.append(record)
    return records


def _entry(name: str, number: int, line: bytes, claim: Any, checkpoint: Checkpoint | None,
           failures: list[str]) -> dict[str, Any] | None:
    where = f"{name} line {number}"
    try:
        record = orjson.loads(line)
        canonical = isinstance(record, dict) and rfc8785.dumps(record) == line
    except (ValueError, rfc8785.CanonicalizationError):
        record, canonical = None, False
    if not isinstance(record, dict) or not canonical:
        failures.append(f"{where}: not a canonical JSON (RFC 8785) record")
        return None
    if not isinstance(claim, dict):
        failures.append(f"{bundle.MANIFEST}: entry {number} of {name} is malformed")
        return None
    entry_id = record.get("finding_id" if name == bundle.FINDINGS else "amendment_id")
    if entry_id != claim.get("id"):
        failures.append(f"{where}: holds {entry_id} where the manifest lists {claim.get('id')} "
                        "(entries removed or reordered)")
        return None
    if checkpoint is None:
        return record
    index, proof = claim.get("leaf_index"), claim.get("inclusion_proof")
    try:
        hashes = [bytes.fromhex(h) for h in proof] if isinstance(proof, list) else None
    except (TypeError, ValueError):
        hashes = None
    if type(index) is not int or hashes is None or not verify_inclusion(
            leaf_hash(line), index, checkpoint.size, hashes, checkpoint.root):
        failures.append(f"{where}: {entry_id} is not proven in the ledger: its inclusion "
                        f"proof does not verify against the checkpoint (size "
                        f"{checkpoint.size})")
        return None
    return record


def _check_window(findings: Sequence[dict[str, Any]], window: Any) -> list[str]:
    if not isinstance(window, dict):
        return [f"{bundle.MANIFEST}: no time window"]
    start, end = window.get("from_ms"), window.get("to_ms")
    if type(start) is not int or type(end) is not int:
        return [f"{bundle.MANIFEST}: malformed time window"]
    return [f"{bundle.FINDINGS}: {f.get('finding_id')} occurred outside the exported window"
            for f in findings
            if type(f.get("occurred_at")) is not int or not start <= f["occurred_at"] < end]


def _check_evidence(files: Mapping[str, bytes], findings: Sequence[dict[str, Any]]) -> list[str]:
    expected: dict[str, bytes] = {}
    for finding in findings:
        for event in bundle.evidence_events(finding):
            expected.setdefault(bundle.evidence_file(event["event_id"]), rfc8785.dumps(event))
    failures = []
    for name, data in sorted(expected.items()):
        if name not in files:
            failures.append(f"{name}: missing (a finding cites it)")
        elif files[name] != data:
            failures.append(f"{name}: differs from the evidence event in {bundle.FINDINGS}")
    prefix = bundle.EVIDENCE_DIR + "/"
    for name in sorted(n for n in files if n.startswith(prefix) and n not in expected):
        failures.append(f"{name}: no exported finding cites it")
    return failures
