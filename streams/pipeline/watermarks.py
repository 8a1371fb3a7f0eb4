"""Per-source watermarks: how far event time has got on every input partition.

The spec's watermark is per partition: the greatest `occurred_at` seen on it minus
`allowed_lateness`. The correlate stage mixes records from every input partition
(several topics, read by several workers), so its partitions cannot just take the
greatest time they see: one input running ahead of another would make the other's
events late. As Flink does with input channels, each source's watermark travels
beside its records, and a correlate partition's watermark is the minimum over the
sources:

- `SourceClocks` (route side) follows each input partition a worker reads: the
  greatest event time forwarded from it, and when. After `idle_timeout` with no
  events on a source that is caught up, its watermark advances with the wall clock
  (`idle_watermark`, the engine's own rule). A source that has given nothing since
  it was assigned, and is caught up, is reported EMPTY once the idle timeout has
  passed too: from then on it holds nobody back. (Not at once: the high watermark
  seen is that of the last fetch, and a source that only looks empty would make
  every event it then delivers late.)
- A marker record on the correlate topic carries a worker's report for all of its
  sources; it is sent to every correlate partition after the records it covers
  (one producer, so a partition receives them in that order).
- `SourceWatermarks` (correlate side, one per partition) keeps the latest report of
  every source and gives the minimum once every expected source has reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from streams.engine.core import idle_watermark
from streams.errors import InvalidEvent

__all__ = ["MARKER", "SourceClocks", "SourceWatermarks", "decode_marker", "encode_marker",
           "is_marker", "source_id", "source_tp"]

# Not Avro single-object encoding (C3 01), not JSON: cannot be mistaken for an event.
MARKER = b"\x00consentwatch-watermarks\n"


def source_id(topic: str, partition: int) -> str:
    """`topic:partition` (a Kafka topic name has no colon)."""
    return f"{topic}:{partition}"


def source_tp(source: str) -> Any:
    """The Faust topic-partition of a source id (the inverse of `source_id`)."""
    from faust.types import TP

    topic, _, number = source.rpartition(":")
    return TP(topic, int(number))


def is_marker(value: bytes | None) -> bool:
    return value is not None and value.startswith(MARKER)


def encode_marker(report: Mapping[str, int | None]) -> bytes:
    """`report`: source id -> its watermark in ms, or None for EMPTY."""
    return MARKER + orjson.dumps(dict(report))


def decode_marker(value: bytes) -> dict[str, int | None]:
    try:
        report = orjson.loads(value[len(MARKER):])
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("bad_marker", f"watermark marker is not JSON: {exc}") from None
    if not isinstance(report, dict) or not all(
            isinstance(k, str) and (v is None or type(v) is int) for k, v in report.items()):
        raise InvalidEvent("bad_marker", "watermark marker must map sources to ints or null")
    return report


class _Clock:
    __slots__ = ("max_event", "wall_at_event")

    def __init__(self, wall_ms: int) -> None:
        self.max_event: int | None = None
        self.wall_at_event = wall_ms  # since assignment, while no event came


class SourceClocks:
    """Route side: the event-time progress of the input partitions this worker reads."""

    def __init__(self, allowed_lateness_ms: int, idle_timeout_ms: int) -> None:
        self._lateness = allowed_lateness_ms
        self._idle_timeout = idle_timeout_ms
        self._clocks: dict[str, _Clock] = {}

    def assign(self, sources: Iterable[str], wall_ms: int) -> None:
        for source in sources:
            self._clocks.setdefault(source, _Clock(wall_ms))

    def revoke(self, sources: Iterable[str]) -> None:
        for source in sources:
            self._clocks.pop(source, None)

    def sources(self) -> list[str]:
        return sorted(self._clocks)

    def observe(self, source: str, max_event_ms: int, wall_ms: int) -> None:
        """Records up to `max_event_ms` from `source` have been handed to the producer."""
        clock = self._clocks.get(source)
        if clock is None:
            clock = self._clocks[source] = _Clock(wall_ms)
        if clock.max_event is None or max_event_ms > clock.max_event:
            clock.max_event = max_event_ms
        clock.wall_at_event = wall_ms

    def report(self, wall_ms: int, caught_up: Callable[[str], bool | None]
               ) -> dict[str, int | None]:
        """Each source's watermark, None for EMPTY; a source whose state is not known
        yet (nothing read, not known to be caught up) is left out.

        `caught_up(source)`: True when everything in the partition has been read,
        False when records are waiting, None when not known yet.
        """
        report: dict[str, int | None] = {}
        for source, clock in self._clocks.items():
            state = caught_up(source)
            if clock.max_event is None:
                if state and wall_ms - clock.wall_at_event >= self._idle_timeout:
                    report[source] = None
                continue
            watermark = clock.max_event - self._lateness
            if state:
                advanced = idle_watermark(watermark, clock.wall_at_event, wall_ms,
                                          self._idle_timeout)
                if advanced is not None:
                    watermark = advanced
            report[source] = watermark
        return report


class SourceWatermarks:
    """Correlate side, one per partition: the minimum over every expected source.

    `expected()` gives the ids of every input partition (from the topics' metadata),
    or None while that is not known.
    """

    def __init__(self, expected: Callable[[], Iterable[str] | None]) -> None:
        self._expected = expected
        self._marks: dict[str, int | None] = {}

    def update(self, report: Mapping[str, int | None]) -> None:
        marks = self._marks
        for source, watermark in report.items():
            if watermark is None:
                marks[source] = None
            else:
                old = marks.get(source)
                marks[source] = watermark if old is None else max(old, watermark)

    def watermark(self) -> int | None:
        """None until every expected source has reported and one of them is not EMPTY."""
        expected = self._expected()
        if expected is None:
            return None
        marks = self._marks
        lowest: int | None = None
        for source in expected:
            if source not in marks:
                return None
            mark = marks[source]
            if mark is not None and (lowest is None or mark < lowest):
                lowest = mark
        return lowest

    def reported(self) -> dict[str, int | None]:
        return dict(self._marks)
