"""Per-source watermarks: how far event time has got on every input partition.

The spec's watermark is per partition: the greatest `occurred_at` seen on it minus
`allowed_lateness`. The correlate stage mixes records from every input partition
(several topics, read by several workers), so its partitions cannot just take the
greatest time they see: one input running ahead of another would make the other's
events late. As Flink does with input channels, each source's watermark travels
beside its records, and a correlate partition's watermark is the minimum over the
sources that are not idle (spec: "Event time, lateness and absence"):

- `SourceClocks` (route side) follows each input partition a worker reads: the
  greatest event time forwarded from it, and when. A source is IDLE once it is read
  to its end and nothing new came for `idle_timeout` (since its last record, or since
  it was assigned); ENDED after an end-of-input control record (`control.py`), until
  its next record; ACTIVE otherwise, with its watermark, or none yet when nothing was
  read from it since it was assigned. A source read to its end that this worker has
  heard nothing of since it was assigned is left out until it goes idle: its state is
  what its previous reader last reported (an end of input read there is not read again
  here), and the worker reports it active again before its next record (`_rejoin`).
- A marker record on the correlate topic carries a worker's report for all of its
  sources; it is sent to every correlate partition after the records it covers
  (one producer, so a partition receives them in that order).
- `SourceWatermarks` (correlate side, one per partition) keeps every source's highest
  watermark and latest state. Its watermark is the minimum over the ACTIVE sources
  (an IDLE one leaves the minimum and rejoins with its next record); with none active
  and some ENDED, everything read so far is decided (`END`); with all IDLE, the
  watermark advances by the wall-clock time that passes. Its marks are saved with the
  partition's state, so a partition that moves to another worker, or a worker that
  restarts, goes on from them instead of waiting for traffic; so are the states, so that a
  source ended or idle stays so while its new reader has heard nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from streams.errors import InvalidEvent

__all__ = ["ACTIVE", "END", "ENDED", "IDLE", "MARKER", "SourceClocks", "SourceReport",
           "SourceWatermarks", "decode_marker", "decode_marker_read_to", "encode_marker",
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


ACTIVE = "active"
IDLE = "idle"
ENDED = "ended"
_STATES = frozenset({ACTIVE, IDLE, ENDED})
# What `SourceWatermarks.watermark` gives when every source that is not idle has ended.
END = 1 << 62

# A source's report: its watermark in ms (None: nothing read since it was assigned)
# and its state.
SourceReport = tuple[int | None, str]


def encode_marker(report: Mapping[str, SourceReport],
                  read_to: Mapping[str, int] | None = None) -> bytes:
    """`report`: source id -> (watermark or None, state); `read_to`: for the sources read
    directly (direct mode), the next offset read (`marker_gate.py`)."""
    read_to = read_to or {}
    return MARKER + orjson.dumps({
        source: [*item, read_to[source]] if source in read_to else list(item)
        for source, item in report.items()})


def decode_marker(value: bytes) -> dict[str, SourceReport]:
    return decode_marker_read_to(value)[0]


def decode_marker_read_to(value: bytes) -> tuple[dict[str, SourceReport], dict[str, int]]:
    """The report and the read-to offsets of a marker; InvalidEvent when malformed."""
    try:
        raw = orjson.loads(value[len(MARKER):])
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("bad_marker", f"watermark marker is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidEvent("bad_marker", "a watermark marker must map sources to reports")
    report: dict[str, SourceReport] = {}
    read_to: dict[str, int] = {}
    for source, item in raw.items():
        if not (isinstance(item, list) and len(item) in (2, 3)
                and (item[0] is None or type(item[0]) is int) and item[1] in _STATES
                and (len(item) == 2 or type(item[2]) is int)):
            raise InvalidEvent("bad_marker", "a source's report must be [watermark or null, "
                               "state] or [watermark or null, state, offset]")
        report[source] = (item[0], item[1])
        if len(item) == 3:
            read_to[source] = item[2]
    return report, read_to


class _Clock:
    __slots__ = ("ended", "heard", "max_event", "wall_at_event")

    def __init__(self, wall_ms: int) -> None:
        self.max_event: int | None = None
        self.wall_at_event = wall_ms  # since assignment, while no event came
        self.ended = False
        self.heard = False  # a record (event or control) read since assignment


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
        """Records up to `max_event_ms` from `source` have been handed to the producer
        (ignored once `source` is revoked: a batch that finished after its revocation)."""
        clock = self._clocks.get(source)
        if clock is None:
            return
        if clock.max_event is None or max_event_ms > clock.max_event:
            clock.max_event = max_event_ms
        clock.wall_at_event = wall_ms
        clock.ended = False
        clock.heard = True

    def rejoin(self, source: str, wall_ms: int) -> None:
        """`source`, reported idle or ended, has records again: active from now (its
        watermark stays where it was until they are observed)."""
        clock = self._clocks.get(source)
        if clock is None:
            return
        clock.wall_at_event = wall_ms
        clock.ended = False
        clock.heard = True

    def end(self, source: str, wall_ms: int) -> None:
        """`source` gave an end-of-input control record after everything observed so far
        (ignored once `source` is revoked)."""
        clock = self._clocks.get(source)
        if clock is None:
            return
        clock.wall_at_event = wall_ms
        clock.ended = True
        clock.heard = True

    def report(self, wall_ms: int, caught_up: Callable[[str], bool | None]
               ) -> dict[str, SourceReport]:
        """Each source's (watermark, state); a source whose state is not known yet
        (nothing read, not known to be caught up) is left out, and so is one read to its
        end that nothing was heard of since it was assigned, until it is idle: it is as
        its previous reader left it (ended, idle or active), which this worker does not
        know. Reported active, it held every correlate partition at its last watermark
        until the idle timeout, though an end of input had been read there.

        `caught_up(source)`: True when everything in the partition has been read,
        False when records are waiting, None when not known yet.
        """
        report: dict[str, SourceReport] = {}
        for source, clock in self._clocks.items():
            watermark = None if clock.max_event is None else clock.max_event - self._lateness
            if clock.ended:
                report[source] = (watermark, ENDED)
                continue
            state = caught_up(source)
            if state is None:
                if clock.heard:  # read since it was assigned (a watermark implies it)
                    report[source] = (watermark, ACTIVE)
                continue
            idle = state and wall_ms - clock.wall_at_event >= self._idle_timeout
            if state and not idle and not clock.heard:
                continue
            report[source] = (watermark, IDLE if idle else ACTIVE)
        return report


class SourceWatermarks:
    """Correlate side, one per partition: the minimum over the sources not idle.

    `expected()` gives the ids of every input partition (from the topics' metadata),
    or None while that is not known.
    """

    def __init__(self, expected: Callable[[], Iterable[str] | None]) -> None:
        self._expected = expected
        self._marks: dict[str, int] = {}  # the highest watermark each source reported
        self._states: dict[str, str] = {}  # each source's latest state
        # The correlate offset of the last marker applied, and of the last one whose states
        # the restored states already hold (`restore`): read again, it adds its marks only.
        self._offset: int | None = None
        self._states_upto: int | None = None
        self._idle_from: tuple[int, int] | None = None  # (watermark, wall ms) when all went idle
        self._idle_wall: int | None = None  # the latest wall ms counted while all are idle
        # The wall time counted up to the state restored (`restore`): never counted again,
        # even after markers read again that were not all idle.
        self._restored_wall: int | None = None

    def update(self, report: Mapping[str, SourceReport], offset: int | None = None) -> None:
        """A report: a marker's (`offset`: its offset in the correlate partition), or the
        partition's own news of a source it reads directly (no offset)."""
        marks = self._marks
        states = True
        if offset is not None:
            # A marker read again after a restore is older than the states restored: its
            # states beside them would make a mix the partition never was in (a source
            # ended in it, another ended only later).
            states = self._states_upto is None or offset > self._states_upto
            if self._offset is None or offset > self._offset:
                self._offset = offset
        for source, (watermark, state) in report.items():
            if states:
                self._states[source] = state
            if watermark is not None:
                old = marks.get(source)
                marks[source] = watermark if old is None else max(old, watermark)

    def watermark(self, current: int, wall_ms: int) -> int | None:
        """The partition's watermark, given its `current` one (`END`: decide everything
        read so far); None while it cannot move (a source not heard from yet, an active
        source whose watermark is not known, nothing to advance from)."""
        expected = self._expected()
        if expected is None:
            return None
        marks, states = self._marks, self._states
        lowest: int | None = None
        ended = False
        for source in expected:
            state = states.get(source)
            if state is None:
                return None
            if state == IDLE:
                continue
            if state == ENDED:
                ended = True
                continue
            mark = marks.get(source)
            if mark is None:
                return None  # a backlog not read yet: it holds the others back
            if lowest is None or mark < lowest:
                lowest = mark
        if lowest is not None:
            self._idle_from = self._idle_wall = None
            return lowest
        if ended:
            self._idle_from = self._idle_wall = None
            return END
        # Every source idle: everything was read, so (as Flink's valve does) the watermark
        # is at least the highest an idle source reported, and from there the wall clock
        # moves it (never to the wall clock). A report that arrives while all are idle
        # (a source read and gone idle between two markers) moves the base up. The base's
        # wall time never goes back (markers from workers whose clocks differ arrive out
        # of order): a stretch of wall time already counted is not counted again.
        base = current
        for source in expected:
            mark = marks.get(source)
            if mark is not None and mark > base:
                base = mark
        advanced: int | None = None
        if self._idle_from is not None:
            since, at = self._idle_from
            advanced = since + max(0, wall_ms - at)
        counted = wall_ms
        for earlier in (self._idle_wall, self._restored_wall):
            if earlier is not None and earlier > counted:
                counted = earlier
        if advanced is None or base > advanced:
            self._idle_from = (base, counted)
            advanced = base
        self._idle_wall = counted
        if advanced <= -(1 << 61):  # nothing was ever read: nothing to advance
            return None
        return advanced

    def reported(self) -> dict[str, int]:
        return dict(self._marks)

    def states(self) -> dict[str, str]:
        return dict(self._states)

    def state(self, source: str) -> str | None:
        return self._states.get(source)

    def states_offset(self) -> int | None:
        """The correlate offset of the last marker applied: what `states()` holds."""
        return self._offset

    def idle_wall(self) -> int | None:
        """The latest wall time counted while every source is idle (None: not all idle)."""
        return self._idle_wall

    def restore(self, marks: Mapping[str, int], idle_wall: int | None = None,
                states: Mapping[str, str] | None = None,
                states_offset: int | None = None) -> None:
        """The marks and states saved with the partition's state (a new owner, a
        restart), and the wall time counted up to then: the watermark saved with them
        already holds the advance of the markers read again, which must not count it
        twice. `states` hold the markers up to `states_offset` (the states of those read
        again are left out, `update`); a state reported since (read first) stands."""
        if states and states_offset is not None:
            for source, state in states.items():
                if state in _STATES:
                    self._states.setdefault(source, state)
            self._states_upto = states_offset
            if self._offset is None or states_offset > self._offset:
                self._offset = states_offset
        for source, watermark in marks.items():
            old = self._marks.get(source)
            self._marks[source] = watermark if old is None else max(old, watermark)
        if idle_wall is not None:
            self._idle_wall = (idle_wall if self._idle_wall is None
                               else max(self._idle_wall, idle_wall))
            self._restored_wall = self._idle_wall
