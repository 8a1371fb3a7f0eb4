"""Sealed findings and amendments: the only ones that leave the process.

A finding straight from the engine cites its evidence as the events themselves, with
personal data in them. `Pseudonymiser.finding` and `.amendment` (`pseudonymise.py`)
seal it where it leaves (`replay`, the worker): a sealed finding holds the finding and
its evidence in pseudonymised JSON form, and serde's writers take nothing else, so
mypy rejects a raw finding given to a writer. The one exception is the worker's
`wire.encode_finding`, which takes the finding with the `Pseudonymiser` itself and
pseudonymises the evidence as it writes it (`serde/finding_writer.py`: the same bytes).
The raw evidence of `finding` is never written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.model.findings import Amendment, Finding

__all__ = ["SealedAmendment", "SealedFinding"]


@dataclass(frozen=True, slots=True)
class SealedFinding:
    finding: Finding
    evidence: tuple[dict[str, Any], ...]  # in `finding.evidence_event_ids` order


@dataclass(frozen=True, slots=True)
class SealedAmendment:
    amendment: Amendment
    evidence: tuple[dict[str, Any], ...]
    late_event: dict[str, Any] | None
