"""`ledger load`: findings (or amendments) from a JSON Lines file written by `replay`.

An audit of archived events then needs no Kafka: replay them, load the output. Each
line is checked on its own; a bad one is reported with its line number and left out,
the rest is stored, in transactions of `batch_size` lines. Loading a file twice, or
two loads of one file at once, stores each record once (the ledger is idempotent and
serialises its writers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson

from streams.evidence.ledger.base import InvalidRecord, Kind
from streams.evidence.ledger.records import Row, to_row
from streams.evidence.ledger.sql import SqlLedger

__all__ = ["LoadStats", "load_jsonl"]

#: Told about each bad line: (line number, what is wrong; never the line's content).
BadLine = Callable[[int, str], None]


@dataclass(slots=True)
class LoadStats:
    read: int = 0
    stored: int = 0
    bad: int = 0

    @property
    def duplicates(self) -> int:
        return self.read - self.bad - self.stored


def load_jsonl(ledger: SqlLedger, kind: Kind, lines: Iterable[bytes], on_bad: BadLine,
               batch_size: int = 1000) -> LoadStats:
    """Store every valid record of `lines` (JSON Lines, blank lines ignored)."""
    stats = LoadStats()
    pending: list[Row] = []
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        stats.read += 1
        try:
            pending.append(to_row(kind, orjson.loads(line)))
        except orjson.JSONDecodeError:
            stats.bad += 1
            on_bad(number, "not valid UTF-8 JSON")
            continue
        except InvalidRecord as exc:
            stats.bad += 1
            on_bad(number, str(exc))
            continue
        if len(pending) >= batch_size:
            stats.stored += ledger.append_rows(pending)
            pending.clear()
    stats.stored += ledger.append_rows(pending)
    return stats
