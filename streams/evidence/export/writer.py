"""Write an evidence bundle: select findings, prove them, sign, zip, record the export.

Order of work, chosen so that a bundle never claims more than the ledger signed, and
never trusts what someone with write access to the database could have edited:
1. the ledger recomputes its tree from every leaf's bytes (RFC 9162 leaf hashes of the
   records' RFC 8785 JSON), refusing a leaf whose stored hash or columns disagree with
   its bytes and a tree that is not consistent with the last checkpoint it signed; only
   then does it sign a checkpoint of that tree (size N, root R);
2. the findings in the window (and filters) with a leaf index below N are selected,
   with the ledger's amendments and reviews of them, and the exceptions whose scope
   covers one of them (below N too): the columns narrow the scan, the leaf bytes
   decide (they were all checked against the columns in step 1);
3. every selected leaf gets its inclusion proof against (N, R), from the recomputed hashes;
4. the files and OUT.zip are written into a temporary sibling, the manifest is
   signed, then they are renamed to OUT and OUT.zip; the manifest carries the previous
   export's checkpoint and the consistency proof from it to (N, R) (export/previous.py);
   the in-toto attestation (attestation.intoto.jsonl) states the same over every file;
   the export (who, when, why, what, the manifest's SHA-256) is appended to the ledger
   as a leaf of kind `export` just before the rename, so a bundle that exists has
   always been recorded (in a later tree than the one it proves).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams import __version__
from streams.catalogue import load_catalogue
from streams.errors import ConfigError
from streams.evidence import bundle
from streams.evidence.attestation import attest
from streams.evidence.checkpoint import verifier_key
from streams.evidence.consent_record import consent_record_line
from streams.evidence.exception_scope import covers
from streams.evidence.export.previous import previous_export
from streams.evidence.export.query import ExportQuery
from streams.evidence.export.report import ExportFacts, key_fingerprint, render_report
from streams.evidence.export.summary import (
    amendments_by_finding,
    render_summary,
    reviews_by_finding,
)
from streams.evidence.export.times import describe_ms
from streams.evidence.keys import KEY_NAME
from streams.evidence.ledger import AuditedTree, LedgerTampered
from streams.evidence.merkle import inclusion_proofs, leaf_hash

if TYPE_CHECKING:
    from streams.engine import EngineParams
    from streams.evidence.export.witnessed import WitnessPolicy
    from streams.evidence.ledger import Ledger, LedgerEntry

__all__ = ["ExportQuery", "ExportResult", "Progress", "export_bundle"]

#: Called as (step, done, total) while findings are written; the CLI draws a bar.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class ExportResult:
    directory: Path
    zip_path: Path
    manifest_sha256: str
    findings: int
    amendments: int
    checkpoint_size: int
    reviews: int = 0
    exceptions: int = 0


@dataclass(slots=True)
class _Selection:
    findings: list[LedgerEntry] = field(default_factory=list)
    amendments: list[LedgerEntry] = field(default_factory=list)
    reviews: list[LedgerEntry] = field(default_factory=list)
    exceptions: list[LedgerEntry] = field(default_factory=list)

    def proven(self) -> list[LedgerEntry]:
        """Every entry the manifest proves."""
        return self.findings + self.amendments + self.reviews + self.exceptions


def export_bundle(ledger: Ledger, out: Path, query: ExportQuery, key: Ed25519PrivateKey, *,
                  actor: str, params: EngineParams | None = None,
                  progress: Progress | None = None, now_ms: int | None = None,
                  witnesses: WitnessPolicy | None = None,
                  tsa_url: str | None = None) -> ExportResult:
    """Write the bundle OUT (directory) and OUT.zip, record the export; see the module doc.

    With `witnesses`, step 1 signs nothing: the bundle proves the newest stored checkpoint
    the witnesses cosigned (export/witnessed.py), and carries that cosigned note."""
    if not query.purpose.strip():
        raise ConfigError("--purpose must say why the data is exported")
    if query.from_ms >= query.to_ms:
        raise ConfigError("--from must be earlier than --to")
    problem = bundle.folder_problem(out.name)
    if problem is not None:  # the zip's folder: its own verify would refuse every entry
        raise ConfigError(f"the bundle's name cannot be used: {problem}")
    zip_path = out.with_name(out.name + ".zip")
    for path in (out, zip_path):
        if path.exists():
            raise ConfigError(f"{path} exists; refusing to overwrite an evidence bundle")
    at_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms

    try:
        if witnesses is None:
            tree = ledger.audited_checkpoint(key, KEY_NAME)
        else:  # issue 18: a checkpoint N witnesses cosigned
            from streams.evidence.export.witnessed import cosigned_tree

            tree = cosigned_tree(ledger, key.public_key(), witnesses)
        selection = _select(ledger, query, tree)
        previous = previous_export(ledger, tree, key.public_key())
    except LedgerTampered as exc:
        raise LedgerTampered(f"export refused: {exc}") from None
    note, leaf_hashes = tree.note, tree.leaf_hashes
    entries = selection.proven()
    proofs = dict(zip((e.index for e in entries),
                      inclusion_proofs([e.index for e in entries], leaf_hashes), strict=True))

    facts = ExportFacts(actor, at_ms, key_fingerprint(key.public_key()))
    files = _content_files(selection, params, query, note, facts, progress)
    files.update(_timestamp(ledger, tree, tsa_url))  # issue 18: trusted time
    manifest = _manifest(query, params, note, key, files, selection, proofs, leaf_hashes, at_ms)
    manifest["previous"] = previous  # issue 18: see export/previous.py
    manifest_bytes = rfc8785.dumps(manifest)
    files[bundle.MANIFEST] = manifest_bytes
    files[bundle.SIGNATURE] = key.sign(manifest_bytes)
    manifest_sha256 = bundle.sha256_hex(manifest_bytes)
    # issue 18: the same, as an in-toto attestation over every file (attestation.py)
    files[bundle.ATTESTATION] = attest(key, manifest["files"] | {
        bundle.MANIFEST: manifest_sha256,
        bundle.SIGNATURE: bundle.sha256_hex(files[bundle.SIGNATURE])}, manifest)

    def record() -> None:
        ledger.record_export(actor, query.purpose, query.to_dict() | {
            "findings": len(selection.findings), "amendments": len(selection.amendments),
            "reviews": len(selection.reviews), "exceptions": len(selection.exceptions),
            "checkpoint_size": tree.size}, manifest_sha256, at_ms)

    _write_atomically(out, zip_path, files, before_publish=record)
    return ExportResult(out, zip_path, manifest_sha256, len(selection.findings),
                        len(selection.amendments), tree.size, len(selection.reviews),
                        len(selection.exceptions))


def _timestamp(ledger: Ledger, tree: AuditedTree, tsa_url: str | None) -> dict[str, bytes]:
    """checkpoint.tsr: the time-stamp token of the bundle's checkpoint, asked for now
    when `tsa_url` is given (and stored in the ledger first), else the one the ledger
    holds (`ledger checkpoint --tsa-url`), if any."""
    from streams.evidence.timestamp import TOKEN_FILE, request_timestamp

    if tsa_url is not None:
        ledger.add_timestamp(tree.size, tree.root, request_timestamp(tsa_url, tree.note))
    token = ledger.timestamp_token(tree.size, tree.root)
    return {} if token is None else {TOKEN_FILE: token}


def _select(ledger: Ledger, query: ExportQuery, tree: AuditedTree) -> _Selection:
    """The entries to export. `entries` narrows by the columns (checked against every
    leaf by the audit); the leaf's own values decide, and each selected leaf must still
    be the one the audited tree hashed."""
    selection = _Selection()
    selection.findings = [
        entry for entry in ledger.entries(kind="finding", from_ms=query.from_ms,
                                          to_ms=query.to_ms, rule=query.rule,
                                          account=query.account, subject=query.subject)
        if entry.index < tree.size and _matches(entry.record, query) and _audited(entry, tree)]
    wanted = {entry.entry_id for entry in selection.findings}
    # A late event can show that a decision taken without a finding should have raised
    # one (WOULD_RAISE): that finding is in no ledger, its amendments are the evidence.
    # The query selects it as it would the finding (the trigger's time, account...) by
    # any of its WOULD_RAISE amendments; then every amendment of it goes, as for a
    # finding (a later one may retract it again).
    never_raised_ids = {
        str(entry.record.get("finding_id"))
        for entry in ledger.entries(kind="amendment", rule=query.rule, subject=query.subject)
        if entry.index < tree.size and entry.record.get("kind") == "WOULD_RAISE"
        and entry.record.get("finding_id") not in wanted
        and _matches(bundle.never_raised_scope(entry.record), query)
        and ledger.finding(str(entry.record.get("finding_id"))) is None
        and _audited(entry, tree)}
    never_raised = [
        entry for finding in sorted(never_raised_ids)
        for entry in ledger.entries(kind="amendment", finding=finding)
        if entry.index < tree.size and _audited(entry, tree)]
    never_raised.sort(key=lambda entry: entry.index)
    selection.amendments = never_raised
    # Exceptions are read of the findings, and of the findings never raised as of findings
    # (summary.csv says whether one covers them).
    scopes = [entry.record for entry in selection.findings]
    scopes += [bundle.never_raised_scope(entry.record) for entry in never_raised
               if entry.record.get("kind") == "WOULD_RAISE"]
    by_account: dict[str, list[Mapping[str, Any]]] = {}
    for scope in scopes:
        by_account.setdefault(scope.get("account_id") or "", []).append(scope)
    selection.exceptions = [
        entry for entry in ledger.exceptions()
        if entry.index < tree.size
        and any(covers(entry.record, scope)
                for scope in by_account.get(entry.record.get("account_id", ""), ()))
        and _audited(entry, tree)]
    if wanted:
        selection.amendments = sorted(
            [*never_raised, *(entry for entry in ledger.entries(kind="amendment")
                              if entry.index < tree.size
                              and entry.record.get("finding_id") in wanted
                              and _audited(entry, tree))], key=lambda entry: entry.index)
        selection.reviews = sorted(
            (entry for trail in ledger.reviews_of(wanted).values() for entry in trail
             if entry.index < tree.size and entry.record.get("finding_id") in wanted
             and _audited(entry, tree)), key=lambda entry: entry.index)
    return selection


def _matches(record: Mapping[str, Any], query: ExportQuery) -> bool:
    """The export's selection, on the values the leaf itself holds: a finding's record,
    or the scope of a finding never raised (`bundle.never_raised_scope`)."""
    return (query.from_ms <= record["occurred_at"] < query.to_ms
            and query.rule in (None, record["rule"])
            and query.account in (None, record["account_id"])
            and query.subject in (None, record["subject_id"]))


def _audited(entry: LedgerEntry, tree: AuditedTree) -> bool:
    if leaf_hash(entry.leaf) != tree.leaf_hashes[entry.index]:
        raise LedgerTampered(f"ledger leaf {entry.index} changed after the ledger was "
                             "checked (was the database edited?)")
    return True


def _content_files(selection: _Selection, params: EngineParams | None, query: ExportQuery,
                   note: str, facts: ExportFacts,
                   progress: Progress | None) -> dict[str, bytes]:
    files: dict[str, bytes] = {
        bundle.FINDINGS: b"".join(e.leaf + b"\n" for e in selection.findings),
        bundle.AMENDMENTS: b"".join(e.leaf + b"\n" for e in selection.amendments),
    }
    total = len(selection.findings)
    names = bundle.EvidenceNames()
    for done, entry in enumerate(selection.findings, 1):
        for event in bundle.evidence_events(entry.record):
            name, data = names.name(event)
            files.setdefault(name, data)
        if progress is not None:
            progress("evidence", done, total)
    files[bundle.SUMMARY] = render_summary(selection.findings,
                                           amendments_by_finding(selection.amendments),
                                           reviews=reviews_by_finding(selection.reviews),
                                           exceptions=selection.exceptions,
                                           at_ms=facts.created_ms)
    # issue 18: the consent record in force per finding, derived from its leaf (verify redoes it)
    files[bundle.CONSENT_RECORDS] = b"".join(
        rfc8785.dumps(consent_record_line(e.record)) + b"\n" for e in selection.findings)
    files[bundle.REVIEWS] = b"".join(e.leaf + b"\n" for e in selection.reviews)
    files[bundle.EXCEPTIONS] = b"".join(e.leaf + b"\n" for e in selection.exceptions)
    files[bundle.REPORT] = render_report(selection.findings, selection.amendments, query=query,
                                         params=params, checkpoint_note=note, facts=facts,
                                         progress=progress, reviews=selection.reviews,
                                         exceptions=selection.exceptions)
    return files


def _manifest(query: ExportQuery, params: EngineParams | None, note: str,
              key: Ed25519PrivateKey, files: Mapping[str, bytes], selection: _Selection,
              proofs: Mapping[int, list[bytes]], leaf_hashes: list[bytes],
              at_ms: int) -> dict[str, Any]:
    def proven(entry: LedgerEntry) -> dict[str, Any]:
        return {"id": entry.entry_id, "leaf_index": entry.index,
                "leaf_hash": leaf_hashes[entry.index].hex(),
                "inclusion_proof": [h.hex() for h in proofs[entry.index]]}

    return {
        "format": bundle.FORMAT,
        "tool": {"name": "consentwatch", "version": __version__},
        "rules_version": load_catalogue().version,
        "parameters": None if params is None else {
            "allowed_lateness_ms": params.allowed_lateness_ms,
            "notice_grace_ms": params.notice_grace_ms,
            "notice_validity_ms": params.notice_validity_ms},
        "created_at": describe_ms(at_ms),
        "purpose": query.purpose,
        "window": {"from": describe_ms(query.from_ms), "to": describe_ms(query.to_ms),
                   "from_ms": query.from_ms, "to_ms": query.to_ms,
                   "selects": "from_ms <= occurred_at < to_ms"},
        "filters": {"rule": query.rule, "account": query.account, "subject": query.subject},
        "files": {name: bundle.sha256_hex(data) for name, data in sorted(files.items())},
        "checkpoint": note,
        "key_name": KEY_NAME,
        "verifier_key": verifier_key(KEY_NAME, key.public_key()),
        "findings": [proven(e) for e in selection.findings],
        "amendments": [proven(e) for e in selection.amendments],
        "reviews": [proven(e) for e in selection.reviews],
        "exceptions": [proven(e) for e in selection.exceptions],
    }


def _write_atomically(out: Path, zip_path: Path, files: Mapping[str, bytes], *,
                      before_publish: Callable[[], None]) -> None:
    """Write into a temporary sibling, then rename: OUT is either complete or absent.

    `before_publish` (recording the export in the ledger) runs once everything is
    written and before the bundle appears: a bundle that exists is always recorded.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise ConfigError(f"cannot write the bundle next to {out}: {exc.strerror}") from exc
    try:
        for name, data in files.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        staging_zip = staging.with_name(staging.name + ".zip")
        bundle.write_zip(staging_zip, out.name, files)
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700
        before_publish()
        staging.rename(out)
        staging_zip.rename(zip_path)
    except OSError as exc:
        raise ConfigError(f"cannot write the bundle {out}: {exc.strerror}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        staging.with_name(staging.name + ".zip").unlink(missing_ok=True)
