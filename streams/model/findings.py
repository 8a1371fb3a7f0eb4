"""What the pipeline emits: findings, amendments to them, and dead letters."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, fields
from typing import Any

from streams.model.events import Event

__all__ = [
    "Amendment",
    "DeadLetter",
    "EvidenceItem",
    "Finding",
    "amendment_id",
    "evidence_record",
    "file_dead_letter",
    "finding_id",
]

# One evidence event: the event itself in a finding straight from the engine; its
# pseudonymised JSON form (`{"type": ..., ...fields}`) once it has been through
# `streams.privacy.pseudonymise`, or when read back from a topic or a file.
EvidenceItem = Event | dict[str, Any]


# An empty SHA-256 to copy: `hashlib.sha256()` looks the digest up in OpenSSL by name on
# every call, a third of the cost of hashing an id this short.
_SHA256 = hashlib.sha256()


def finding_id(rule: str, trigger_event_id: str) -> str:
    """The spec's idempotent id: SHA-256 of `rule|trigger_event_id`, lower-case hex."""
    digest = _SHA256.copy()
    digest.update(f"{rule}|{trigger_event_id}".encode())
    return digest.hexdigest()


def amendment_id(finding: str, late_event_id: str, kind: str) -> str:
    """Deterministic too, so a replayed late event cannot mint a second amendment."""
    digest = _SHA256.copy()
    digest.update(f"{finding}|{late_event_id}|{kind}".encode())
    return digest.hexdigest()


def evidence_record(item: EvidenceItem) -> dict[str, Any]:
    """The JSON form of an evidence item that is already pseudonymised.

    A raw event is refused: personal data leaves the process only through a
    `Pseudonymiser` (`streams.privacy.pseudonymise`), never by accident.
    """
    if type(item) is dict:
        return item
    raise TypeError(
        f"evidence event {type(item).__name__} is not pseudonymised: "
        "pass the finding through streams.privacy.pseudonymise first"
    )


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule fired. `evidence` holds the events of `evidence_event_ids`, in that order."""

    finding_id: str
    rule: str
    severity: str
    subject_id: str
    account_id: str
    meeting_id: str
    provider: str
    trigger_event_id: str
    evidence_event_ids: tuple[str, ...]
    occurred_at: int
    detected_at: int
    explanation: str
    evidence: tuple[EvidenceItem, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; the evidence must be pseudonymised already (see `evidence_record`)."""
        return {name: getattr(self, name) for name in _FINDING_FIELDS} | {
            "evidence_event_ids": list(self.evidence_event_ids),
            "evidence": [evidence_record(item) for item in self.evidence]}


@dataclass(frozen=True, slots=True)
class Amendment:
    """A late event changed the outcome of a decision already taken.

    kind: `RETRACTED` (the finding would not have been raised), `EVIDENCE_CHANGED`
    (it still holds, on other evidence), `WOULD_RAISE` (the sorted stream would
    have raised `finding_id`, which was not raised). `evidence` holds the events
    of `evidence_event_ids` in that order, `late_event` the late event itself.
    """

    amendment_id: str
    kind: str
    finding_id: str
    rule: str
    subject_id: str
    trigger_event_id: str
    late_event_id: str
    evidence_event_ids: tuple[str, ...]
    occurred_at: int
    detected_at: int
    explanation: str
    evidence: tuple[EvidenceItem, ...] = ()
    late_event: EvidenceItem | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; the evidence must be pseudonymised already (see `evidence_record`)."""
        late = self.late_event
        return {name: getattr(self, name) for name in _AMENDMENT_FIELDS} | {
            "evidence_event_ids": list(self.evidence_event_ids),
            "evidence": [evidence_record(item) for item in self.evidence],
            "late_event": None if late is None else evidence_record(late)}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be used, kept with its original bytes.

    `source` is a topic or a file; `position` the record number in a file (1-based
    line for JSON Lines) or the offset in a topic partition.
    """

    source: str
    partition: int | None
    position: int | None
    reason_code: str
    reason: str
    payload: bytes
    dead_lettered_at: int

    def to_dict(self) -> dict[str, Any]:
        import base64

        record = {name: getattr(self, name) for name in _DEAD_LETTER_FIELDS}
        record["payload"] = base64.b64encode(self.payload).decode("ascii")
        return record


def file_dead_letter(source: str, position: int, code: str, reason: str, payload: bytes
                     ) -> DeadLetter:
    """The DeadLetter of a file's record (a file has no partitions), dead-lettered now."""
    return DeadLetter(source=source, partition=None, position=position, reason_code=code,
                      reason=reason, payload=bytes(payload),
                      dead_lettered_at=time.time_ns() // 1_000_000)


_FINDING_FIELDS = tuple(f.name for f in fields(Finding))
_AMENDMENT_FIELDS = tuple(f.name for f in fields(Amendment))
_DEAD_LETTER_FIELDS = tuple(f.name for f in fields(DeadLetter))
