"""Direct mode: a correlate partition applies a watermark marker only once its engine has
read its directly read inputs as far as the marker's sender had.

In route mode the records a marker covers sit in the correlate partition before it, so a
partition read again after a crash meets them in that order. A directly read input
partition is read by its own handler, in no fixed order with the correlate partition:
after a crash, a marker could be read again before the input records it covers, and
decide without their events. So a marker carries, for each input partition its sender
read directly, how far (`read_to`: the next offset); the gate holds the marker, and every
marker after it, until the engine has read each of those partitions as far. In normal
operation the sender is this worker, which read them before it sent the marker: nothing
waits.

The other way round, the engine may have read past a marker's `read_to` by the time the
marker comes back (an end-of-input record followed at once by more records): what the
marker says of those sources is then older than the records (`read_past`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["HeldMarker", "MarkerGate"]


@dataclass(frozen=True, slots=True)
class HeldMarker:
    report: Any  # the sources' reports (watermarks.SourceReport by source id)
    read_to: Mapping[str, int]  # direct sources: the next offset the sender had read
    offset: int  # the marker's offset in the correlate partition
    sent_at: int  # when it was sent (ms), the clock of an all-idle advance


class MarkerGate:
    """One per correlate partition. `is_own(source)`: a source this partition reads
    directly; `handed_over(source)`: how far the consumer has handed it over now (its
    committed offset, or further: records handed to the handler and the offsets without
    a record passed over after them). What is before it is in the state or the engine:
    read as far, whether or not it is read again."""

    def __init__(self, is_own: Callable[[str], bool],
                 handed_over: Callable[[str], int]) -> None:
        self._read_to: dict[str, int] = {}
        self._is_own = is_own
        self._handed_over = handed_over
        self._held: list[HeldMarker] = []

    def offer(self, marker: HeldMarker) -> list[HeldMarker]:
        """The markers to apply now, in order: `marker` behind those held, as far as
        they are covered."""
        self._held.append(marker)
        return self._release()

    def read(self, source: str, next_offset: int) -> list[HeldMarker]:
        """The engine has read `source` up to `next_offset`: the held markers now
        covered, in order (up to the first that is not)."""
        if next_offset > self._read_to.get(source, 0):
            self._read_to[source] = next_offset
        return self._release()

    def _release(self) -> list[HeldMarker]:
        released: list[HeldMarker] = []
        while self._held and self._covers(self._held[0]):
            released.append(self._held.pop(0))
        return released

    def read_past(self, marker: HeldMarker) -> list[str]:
        """The sources this partition reads directly whose records after the marker's
        report (beyond its `read_to`) are in the engine already: the report's state of
        them (ended, idle) is older than those records, which made them active again."""
        return [source for source, offset in marker.read_to.items()
                if self._is_own(source) and self._read(source) > offset]

    def held(self) -> int:
        return len(self._held)

    def waiting_for(self) -> dict[str, tuple[int, int]]:
        """What the first held marker waits for: source -> (read to, needed)."""
        if not self._held:
            return {}
        return {source: (self._read(source), offset)
                for source, offset in self._held[0].read_to.items()
                if self._is_own(source) and self._read(source) < offset}

    def _read(self, source: str) -> int:
        return max(self._read_to.get(source, 0), self._handed_over(source))

    def _covers(self, marker: HeldMarker) -> bool:
        return all(self._read(source) >= offset for source, offset in marker.read_to.items()
                   if self._is_own(source))
