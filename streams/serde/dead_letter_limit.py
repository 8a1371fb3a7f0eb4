"""A bound on how many invalid records of one input are kept in full.

A small hostile file can hold millions of invalid records (a deflate block of zeros
decodes to two million one-byte records): each becomes a line on stderr and a dead
letter with its bytes. Past the bound, invalid records are only counted; the summary
says how many were left out, and where.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["DEFAULT_PER_BLOCK", "DEFAULT_PER_RUN", "DeadLetterLimit"]

DEFAULT_PER_RUN = 1000
DEFAULT_PER_BLOCK = 100


class DeadLetterLimit:
    """Admits the first `per_run` invalid records of an input, at most `per_block` of any
    one Avro block; counts the others by reason and by block."""

    __slots__ = ("_block", "_in_block", "admitted", "dropped_by_block", "dropped_by_reason",
                 "dropped_past_run", "per_block", "per_run")

    def __init__(self, per_run: int = DEFAULT_PER_RUN,
                 per_block: int = DEFAULT_PER_BLOCK) -> None:
        self.per_run = per_run
        self.per_block = per_block
        self.admitted = 0
        self.dropped_past_run = 0
        self.dropped_by_block: Counter[int] = Counter()
        self.dropped_by_reason: Counter[str] = Counter()
        self._block = -1
        self._in_block = 0

    @property
    def dropped(self) -> int:
        return self.dropped_past_run + self.dropped_by_block.total()

    def admit(self, reason_code: str, block: int | None = None) -> bool:
        """Whether this invalid record is kept in full; if not, it is counted here."""
        if block is not None:
            if block != self._block:
                self._block, self._in_block = block, 0
            self._in_block += 1
            if self._in_block > self.per_block:
                self.dropped_by_block[block] += 1
                self.dropped_by_reason[reason_code] += 1
                return False
        if self.admitted < self.per_run:
            self.admitted += 1
            return True
        self.dropped_past_run += 1
        self.dropped_by_reason[reason_code] += 1
        return False

    def summary_lines(self, unit: str, most_blocks: int = 10) -> list[str]:
        """What was left out, one line each (at most `most_blocks` lines for blocks)."""
        lines = [
            f"{count} more invalid {unit}s in block {block} not reported or written "
            f"(at most {self.per_block} a block)"
            for block, count in sorted(self.dropped_by_block.items())[:most_blocks]
        ]
        if len(self.dropped_by_block) > most_blocks:
            rest = sorted(self.dropped_by_block.items())[most_blocks:]
            lines.append(f"{sum(count for _, count in rest)} more invalid {unit}s in "
                         f"{len(rest)} more blocks not reported or written")
        if self.dropped_past_run:
            lines.append(f"{self.dropped_past_run} more invalid {unit}s after the first "
                         f"{self.per_run} not reported or written")
        return lines
