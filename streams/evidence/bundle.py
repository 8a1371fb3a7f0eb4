"""The evidence bundle's layout, shared by `export` (which writes it) and `verify`.

    OUT/findings.jsonl        one finding per line: exactly its ledger leaf (RFC 8785 bytes)
    OUT/amendments.jsonl      the ledger's amendments of those findings, the same way
    OUT/reviews.jsonl         the ledger's reviews of those findings, the same way
    OUT/exceptions.jsonl      the ledger's exceptions whose scope covers one of them
    OUT/evidence/<name>.json  each cited evidence event, RFC 8785
    OUT/consent_records.jsonl one line per finding, in the same order: its id and the consent
                              record in force (streams.evidence.consent_record), RFC 8785;
                              verify recomputes each line from the proven finding
    OUT/summary.csv           one row per finding, for spreadsheets
    OUT/report.html           the human-readable report (self-contained)
    OUT/manifest.json         RFC 8785 JSON: what, why, hashes, checkpoint, proofs
    OUT/manifest.sig          the raw 64-byte Ed25519 signature of manifest.json's bytes
    OUT/attestation.intoto.jsonl  (format /4) the same, as an in-toto Statement in a DSSE
                              envelope over every other file (streams.evidence.attestation)

OUT.zip holds the same files under the folder `<OUT's name>/`. docs/evidence-bundle.md
describes every field.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import stat
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any

import rfc8785

from streams.errors import ConfigError, ConsentwatchError

__all__ = [
    "AMENDMENTS",
    "ATTESTATION",
    "CONSENT_RECORDS",
    "EVIDENCE_DIR",
    "EXCEPTIONS",
    "FINDINGS",
    "FORMAT",
    "FORMATS",
    "MANIFEST",
    "MAX_BUNDLE_BYTES",
    "MAX_FILE_BYTES",
    "REPORT",
    "REVIEWS",
    "SIGNATURE",
    "SUMMARY",
    "BundleError",
    "BundleFiles",
    "EvidenceNames",
    "evidence_events",
    "evidence_file",
    "folder_problem",
    "format_version",
    "never_raised_scope",
    "open_bundle",
    "sha256_hex",
    "write_zip",
]

#: /2 (issue 17) adds reviews.jsonl and exceptions.jsonl; /3 (issue 18) the manifest's
#: `previous` (the previous export's checkpoint and the consistency proof from it);
#: /4 the in-toto attestation (ATTESTATION); verify reads /1 to /3 bundles too.
FORMAT = "consentwatch-evidence-bundle/4"
FORMATS = ("consentwatch-evidence-bundle/1", "consentwatch-evidence-bundle/2",
           "consentwatch-evidence-bundle/3", FORMAT)
FINDINGS = "findings.jsonl"
AMENDMENTS = "amendments.jsonl"
REVIEWS = "reviews.jsonl"
EXCEPTIONS = "exceptions.jsonl"
EVIDENCE_DIR = "evidence"
SUMMARY = "summary.csv"
REPORT = "report.html"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
ATTESTATION = "attestation.intoto.jsonl"
#: issue 18: checked whenever present (bundles exported before it do not have it)
CONSENT_RECORDS = "consent_records.jsonl"

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same bundle always zips to the same bytes
_CHUNK = 1 << 20

#: No bundle file is read past this many bytes, and a bundle whose files add up to more
#: than MAX_BUNDLE_BYTES is not read at all: a small hostile zip can inflate to terabytes.
MAX_FILE_BYTES = 4 << 30
MAX_BUNDLE_BYTES = 16 << 30

# What unzip would do with an entry that makes it unsafe to trust what verify read.
_ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError,
                    NotImplementedError, RuntimeError)


class BundleError(ConsentwatchError):
    """A bundle, or one of its files, that cannot be read: corrupt, truncated, too large.

    The message is one line that starts with the file it is about.
    """


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def format_version(value: object) -> int:
    """N of a manifest's `format` consentwatch-evidence-bundle/N; 0 when not one of FORMATS."""
    return FORMATS.index(value) + 1 if isinstance(value, str) and value in FORMATS else 0


def evidence_file(event_id: str) -> str:
    """The bundle path of an evidence event: its id when that is a safe file name,
    else `sha256-<hex of the id>` (ids are the producer's and may hold '/' or '..')."""
    stem = event_id if _SAFE_ID.fullmatch(event_id) else f"sha256-{sha256_hex(event_id.encode())}"
    return f"{EVIDENCE_DIR}/{stem}.json"


def never_raised_scope(amendment: Mapping[str, Any]) -> dict[str, Any]:
    """What a query, an exception and summary.csv read of an amendment of a finding never
    raised, as they read that finding: its rule and subject, and from its trigger (the
    event in its evidence) the time, account, meeting and provider a finding takes from
    it. An amendment's own `occurred_at` is its late event's; without the trigger in the
    evidence, that time and None for the others."""
    trigger = next((event for event in evidence_events(amendment)
                    if event["event_id"] == amendment.get("trigger_event_id")), {})

    def text(name: str) -> str | None:
        value = trigger.get(name)
        return value if isinstance(value, str) else None

    occurred_at = trigger.get("occurred_at")
    if type(occurred_at) is not int:
        occurred_at = amendment.get("occurred_at")
    return {"rule": amendment.get("rule"), "subject_id": amendment.get("subject_id"),
            "occurred_at": occurred_at, "account_id": text("account_id"),
            "meeting_id": text("meeting_id"), "provider": text("provider")}


class EvidenceNames:
    """The bundle path of each evidence event the findings cite, given in ledger order
    (the exporter, its report and verify all go through the findings in that order).

    The first event of an id is at `evidence_file(id)`. Another event under the same id
    (ids are the producer's: two example sets in one ledger, a pseudonymisation key
    changed between two findings) is at that path with `~` and the SHA-256 of its
    canonical bytes before `.json`, which no id's own path has (`~` is never in an id
    used as a file name). So every finding's evidence file is its own event."""

    def __init__(self) -> None:
        self._held: dict[str, bytes] = {}

    def name(self, event: Mapping[str, Any]) -> tuple[str, bytes]:
        """(bundle path, canonical bytes) of `event`; the same path each time it is asked."""
        data = rfc8785.dumps(dict(event))
        name = evidence_file(event["event_id"])
        if self._held.setdefault(name, data) != data:
            name = f"{name.removesuffix('.json')}~{sha256_hex(data)}.json"
            self._held.setdefault(name, data)
        return name, data


def evidence_events(record: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The evidence events a finding record carries (none in records older than issue 5)."""
    for event in record.get("evidence") or ():
        if isinstance(event, dict) and isinstance(event.get("event_id"), str):
            yield event


def folder_problem(folder: str) -> str | None:
    """Why `folder` cannot be the folder of a bundle's zip (its entries would be refused
    on reading, as `_safe_parts` refuses them), or None."""
    problems: list[str] = []
    info = zipfile.ZipInfo(f"{folder}/{MANIFEST}")
    info.external_attr = 0o644 << 16
    if _safe_parts(info, problems) is None:
        return problems[0].split(": zip entry refused: ", 1)[-1]
    return None


def write_zip(path: Path, folder: str, files: Mapping[str, bytes]) -> None:
    """A deterministic zip of `files` (bundle path -> bytes) under `folder/`."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name])


class BundleFiles:
    """The files of a bundle directory or zip, by bundle path ('evidence/x.json').

    Files are read as bounded streams, never whole unless asked (`read`, with a limit).
    `problems` lists, one line each, the entries that were refused (symbolic links,
    absolute or '..' paths, names given twice, unprintable names): they are not files
    of the bundle, and they make it fail verification.
    """

    def __init__(self, sizes: Mapping[str, int], problems: Sequence[str]) -> None:
        self.sizes = dict(sizes)
        self.problems = list(problems)

    def __enter__(self) -> BundleFiles:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release what `open_bundle` opened."""

    def _open(self, name: str) -> IO[bytes]:
        raise NotImplementedError

    def chunks(self, name: str, limit: int | None = None) -> Iterator[bytes]:
        """The bytes of `name` in chunks; BundleError when unreadable or over `limit`
        (default MAX_FILE_BYTES)."""
        limit = MAX_FILE_BYTES if limit is None else limit
        if self.sizes[name] > limit:
            raise BundleError(f"{name}: {self.sizes[name]} bytes, more than the limit of "
                              f"{limit}; not read")
        total = 0
        try:
            with self._open(name) as stream:
                while chunk := stream.read(_CHUNK):
                    total += len(chunk)
                    if total > limit:
                        raise BundleError(f"{name}: more than the limit of {limit} bytes; "
                                          "not read further")
                    yield chunk
        except _ZIP_READ_ERRORS as exc:
            raise BundleError(f"{name}: cannot be read ({_reason(exc)})") from exc

    def read(self, name: str, limit: int) -> bytes:
        return b"".join(self.chunks(name, limit))

    def sha256(self, name: str) -> str:
        digest = hashlib.sha256()
        for chunk in self.chunks(name):
            digest.update(chunk)
        return digest.hexdigest()

    def lines(self, name: str, max_line: int) -> Iterator[tuple[bytes | None, bool]]:
        """(line without its b'\\n', whether a b'\\n' ended it) for each line of `name`;
        the line is None when it is longer than `max_line` bytes (it is not kept)."""
        pending = bytearray()
        too_long = False
        for chunk in self.chunks(name):
            *complete, rest = chunk.split(b"\n")
            for piece in complete:
                too_long = too_long or len(pending) + len(piece) > max_line
                yield (None if too_long else bytes(pending + piece)), True
                pending.clear()
                too_long = False
            too_long = too_long or len(pending) + len(rest) > max_line
            if too_long:
                pending.clear()
            else:
                pending += rest
        if pending or too_long:
            yield (None if too_long else bytes(pending)), False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or f"{type(exc).__name__}: corrupt or truncated"


class _DirectoryFiles(BundleFiles):
    def __init__(self, root: Path) -> None:
        self._root = root
        sizes: dict[str, int] = {}
        problems: list[str] = []
        _walk(root, "", sizes, problems)
        super().__init__(sizes, problems)

    def _open(self, name: str) -> IO[bytes]:
        # O_NOFOLLOW: a file swapped for a link after the walk is not followed either.
        fd = os.open(self._root / name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        return os.fdopen(fd, "rb")


def _walk(folder: Path, prefix: str, sizes: dict[str, int], problems: list[str]) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise BundleError(f"{prefix or folder}: cannot be listed ({_reason(exc)})") from exc
    for entry in entries:
        name = prefix + entry.name
        shown = _printable(name)
        if shown != name:
            problems.append(f"{shown}: unprintable characters in the file name (refused)")
        elif entry.is_symlink():
            problems.append(f"{name}: a symbolic link (refused: it could point anywhere)")
        elif entry.is_dir(follow_symlinks=False):
            _walk(Path(entry.path), name + "/", sizes, problems)
        elif entry.is_file(follow_symlinks=False):
            sizes[name] = entry.stat(follow_symlinks=False).st_size
        else:
            problems.append(f"{name}: not a regular file (refused)")


class _ZipFiles(BundleFiles):
    def __init__(self, path: Path) -> None:
        try:
            self._archive = zipfile.ZipFile(path)
            infos = self._archive.infolist()
        except _ZIP_READ_ERRORS as exc:
            raise BundleError(f"{path.name}: not a readable zip file ({_reason(exc)})") from exc
        problems: list[str] = []
        safe = [(info, parts) for info in infos
                if (parts := _safe_parts(info, problems)) is not None and not info.is_dir()]
        tops = {parts[0] for _, parts in safe}
        strip = len(tops) == 1 and all(len(parts) > 1 for _, parts in safe)
        self._infos: dict[str, zipfile.ZipInfo] = {}
        copies: Counter[str] = Counter()
        for info, parts in safe:
            name = "/".join(parts[1:] if strip else parts)
            copies[name] += 1
            self._infos.setdefault(name, info)  # the first copy: the one unzip extracts
        problems += [f"{name}: {count} entries of this name in the zip (refused: one could "
                     "be extracted and another verified)"
                     for name, count in sorted(copies.items()) if count > 1]
        super().__init__({name: info.file_size for name, info in self._infos.items()},
                         problems)

    def close(self) -> None:
        self._archive.close()

    def _open(self, name: str) -> IO[bytes]:
        return self._archive.open(self._infos[name])


def _safe_parts(info: zipfile.ZipInfo, problems: list[str]) -> tuple[str, ...] | None:
    """The path parts of a zip entry that is safe to extract; else None and a problem."""
    raw = info.filename
    name = _printable(raw)
    parts = PurePosixPath(raw).parts
    mode = info.external_attr >> 16
    if not parts:
        problem = "an empty name"
    elif name != raw:
        problem = "unprintable characters in the entry name"
    elif "\\" in raw:
        problem = "a backslash in the entry name (some tools read it as a folder)"
    elif raw.startswith("/") or _DRIVE.match(raw):
        problem = "an absolute path"
    elif ".." in parts:
        problem = "a '..' in its path (it would be extracted outside the bundle)"
    elif stat.S_ISLNK(mode):
        problem = "a symbolic link (it could point anywhere)"
    elif stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        problem = "not a regular file"
    else:
        return parts
    problems.append(f"{name}: zip entry refused: {problem}")
    return None


_DRIVE = re.compile(r"[A-Za-z]:")


def _printable(name: str) -> str:
    """`name` with every unprintable character escaped, so a report line stays one line."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in name)


def open_bundle(path: Path) -> BundleFiles:
    """The files of the bundle directory or zip at `path` (use it as a context manager).

    BundleError when `path` is not a readable zip file or its files add up to more than
    MAX_BUNDLE_BYTES; ConfigError when it is neither a directory nor a file.
    """
    if path.is_dir():
        files: BundleFiles = _DirectoryFiles(path)
    elif path.is_file():
        files = _ZipFiles(path)
    else:
        raise ConfigError(f"{path} is neither a bundle directory nor a zip file")
    total = sum(files.sizes.values())
    if total > MAX_BUNDLE_BYTES:
        files.close()
        raise BundleError(f"{path.name}: its files add up to {total} bytes, more than the "
                          f"limit of {MAX_BUNDLE_BYTES}; not verified")
    return files
