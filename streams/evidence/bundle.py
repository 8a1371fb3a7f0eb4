"""The evidence bundle's layout, shared by `export` (which writes it) and `verify`.

    OUT/findings.jsonl        one finding per line: exactly its ledger leaf (RFC 8785 bytes)
    OUT/amendments.jsonl      the ledger's amendments of those findings, the same way
    OUT/evidence/<name>.json  each cited evidence event, RFC 8785
    OUT/summary.csv           one row per finding, for spreadsheets
    OUT/report.html           the human-readable report (self-contained)
    OUT/manifest.json         RFC 8785 JSON: what, why, hashes, checkpoint, proofs
    OUT/manifest.sig          the raw 64-byte Ed25519 signature of manifest.json's bytes

OUT.zip holds the same files under the folder `<OUT's name>/`. docs/evidence-bundle.md
describes every field.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from streams.errors import ConfigError

__all__ = [
    "AMENDMENTS",
    "EVIDENCE_DIR",
    "FINDINGS",
    "FORMAT",
    "MANIFEST",
    "REPORT",
    "SIGNATURE",
    "SUMMARY",
    "evidence_events",
    "evidence_file",
    "read_bundle",
    "sha256_hex",
    "write_zip",
]

FORMAT = "consentwatch-evidence-bundle/1"
FINDINGS = "findings.jsonl"
AMENDMENTS = "amendments.jsonl"
EVIDENCE_DIR = "evidence"
SUMMARY = "summary.csv"
REPORT = "report.html"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same bundle always zips to the same bytes


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def evidence_file(event_id: str) -> str:
    """The bundle path of an evidence event: its id when that is a safe file name,
    else `sha256-<hex of the id>` (ids are the producer's and may hold '/' or '..')."""
    stem = event_id if _SAFE_ID.fullmatch(event_id) else f"sha256-{sha256_hex(event_id.encode())}"
    return f"{EVIDENCE_DIR}/{stem}.json"


def evidence_events(record: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The evidence events a finding record carries (none in records older than issue 5)."""
    for event in record.get("evidence") or ():
        if isinstance(event, dict) and isinstance(event.get("event_id"), str):
            yield event


def write_zip(path: Path, folder: str, files: Mapping[str, bytes]) -> None:
    """A deterministic zip of `files` (bundle path -> bytes) under `folder/`."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name])


def read_bundle(path: Path) -> dict[str, bytes]:
    """Every file of a bundle directory or zip, by bundle path ('evidence/x.json').

    A zip's single top folder is stripped. Raises ConfigError when `path` is neither.
    """
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes()
                for p in sorted(path.rglob("*")) if p.is_file()}
    if path.is_file() and zipfile.is_zipfile(path):
        return _read_zip(path)
    raise ConfigError(f"{path} is neither a bundle directory nor a zip file")


def _read_zip(path: Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(path) as archive:
            entries = {info.filename: archive.read(info)
                       for info in archive.infolist() if not info.is_dir()}
    except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
        raise ConfigError(f"{path} cannot be read as a zip file ({type(exc).__name__})") from exc
    tops = {PurePosixPath(name).parts[0] for name in entries if PurePosixPath(name).parts}
    strip = len(tops) == 1 and all(len(PurePosixPath(n).parts) > 1 for n in entries)
    files: dict[str, bytes] = {}
    for name, data in entries.items():
        parts = PurePosixPath(name).parts[1:] if strip else PurePosixPath(name).parts
        # Keep odd names as they are: verify reports them as files the manifest does not list.
        files["/".join(parts) if parts else name] = data
    return files
