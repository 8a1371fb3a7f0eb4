"""`consentwatch verify`: check an evidence bundle offline (no Kafka, no ledger).

Checks, each reported as one line naming the file and what is wrong:
- the bundle is safe to unpack: no symbolic link, absolute or '..' path, name given
  twice, and no file larger than the limits of `streams.evidence.bundle` (a zip bomb
  is refused or streamed, never inflated into memory);
- manifest.json is signed by the given public key (manifest.sig);
- every file has the SHA-256 the manifest lists, none is missing, none is extra;
- the checkpoint in the manifest is a signed note by the same key;
- findings.jsonl (and amendments.jsonl) hold exactly the manifest's entries, in order,
  each line canonical JSON (RFC 8785) whose leaf hash has a valid inclusion proof
  against the checkpoint; each finding matches the export's query (inside the window,
  and of the --rule, --account and --subject the manifest records), each amendment
  amends an exported finding;
- every evidence/ file is the canonical JSON of an event a proven finding cites (so
  checked only when the checkpoint verifies);
- consent_records.jsonl (issue 18; checked whenever present): one line per proven
  finding, in order, each exactly the RFC 8785 JSON of `consent_record_line` of it
  (streams.evidence.consent_record): recomputed, never trusted;
- `previous` (format /3): the previous export's checkpoint is a signed note by the
  same key, of the same log, no larger than this one, and the RFC 9162 consistency
  proof leads from it to this bundle's checkpoint (the log only grew in between);
- attestation.intoto.jsonl (required from format /4; checked whenever present): a DSSE
  envelope signed by the same key over PAE, whose in-toto Statement names exactly the
  bundle's files and digests and whose predicate is the manifest's query, checkpoint
  and counts (streams.evidence.attestation);
- reviews.jsonl and exceptions.jsonl (format /2) the same way, leaf by leaf: each a
  well-formed review or exception whose id is the hash of its content; each review of
  an exported finding, the reviews of each finding in ledger order, one unbroken chain
  of prev_review_id from the finding's first review, and folding into a status
  (`streams.evidence.review`); each exception covering an exported finding. (A chain
  cannot show that a finding's latest reviews were left out: see docs/verifying.md.)
All checks run even after a failure, so one run lists everything that is wrong.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from streams.evidence import bundle
from streams.evidence.attestation import check_attestation
from streams.evidence.bundle import BundleError, BundleFiles
from streams.evidence.checkpoint import Checkpoint, CheckpointError, verify_checkpoint
from streams.evidence.consent_record import consent_record_line
from streams.evidence.exception_scope import check_exception, covers
from streams.evidence.merkle import leaf_hash, verify_consistency, verify_inclusion
from streams.evidence.review import StaleReview, TrailError, check_review, fold

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_PROOF_HASHES",
    "MAX_UNSIGNED_MANIFEST_BYTES",
    "BundleCheck",
    "Previous",
    "check_bundle",
    "parse_hashes",
    "verify_bundle",
]

#: A manifest lists about 1.5 kB per finding (its inclusion proof): 256 MiB is some
#: 170,000 findings. One that its signature does not vouch for is parsed only up to
#: 16 MiB, so a forged one cannot make verify build gigabytes of JSON objects.
MAX_MANIFEST_BYTES = 256 << 20
MAX_UNSIGNED_MANIFEST_BYTES = 16 << 20
#: One finding with its evidence events is a few kB; a longer line is not parsed.
MAX_LINE_BYTES = 16 << 20
_MAX_SIGNATURE_BYTES = 1024
#: An RFC 9162 proof of a tree of up to 2^64 leaves has at most 2 x 64 hashes.
MAX_PROOF_HASHES = 128
_FILTERS = (("rule", "rule", "--rule"), ("account", "account_id", "--account"),
            ("subject", "subject_id", "--subject"))
#: The id field of each entry file's records.
_ID_FIELDS = {bundle.FINDINGS: "finding_id", bundle.AMENDMENTS: "amendment_id",
              bundle.REVIEWS: "review_id", bundle.EXCEPTIONS: "exception_id"}
#: Per file, the id fields of other kinds of ledger entry its records never hold
#: (streams/evidence/ledger/records.py FOREIGN_ID_FIELDS, which the ledger enforces).
_FOREIGN_ID_FIELDS = {
    bundle.FINDINGS: ("amendment_id", "review_id", "exception_id", "export_id"),
    bundle.AMENDMENTS: ("review_id", "exception_id", "export_id"),
}
#: What a finding's exception scope is checked against (no evidence, no free text).
_SCOPE_FIELDS = ("account_id", "provider", "rule", "occurred_at")


def verify_bundle(path: Path, public_key: Ed25519PublicKey) -> tuple[list[str], dict[str, int]]:
    """(failures, counts) for the bundle directory or zip at `path`; no failures = OK.

    ConfigError only when `path` is neither a directory nor a file.
    """
    check = check_bundle(path, public_key)
    return check.failures, check.counts


@dataclass(frozen=True, slots=True)
class Previous:
    """A bundle's `previous`, once verified: the previous export's checkpoint, signed by
    the same key, and the consistency proof from it to the bundle's own checkpoint."""

    checkpoint: Checkpoint
    consistency_proof: list[bytes]
    manifest_sha256: str


@dataclass(slots=True)
class BundleCheck:
    """What verifying one bundle found, for `verify --since` (streams.evidence.consistency).

    `checkpoint` and `previous` are set only when they verified (`previous_given`: the
    manifest has a `previous` that is not null); `manifest_sha256` when the manifest's
    signature verified; `leaves` maps (file, id) of every proven entry to
    (leaf_index, leaf hash).
    """

    failures: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    checkpoint: Checkpoint | None = None
    previous: Previous | None = None
    manifest_sha256: str | None = None
    leaves: dict[tuple[str, str], tuple[int, bytes]] = field(default_factory=dict)
    previous_given: bool = False
    note: str | None = None  # the checkpoint's signed note, once it verified (witnesses)


def check_bundle(path: Path, public_key: Ed25519PublicKey) -> BundleCheck:
    """`verify_bundle` with what it verified (see BundleCheck)."""
    try:
        files = bundle.open_bundle(path)
    except BundleError as exc:
        return BundleCheck([str(exc)])
    with files:
        verification = _Verification(files, public_key)
        found = verification.found
        found.failures, found.counts = verification.run()
        if found.checkpoint is None:
            found.note = None
        return found


def parse_hashes(value: Any) -> list[bytes] | None:
    """A list of at most MAX_PROOF_HASHES lower- or upper-case hex SHA-256 hashes as
    bytes; None when `value` is anything else."""
    if not isinstance(value, list) or len(value) > MAX_PROOF_HASHES:
        return None
    hashes = []
    for item in value:
        if not isinstance(item, str) or len(item) != 64:
            return None
        try:
            hashes.append(bytes.fromhex(item))
        except ValueError:
            return None
    return hashes


@dataclass(frozen=True, slots=True)
class _Query:
    """What the export selected, as its manifest records it."""

    from_ms: int
    to_ms: int
    filters: tuple[tuple[str, str, str], ...]  # (record field, value, option)

    def mismatches(self, finding: dict[str, Any], where: str | None = None) -> list[str]:
        if where is None:
            where = f"{bundle.FINDINGS}: {_shown(finding.get('finding_id'))}"
        occurred_at = finding.get("occurred_at")
        problems = []
        if type(occurred_at) is not int or not self.from_ms <= occurred_at < self.to_ms:
            problems.append(f"{where} occurred outside the exported window")
        for key, value, option in self.filters:
            # The ledger stores a missing account as "" and selects on that.
            if (finding.get(key) or "") != value:
                problems.append(f"{where} does not match the export's {option} filter")
        return problems


@dataclass(slots=True)
class _Verification:
    files: BundleFiles
    public_key: Ed25519PublicKey
    failures: list[str] = field(default_factory=list)
    _digests: dict[str, str | None] = field(default_factory=dict)
    _query_failures: list[str] = field(default_factory=list)
    _evidence: dict[str, str] = field(default_factory=dict)  # bundle path -> expected SHA-256
    _names: bundle.EvidenceNames = field(default_factory=bundle.EvidenceNames)
    _finding_ids: set[str] = field(default_factory=set)
    _consent_lines: list[tuple[str, bytes]] = field(default_factory=list)  # (finding id, line)
    _scopes: list[dict[str, Any]] = field(default_factory=list)
    # Each finding never raised of amendments.jsonl: None once one of its WOULD_RAISE
    # matched the query, else what did not match
    _never_raised: dict[str, list[str] | None] = field(default_factory=dict)
    # (finding id, where) of each amendment of no exported finding that is no WOULD_RAISE
    _other_amendments: list[tuple[str, str]] = field(default_factory=list)
    _reviews: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    _unordered: set[str] = field(default_factory=set)  # findings with a bad leaf_index
    _missing: set[str] = field(default_factory=set)  # listed files not in the bundle
    _leaf_lines: dict[int, str] = field(default_factory=dict)  # leaf index -> file and line
    _last_leaf: dict[str, int] = field(default_factory=dict)  # file -> greatest leaf so far
    # What verified (checkpoint, previous, manifest digest, leaves, note); `check_bundle`
    # returns it with the failures and counts.
    found: BundleCheck = field(default_factory=BundleCheck)

    def run(self) -> tuple[list[str], dict[str, int]]:
        self.failures += self.files.problems
        manifest = self._manifest()
        if manifest is None:
            return self.failures, {}
        if manifest.get("format") not in bundle.FORMATS:
            self.failures.append(f"{bundle.MANIFEST}: format is not {bundle.FORMAT}")
        self._check_hashes(manifest.get("files"))
        checkpoint = self.found.checkpoint = self._checkpoint(manifest.get("checkpoint"))
        self.found.previous = self._previous(manifest, checkpoint)
        self._check_attestation(manifest, checkpoint)
        query = self._query(manifest.get("window"), manifest.get("filters"))
        findings = self._check_entries(
            bundle.FINDINGS, manifest.get("findings"), checkpoint,
            lambda record: self._proven_finding(record, query, checkpoint is not None))
        amendments = self._check_entries(
            bundle.AMENDMENTS, manifest.get("amendments"), checkpoint,
            lambda record: self._proven_amendment(record, query))
        self._check_never_raised()
        reviews = self._check_entries(bundle.REVIEWS, manifest.get("reviews"), checkpoint,
                                      self._proven_review)
        exceptions = self._check_entries(bundle.EXCEPTIONS, manifest.get("exceptions"),
                                         checkpoint, self._proven_exception)
        self._check_folds()
        self.failures += self._query_failures
        if checkpoint is not None:
            self._check_evidence()
            self._check_consent_records(manifest)
        counts = {"findings": findings, "amendments": amendments, "reviews": reviews,
                  "exceptions": exceptions, "files": len(self.files.sizes),
                  "checkpoint_size": checkpoint.size if checkpoint else 0}
        return self.failures, counts

    def _read(self, name: str, limit: int) -> bytes | None:
        if name not in self.files.sizes:
            self.failures.append(f"{name}: missing")
            return None
        try:
            return self.files.read(name, limit)
        except BundleError as exc:
            self.failures.append(str(exc))
            return None

    def _digest(self, name: str) -> str | None:
        """The SHA-256 of `name`, hashed as a stream once; None (reported) if unreadable."""
        if name not in self._digests:
            try:
                self._digests[name] = self.files.sha256(name)
            except BundleError as exc:
                self.failures.append(str(exc))
                self._digests[name] = None
        return self._digests[name]

    def _manifest(self) -> dict[str, Any] | None:
        raw = self._read(bundle.MANIFEST, MAX_MANIFEST_BYTES)
        if raw is None:
            return None
        signed = self._check_signature(raw)
        if signed:
            self.found.manifest_sha256 = bundle.sha256_hex(raw)
        if not signed and len(raw) > MAX_UNSIGNED_MANIFEST_BYTES:
            self.failures.append(f"{bundle.MANIFEST}: more than {MAX_UNSIGNED_MANIFEST_BYTES} "
                                 "bytes and not signed by the given key; not read further")
            return None
        try:
            manifest = orjson.loads(raw)
        except orjson.JSONDecodeError:
            manifest = None
        if not isinstance(manifest, dict):
            self.failures.append(f"{bundle.MANIFEST}: not a JSON object")
            return None
        return manifest

    def _check_signature(self, raw: bytes) -> bool:
        signature = self._read(bundle.SIGNATURE, _MAX_SIGNATURE_BYTES)
        if signature is None:
            return False
        try:
            self.public_key.verify(signature, raw)
        except InvalidSignature:
            self.failures.append(f"{bundle.SIGNATURE}: the signature of {bundle.MANIFEST} "
                                 "does not verify with the given public key")
            return False
        return True

    def _check_hashes(self, listed: Any) -> None:
        if not isinstance(listed, dict):
            self.failures.append(f"{bundle.MANIFEST}: no list of file hashes")
            return
        for name, expected in sorted(listed.items()):
            if name not in self.files.sizes:
                self._missing.add(name)
                self.failures.append(f"{name}: missing from the bundle")
            elif (digest := self._digest(name)) is not None and digest != expected:
                self.failures.append(f"{name}: SHA-256 does not match the manifest "
                                     "(file changed)")
        for name in sorted(set(self.files.sizes) - set(listed)
                           - {bundle.MANIFEST, bundle.SIGNATURE, bundle.ATTESTATION}):
            self.failures.append(f"{name}: not listed in the manifest (file added)")

    def _checkpoint(self, note: Any) -> Checkpoint | None:
        if not isinstance(note, str):
            self.failures.append(f"{bundle.MANIFEST}: no checkpoint")
            return None
        try:
            checkpoint = verify_checkpoint(note, self.public_key)
        except CheckpointError as exc:
            self.failures.append(f"checkpoint: {exc}")
            return None
        self.found.note = note
        return checkpoint

    def _previous(self, manifest: dict[str, Any], checkpoint: Checkpoint | None
                  ) -> Previous | None:
        """The verified `previous` (format /3), or None: the first export, an older format,
        or a failure (reported)."""
        if "previous" not in manifest:
            if bundle.format_version(manifest.get("format")) >= 3:
                self.failures.append(f"{bundle.MANIFEST}: no previous (null, or the previous "
                                     "export's checkpoint and consistency proof)")
            return None
        previous, where = manifest["previous"], f"{bundle.MANIFEST}: previous"
        if previous is None:
            return None
        self.found.previous_given = True
        if not (isinstance(previous, dict) and isinstance(previous.get("checkpoint"), str)
                and isinstance(previous.get("manifest_sha256"), str)):
            self.failures.append(f"{where}: malformed (it needs checkpoint, manifest_sha256 "
                                 "and consistency_proof)")
            return None
        proof = parse_hashes(previous.get("consistency_proof"))
        if proof is None:
            self.failures.append(f"{where}: consistency_proof is not a list of at most "
                                 f"{MAX_PROOF_HASHES} SHA-256 hashes (hex)")
            return None
        try:
            old = verify_checkpoint(previous["checkpoint"], self.public_key)
        except CheckpointError as exc:
            self.failures.append(f"{where}: checkpoint: {exc}")
            return None
        if checkpoint is None:
            return None  # reported: nothing to prove the previous one consistent with
        if old.origin != checkpoint.origin:
            self.failures.append(f"{where}: its checkpoint is of another log ({old.origin!r}, "
                                 f"not {checkpoint.origin!r})")
        elif old.size > checkpoint.size:
            self.failures.append(f"{where}: its checkpoint (size {old.size}) is larger than "
                                 f"this bundle's (size {checkpoint.size})")
        elif not verify_consistency(old.size, checkpoint.size, old.root, checkpoint.root,
                                    proof):
            self.failures.append(
                f"{where}: the consistency proof from the previous export's checkpoint (size "
                f"{old.size}) to this bundle's (size {checkpoint.size}) does not verify: the "
                "log was rewritten in between, or the proof is damaged")
        else:
            return Previous(old, proof, previous["manifest_sha256"])
        return None

    def _check_attestation(self, manifest: dict[str, Any], checkpoint: Checkpoint | None
                           ) -> None:
        """attestation.intoto.jsonl: required from format /4. Its subjects are compared
        with the files the signed manifest lists (a changed file is reported once, by
        _check_hashes), its predicate with the manifest and the verified checkpoint."""
        if bundle.ATTESTATION not in self.files.sizes:
            if bundle.format_version(manifest.get("format")) >= 4:
                self.failures.append(f"{bundle.ATTESTATION}: missing (a bundle of format "
                                     f"{manifest.get('format')} carries its in-toto "
                                     "attestation)")
            return
        signed = self.found.manifest_sha256 is not None
        raw = self._read(bundle.ATTESTATION,
                         MAX_MANIFEST_BYTES if signed else MAX_UNSIGNED_MANIFEST_BYTES)
        if raw is None:
            return
        listed, digests = manifest.get("files"), None
        if signed and isinstance(listed, dict) and (
                signature := self._digest(bundle.SIGNATURE)) is not None:
            digests = listed | {bundle.MANIFEST: self.found.manifest_sha256,
                                bundle.SIGNATURE: signature}
        self.failures += check_attestation(raw, self.public_key, manifest,
                                           checkpoint if signed else None, digests)

    def _query(self, window: Any, filters: Any) -> _Query | None:
        if not isinstance(window, dict):
            self.failures.append(f"{bundle.MANIFEST}: no time window")
            return None
        start, end = window.get("from_ms"), window.get("to_ms")
        if type(start) is not int or type(end) is not int:
            self.failures.append(f"{bundle.MANIFEST}: malformed time window")
            return None
        if not isinstance(filters, dict) or not all(
                isinstance(filters.get(name), str | None) for name, _, _ in _FILTERS):
            self.failures.append(f"{bundle.MANIFEST}: no filters, or malformed ones")
            return None
        given = tuple((key, filters[name], option) for name, key, option in _FILTERS
                      if filters.get(name) is not None)
        return _Query(start, end, given)

    def _proven_finding(self, record: dict[str, Any], query: _Query | None,
                        collect_evidence: bool) -> None:
        self._finding_ids.add(str(record.get("finding_id")))
        self._scopes.append({name: record.get(name) for name in _SCOPE_FIELDS})
        if query is not None:
            self._query_failures += query.mismatches(record)
        if not collect_evidence:
            # Without a checkpoint nothing proves the events; and a findings file no key
            # vouches for could cite millions of them.
            return
        self._consent_lines.append((_shown(record.get("finding_id")),
                                    rfc8785.dumps(consent_record_line(record))))
        for event in bundle.evidence_events(record):
            name, data = self._names.name(event)
            self._evidence.setdefault(name, hashlib.sha256(data).hexdigest())

    def _proven_amendment(self, record: dict[str, Any], query: _Query | None) -> None:
        if record.get("finding_id") in self._finding_ids:
            return
        where = f"{bundle.AMENDMENTS}: {_shown(record.get('amendment_id'))}"
        finding = str(record.get("finding_id"))
        if record.get("kind") != "WOULD_RAISE":
            # Another amendment of a finding never raised, before or after its WOULD_RAISE
            # (a retraction and a reinstatement may both reach the ledger before the
            # finding): decided once the whole file is read (`_check_never_raised`).
            self._other_amendments.append((finding, where))
            return
        # A finding never raised: the query selects it by any of its WOULD_RAISE
        # amendments (`_check_never_raised`), and an exception may cover it as it would
        # the finding.
        scope = bundle.never_raised_scope(record)
        self._scopes.append({name: scope[name] for name in _SCOPE_FIELDS})
        misses = self._never_raised.setdefault(finding, [])
        if query is not None and misses is not None:
            found = query.mismatches(scope, f"{where} (would raise {_shown(finding)})")
            self._never_raised[finding] = misses + found if found else None

    def _check_never_raised(self) -> None:
        """Every finding never raised is selected by the query through one of its
        WOULD_RAISE amendments at least (else all of theirs are reported); every other
        amendment amends an exported finding or one of these."""
        for misses in self._never_raised.values():
            if misses:
                self._query_failures += misses
        for finding, where in self._other_amendments:
            if finding not in self._never_raised:
                self._query_failures.append(f"{where} amends no exported finding")

    def _proven_review(self, record: dict[str, Any], claim: dict[str, Any]) -> None:
        where = f"{bundle.REVIEWS}: {_shown(record.get('review_id'))}"
        try:
            check_review(record)
        except TrailError as exc:
            self._query_failures.append(f"{where} is not a review the ledger stores: {exc}")
            return
        if record["finding_id"] not in self._finding_ids:
            self._query_failures.append(f"{where} reviews no exported finding")
            return
        index = claim.get("leaf_index")
        if type(index) is not int or index < 0:  # not bool, nor null, nor text
            self._query_failures.append(f"{bundle.MANIFEST}: the entry of {where} has no "
                                        "leaf_index (a non-negative integer)")
            self._unordered.add(record["finding_id"])
            return
        self._reviews.setdefault(record["finding_id"], []).append((index, record))

    def _proven_exception(self, record: dict[str, Any]) -> None:
        where = f"{bundle.EXCEPTIONS}: {_shown(record.get('exception_id'))}"
        try:
            check_exception(record)
        except TrailError as exc:
            self._query_failures.append(f"{where} is not an exception the ledger stores: {exc}")
            return
        if not any(covers(record, scope) for scope in self._scopes):
            self._query_failures.append(f"{where} covers no exported finding")

    def _check_folds(self) -> None:
        """The reviews of each finding, in ledger order, are one unbroken chain from its
        first review and fold into a status. (A finding one of whose reviews has no
        usable leaf_index is reported once, for that, and not folded.)"""
        for finding_id, trail in sorted(self._reviews.items()):
            if finding_id in self._unordered:
                continue
            indexes = [index for index, _ in trail]
            if indexes != sorted(indexes):
                self._query_failures.append(f"{bundle.REVIEWS}: the reviews of {finding_id} "
                                            "are not in ledger order")
                continue
            try:
                fold(record for _, record in trail)
            except StaleReview:
                self._query_failures.append(
                    f"{bundle.REVIEWS}: the reviews of {finding_id} are not one unbroken "
                    "chain of prev_review_id from its first review: a review of it is "
                    "missing from the bundle, or one is there twice")
            except TrailError as exc:
                self._query_failures.append(f"{bundle.REVIEWS}: the reviews of {finding_id} "
                                            f"are not a trail the ledger accepts: {exc}")

    def _check_entries(self, name: str, listed: Any, checkpoint: Checkpoint | None,
                       on_proven: Callable[..., None]) -> int:
        """How many records of `name` are proven (each is passed to `on_proven`)."""
        if name not in self.files.sizes:
            if listed and name not in self._missing:  # else reported with the hashes
                self.failures.append(f"{name}: missing from the bundle")
            return 0
        if not isinstance(listed, list):
            self.failures.append(f"{bundle.MANIFEST}: no list of the entries of {name}")
            return 0
        proven = lines = 0
        try:
            for lines, (line, terminated) in enumerate(self.files.lines(name, MAX_LINE_BYTES),
                                                       1):
                if not terminated:
                    self.failures.append(f"{name}: does not end with a newline")
                if lines > len(listed):
                    continue  # counted, not parsed: the manifest does not list it
                claim = listed[lines - 1]
                record = self._entry(name, lines, line, claim, checkpoint)
                if record is not None:
                    proven += 1
                    if name == bundle.REVIEWS:
                        on_proven(record, claim)
                    else:
                        on_proven(record)
        except BundleError as exc:
            self.failures.append(str(exc))
            return proven
        if lines != len(listed):
            self.failures.append(f"{name}: holds {lines} entries where the manifest lists "
                                 f"{len(listed)} (entry removed or added)")
        return proven

    def _entry(self, name: str, number: int, line: bytes | None, claim: Any,
               checkpoint: Checkpoint | None) -> dict[str, Any] | None:
        where = f"{name} line {number}"
        if line is None:
            self.failures.append(f"{where}: longer than {MAX_LINE_BYTES} bytes; not read")
            return None
        try:
            record = orjson.loads(line)
            canonical = isinstance(record, dict) and rfc8785.dumps(record) == line
        except (ValueError, rfc8785.CanonicalizationError):
            record, canonical = None, False
        if not isinstance(record, dict) or not canonical:
            self.failures.append(f"{where}: not a canonical JSON (RFC 8785) record")
            return None
        if not isinstance(claim, dict):
            self.failures.append(f"{bundle.MANIFEST}: entry {number} of {name} is malformed")
            return None
        entry_id = record.get(_ID_FIELDS[name])
        if not isinstance(entry_id, str) or entry_id != claim.get("id"):
            self.failures.append(f"{where}: holds {_shown(entry_id)} where the manifest "
                                 f"lists {_shown(claim.get('id'))} (entries removed or "
                                 "reordered)")
            return None
        if (not_its_kind := _not_its_kind(name, record)) is not None:
            self.failures.append(f"{where}: {not_its_kind}")
            return None
        if checkpoint is None:
            return record
        if _proven(line, claim, checkpoint):
            if (misplaced := self._misplaced(name, number, claim["leaf_index"])) is not None:
                self.failures.append(f"{where}: {misplaced}")
                return None
            self.found.leaves[(name, str(entry_id))] = (claim["leaf_index"], leaf_hash(line))
            return record
        self.failures.append(f"{where}: {entry_id} is not proven in the ledger: its inclusion "
                             f"proof does not verify against the checkpoint (size "
                             f"{checkpoint.size})")
        return None

    def _misplaced(self, name: str, number: int, index: int) -> str | None:
        """Why leaf `index`, proven for line `number` of `name`, is not where the export
        puts it: each file holds its entries in ledger order, and a leaf is one entry of
        one file (else a re-signed bundle could count one leaf twice)."""
        listed = self._leaf_lines.setdefault(index, f"{name} line {number}")
        if listed != f"{name} line {number}":
            return f"is ledger leaf {index}, which {listed} is too (an entry listed twice)"
        last = self._last_leaf.get(name, -1)
        self._last_leaf[name] = max(last, index)
        if index <= last:
            return (f"is ledger leaf {index}, before leaf {last} on a line above it (the "
                    "entries are not in ledger order)")
        return None

    def _check_evidence(self) -> None:
        for name, expected in sorted(self._evidence.items()):
            if name not in self.files.sizes:
                self.failures.append(f"{name}: missing (a finding cites it)")
            elif (digest := self._digest(name)) is not None and digest != expected:
                self.failures.append(f"{name}: differs from the evidence event in "
                                     f"{bundle.FINDINGS}")
        if bundle.FINDINGS not in self.files.sizes:
            return  # reported; without the findings every evidence file would be "uncited"
        prefix = bundle.EVIDENCE_DIR + "/"
        for name in sorted(n for n in self.files.sizes
                           if n.startswith(prefix) and n not in self._evidence):
            self.failures.append(f"{name}: no exported finding cites it")


    def _check_consent_records(self, manifest: dict[str, Any]) -> None:
        """consent_records.jsonl, required from format /4: line by line, the consent record
        of each proven finding, in order, as `consent_record_line` recomputes it."""
        name = bundle.CONSENT_RECORDS
        if name not in self.files.sizes:
            if bundle.format_version(manifest.get("format")) >= 4:
                self.failures.append(f"{name}: missing (a bundle of format "
                                     f"{manifest.get('format')} carries the consent record "
                                     "in force of each finding)")
            return
        expected, lines, differ = self._consent_lines, 0, []
        try:
            for lines, (line, terminated) in enumerate(self.files.lines(name, MAX_LINE_BYTES),
                                                       1):
                if not terminated:
                    self.failures.append(f"{name}: does not end with a newline")
                if lines <= len(expected) and line != expected[lines - 1][1]:
                    differ.append(lines)
        except BundleError as exc:
            self.failures.append(str(exc))
            return
        if differ:  # one line for all (a removed line shifts every line after it)
            more = f" (and {len(differ) - 1} more lines)" if len(differ) > 1 else ""
            self.failures.append(f"{name} line {differ[0]}: differs from the consent record "
                                 f"of finding {expected[differ[0] - 1][0]} (recomputed from "
                                 f"{bundle.FINDINGS}){more}")
        if lines != len(expected):
            self.failures.append(f"{name}: holds {lines} lines where {bundle.FINDINGS} proves "
                                 f"{len(expected)} findings (line removed or added)")


def _not_its_kind(name: str, record: dict[str, Any]) -> str | None:
    """Why `record` is not an entry of the kind `name` holds, or None. A leaf carries no
    kind, but each kind of ledger entry has its own id field, and the ledger stores no
    finding holding another kind's id field, and no amendment holding that of a review,
    an exception or an export (reviews and exceptions are checked whole when proven)."""
    foreign = _FOREIGN_ID_FIELDS.get(name, ())
    held = [field_name for field_name in foreign if field_name in record]
    if held:
        return (f"is not an entry of {name}: it holds {held[0]}, the id of another kind "
                "of ledger entry")
    return None


def _shown(entry_id: Any) -> str:
    """An id for a failure line: as is when it is a SHA-256 hex, else a stand-in (a
    record verify refuses may hold anything, newlines included)."""
    if isinstance(entry_id, str) and len(entry_id) == 64 and all(
            c in "0123456789abcdef" for c in entry_id):
        return entry_id
    return "(an entry without a valid id)"


def _proven(line: bytes, claim: dict[str, Any], checkpoint: Checkpoint) -> bool:
    index, hashes = claim.get("leaf_index"), parse_hashes(claim.get("inclusion_proof"))
    return type(index) is int and hashes is not None and verify_inclusion(
        leaf_hash(line), index, checkpoint.size, hashes, checkpoint.root)
