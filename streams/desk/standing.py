"""Where each finding stands: the fold of its reviews, and the exceptions in force.

The desk keeps no status table. Reviewed findings are few (a team reviews hundreds a
day, the pipeline stores millions), so the desk folds every review of the ledger in
memory, once, and then only the reviews stored since (`StatusIndex.refresh`: one index
probe per request, `kind = ? AND idx > ?`). The exceptions are fewer still and are
kept whole. Nothing here is evidence and nothing is written: it is derived from the
ledger's leaves on every request, so it is never stale and needs no rebuild (each desk
process, each replica, derives its own), and a desk that starts over a ledger with years
of reviews pays one read of them.

A finding's status, one of `STATUSES` (the findings table's column and filter):

    resolved      its reviews resolved it (whatever exceptions say: a person decided)
    excepted      not resolved, and inside an exception in force now
    open, acknowledged, assigned
                  otherwise, the state of its reviews (open: no review yet, or reopened)

"Open" in the desk's wider sense (the accounts page, the gauges, the alert: the
findings that still need someone) is open, acknowledged or assigned: not resolved and
not excepted (`queries.open_findings_where`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streams.desk.db import Database
from streams.evidence.exception_scope import covers, in_force
from streams.evidence.ledger import LedgerEntry, LedgerTampered
from streams.evidence.ledger.records import StoredRow, checked_entry
from streams.evidence.review import OPEN, ReviewStatus, TrailError, step

__all__ = ["ACTIVE", "ENTRY_COLUMNS", "STATUSES", "Standing", "StatusIndex", "checked_row"]

STATUSES = ("open", "acknowledged", "assigned", "resolved", "excepted")
#: The statuses of a finding that still needs someone ("open" in the wider sense).
ACTIVE = ("open", "acknowledged", "assigned")

#: The columns `checked_row` takes, in its order.
ENTRY_COLUMNS = ("idx, kind, entry_id, occurred_at, rule, account_id, subject_id, leaf, "
                 "leaf_hash, finding_id")


def checked_row(values: tuple[Any, ...]) -> LedgerEntry:
    """The entry of a row of ENTRY_COLUMNS, checked against its leaf bytes (its hash and
    columns: LedgerTampered, naming the leaf, when they disagree)."""
    (idx, kind, entry_id, occurred_at, rule, account_id, subject_id, leaf, digest,
     finding_id) = values
    return checked_entry(StoredRow(index=int(idx), kind=str(kind), entry_id=str(entry_id),
                                   occurred_at=int(occurred_at), rule=str(rule),
                                   account_id=str(account_id), subject_id=str(subject_id),
                                   leaf=bytes(leaf), leaf_hash=bytes(digest),
                                   finding_id=str(finding_id)))


@dataclass(frozen=True, slots=True)
class Standing:
    """The reviews' statuses and the exceptions as of one moment (`at_ms`, the server's
    clock): what one request reads, whatever is stored meanwhile."""

    statuses: Mapping[str, ReviewStatus]  # reviewed findings only
    by_state: Mapping[str, tuple[str, ...]]  # reviewed finding ids by review state
    exceptions: tuple[LedgerEntry, ...]  # every exception recorded, in ledger order
    at_ms: int
    watermark: int  # the last leaf index read

    @property
    def in_force(self) -> tuple[LedgerEntry, ...]:
        return tuple(e for e in self.exceptions if in_force(e.record, self.at_ms))

    def key(self) -> tuple[Any, ...]:
        """Equal keys, equal statuses for every finding (for caches)."""
        return (self.watermark, tuple(e.entry_id for e in self.in_force))

    def review_status(self, finding_id: str) -> ReviewStatus:
        return self.statuses.get(finding_id, OPEN)

    def covering(self, record: Mapping[str, Any]) -> list[LedgerEntry]:
        """The exceptions in force now whose scope covers the finding record."""
        return [e for e in self.in_force if covers(e.record, record)]

    def status_of(self, finding_id: str, record: Mapping[str, Any]) -> str:
        state = self.review_status(finding_id).state
        if state != "resolved" and self.covering(record):
            return "excepted"
        return state

    def ids(self, *states: str) -> list[str]:
        """The reviewed findings whose review state is one of `states`."""
        return [finding_id for state in states for finding_id in self.by_state.get(state, ())]


class StatusIndex:
    """The fold of every review of one ledger, kept up to date incrementally (see the
    module doc). Thread-safe: requests are answered on a thread pool."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._statuses: dict[str, ReviewStatus] = {}
        self._exceptions: list[LedgerEntry] = []
        self._seen = {"review": -1, "exception": -1}
        self._by_state: dict[str, tuple[str, ...]] = {}
        self._snapshot: dict[str, ReviewStatus] = {}

    def refresh(self, db: Database, now_ms: int | None = None) -> Standing:
        """The standing now: the reviews and exceptions stored since the last call read
        (each leaf checked against its hash and columns), then a snapshot."""
        with self._lock:
            changed = False
            for kind in ("review", "exception"):
                # '+idx': the (kind, ...) index finds the kind's few rows; never a walk of
                # every leaf stored since (findings) by the primary key
                plus = "" if db.postgres else "+"
                rows = db.query(f"SELECT {ENTRY_COLUMNS} FROM entries WHERE kind = ? AND "
                                f"{plus}idx > ? ORDER BY idx", (kind, self._seen[kind]))
                for values in rows:
                    entry = checked_row(values)
                    if kind == "review":
                        self._fold(entry)
                    else:
                        self._exceptions.append(entry)
                    self._seen[kind] = entry.index
                    changed = True
            if changed:
                self._snapshot = dict(self._statuses)  # shared, never changed
                by_state: dict[str, list[str]] = {}
                for finding_id, status in self._statuses.items():
                    by_state.setdefault(status.state, []).append(finding_id)
                self._by_state = {state: tuple(ids) for state, ids in by_state.items()}
            return Standing(statuses=self._snapshot, by_state=self._by_state,
                            exceptions=tuple(self._exceptions),
                            at_ms=time.time_ns() // 1_000_000 if now_ms is None else now_ms,
                            watermark=max(self._seen.values()))

    def _fold(self, entry: LedgerEntry) -> None:
        before = self._statuses.get(entry.finding_id, OPEN)
        try:
            self._statuses[entry.finding_id] = step(before, entry.record)
        except TrailError as exc:
            raise LedgerTampered(f"the stored reviews of a finding do not fold: {exc} (was "
                                 "the database edited?)") from None
