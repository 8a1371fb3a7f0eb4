"""Per-source watermarks: the route's clocks, the markers, the correlate's minimum."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.errors import InvalidEvent
from streams.pipeline.watermarks import (
    ACTIVE,
    END,
    ENDED,
    IDLE,
    MARKER,
    SourceClocks,
    SourceWatermarks,
    decode_marker,
    encode_marker,
    is_marker,
    source_id,
)

LATENESS = 30_000
IDLE_MS = 30_000
A, B, C = source_id("in.a", 0), source_id("in.b", 0), source_id("in.b", 1)


def test_marker_round_trip_and_recognition() -> None:
    report = {A: (1_000, ACTIVE), B: (None, IDLE), C: (5, ENDED)}
    value = encode_marker(report)
    assert is_marker(value) and decode_marker(value) == report
    assert not is_marker(b"\xc3\x01" + bytes(8)) and not is_marker(None)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"a": "x"}', b'{"a": [1.5, "idle"]}',
                                  b'{"a": [1, "asleep"]}', b'{"a": [1]}'])
def test_a_bad_marker_is_an_invalid_record(body: bytes) -> None:
    with pytest.raises(InvalidEvent) as error:
        decode_marker(MARKER + body)
    assert error.value.code == "bad_marker"


def test_clock_reports_max_event_minus_lateness_and_idle_only_after_the_timeout() -> None:
    clocks = SourceClocks(LATENESS, IDLE_MS)
    clocks.assign([A, B, C], wall_ms=0)
    clocks.observe(A, 100_000, wall_ms=0)
    clocks.observe(A, 90_000, wall_ms=1)  # an older event does not move it back
    state = {A: False, B: None, C: True}
    # B: nothing read and not known to be caught up: left out. C: caught up with nothing
    # heard since it was assigned: left out (as its previous reader left it) until it is
    # idle, once the idle timeout has passed since it was assigned.
    assert clocks.report(2, state.__getitem__) == {A: (70_000, ACTIVE)}
    assert clocks.report(IDLE_MS, state.__getitem__) == {A: (70_000, ACTIVE), C: (None, IDLE)}
    # records waiting there: active, a backlog that holds the others back
    assert clocks.report(2, {**state, C: False}.__getitem__) == {
        A: (70_000, ACTIVE), C: (None, ACTIVE)}


def test_a_source_heard_of_since_it_was_assigned_is_reported_without_an_event() -> None:
    clocks = SourceClocks(LATENESS, IDLE_MS)
    clocks.assign([A, B], wall_ms=0)
    clocks.rejoin(A, wall_ms=1)  # a record read, its event not observed yet
    clocks.end(B, wall_ms=1)  # an end of input read first
    for caught_up in ({A: True, B: True}, {A: None, B: None}):
        assert clocks.report(2, caught_up.__getitem__) == {
            A: (None, ACTIVE), B: (None, ENDED)}


def test_a_caught_up_source_is_idle_after_the_timeout_and_active_again_on_a_record() -> None:
    clocks = SourceClocks(LATENESS, IDLE_MS)
    clocks.assign([A], wall_ms=0)
    clocks.observe(A, 100_000, wall_ms=1_000)
    caught_up = {A: True}.__getitem__
    assert clocks.report(1_000 + IDLE_MS - 1, caught_up) == {A: (70_000, ACTIVE)}
    assert clocks.report(1_000 + IDLE_MS, caught_up) == {A: (70_000, IDLE)}
    # records waiting: not idle, however long it has been
    assert clocks.report(1_000 + 10 * IDLE_MS, {A: False}.__getitem__) == {A: (70_000, ACTIVE)}
    clocks.observe(A, 200_000, wall_ms=1_000 + 10 * IDLE_MS)
    assert clocks.report(1_000 + 10 * IDLE_MS, caught_up) == {A: (170_000, ACTIVE)}


def test_an_ended_source_stays_ended_until_its_next_record() -> None:
    clocks = SourceClocks(LATENESS, IDLE_MS)
    clocks.assign([A], wall_ms=0)
    clocks.observe(A, 100_000, wall_ms=0)
    clocks.end(A, wall_ms=0)
    assert clocks.report(10 * IDLE_MS, {A: True}.__getitem__) == {A: (70_000, ENDED)}
    clocks.observe(A, 100_001, wall_ms=1)
    assert clocks.report(2, {A: True}.__getitem__) == {A: (70_001, ACTIVE)}


def test_revoked_sources_are_no_longer_reported() -> None:
    clocks = SourceClocks(LATENESS, IDLE_MS)
    clocks.assign([A, B], wall_ms=0)
    clocks.observe(A, 100_000, wall_ms=0)
    clocks.observe(B, 100_000, wall_ms=0)
    clocks.revoke([A])
    assert clocks.report(0, lambda _: False) == {B: (70_000, ACTIVE)}


def test_a_batch_that_finishes_after_its_sources_revocation_does_not_bring_it_back() -> None:
    clocks = SourceClocks(LATENESS, IDLE_MS)
    clocks.assign([A, B], wall_ms=0)
    clocks.observe(B, 100_000, wall_ms=0)
    clocks.revoke([A])
    clocks.observe(A, 100_000, wall_ms=1)  # only `assign` makes a source this worker's
    clocks.end(A, wall_ms=1)
    clocks.observe(C, 100_000, wall_ms=1)
    assert clocks.sources() == [B]
    assert clocks.report(1, lambda _: False) == {B: (70_000, ACTIVE)}


def test_correlate_waits_for_every_expected_source_then_takes_the_minimum() -> None:
    marks = SourceWatermarks(lambda: [A, B, C])
    marks.update({A: (50, ACTIVE)})
    assert marks.watermark(0, 0) is None
    marks.update({B: (20, ACTIVE), C: (90, ACTIVE)})
    assert marks.watermark(0, 0) == 20
    marks.update({B: (10, ACTIVE)})  # a lower report (a new owner reading again)
    assert marks.watermark(0, 0) == 20
    marks.update({B: (20, IDLE)})  # idle: leaves the minimum
    assert marks.watermark(20, 0) == 50
    marks.update({B: (25, ACTIVE)})  # rejoins with its next record
    assert marks.watermark(50, 0) == 25


def test_an_active_source_with_no_known_watermark_holds_the_others_back() -> None:
    marks = SourceWatermarks(lambda: [A, B])
    marks.update({A: (50, ACTIVE), B: (None, ACTIVE)})  # a backlog not read yet
    assert marks.watermark(0, 0) is None
    marks.update({B: (None, IDLE)})
    assert marks.watermark(0, 0) == 50


def test_when_every_source_is_idle_the_wall_clock_advances_the_watermark() -> None:
    marks = SourceWatermarks(lambda: [A, B])
    marks.update({A: (50, IDLE), B: (40, IDLE)})
    # everything was read: from the highest report, never a jump to the wall clock
    assert marks.watermark(40, wall_ms=1_000) == 50
    assert marks.watermark(50, wall_ms=6_000) == 5_050
    assert marks.watermark(5_050, wall_ms=9_000) == 8_050
    marks.update({A: (9_000, ACTIVE)})  # a source rejoins: the minimum of the active ones
    assert marks.watermark(8_050, wall_ms=10_000) == 9_000
    # nothing ever read: nothing to advance from
    empty = SourceWatermarks(lambda: [A])
    empty.update({A: (None, IDLE)})
    assert empty.watermark(-(1 << 62), 5_000) is None


def test_markers_out_of_wall_clock_order_count_the_wall_time_that_passed_once() -> None:
    # Two workers whose clocks differ: a marker stamped earlier than one already counted
    # (and the markers after it) must not count that stretch of wall time again.
    marks = SourceWatermarks(lambda: [A, B])
    marks.update({A: (50, IDLE), B: (40, IDLE)})
    assert marks.watermark(40, wall_ms=1_000) == 50
    assert marks.watermark(50, wall_ms=6_000) == 5_050
    assert marks.watermark(5_050, wall_ms=5_950) == 5_050  # the other worker's clock
    assert marks.watermark(5_050, wall_ms=9_000) == 8_050  # 8 s of wall time: 8 s
    assert marks.watermark(8_050, wall_ms=8_990) == 8_050
    assert marks.watermark(8_050, wall_ms=9_010) == 8_060


def test_a_source_read_and_gone_idle_between_two_markers_still_moves_the_watermark() -> None:
    # CI saw this stall: every source idle before any traffic, then the first report of
    # the source that got events already says IDLE (its events were read more than the
    # idle timeout before the marker went out).
    minus_infinity = -(1 << 62)
    marks = SourceWatermarks(lambda: [A, B])
    marks.update({A: (None, IDLE), B: (None, IDLE)})
    assert marks.watermark(minus_infinity, wall_ms=1_000) is None
    marks.update({A: (70_000, IDLE), B: (None, IDLE)})
    assert marks.watermark(minus_infinity, wall_ms=5_000) == 70_000
    assert marks.watermark(70_000, wall_ms=8_000) == 73_000
    marks.update({B: (90_000, IDLE)})  # another catches up past the advance
    assert marks.watermark(73_000, wall_ms=8_500) == 90_000


def test_ended_sources_decide_everything_once_no_source_is_active() -> None:
    marks = SourceWatermarks(lambda: [A, B, C])
    marks.update({A: (50, ENDED), B: (40, ACTIVE), C: (None, IDLE)})
    assert marks.watermark(0, 0) == 40
    marks.update({B: (45, ENDED)})
    assert marks.watermark(40, 0) == END


def test_restored_marks_stand_for_sources_until_they_report_more() -> None:
    first = SourceWatermarks(lambda: [A, B])
    first.update({A: (50, ACTIVE), B: (70, ACTIVE)})
    moved = SourceWatermarks(lambda: [A, B])  # the partition on another worker
    moved.restore(first.reported())
    moved.update({A: (None, ACTIVE), B: (None, ACTIVE)})  # nothing read yet there
    assert moved.watermark(50, 0) == 50


def test_restored_states_stand_until_a_source_reports_again() -> None:
    first = SourceWatermarks(lambda: [A, B])
    first.update({A: (50, ENDED)}, offset=7)
    first.update({B: (70, IDLE)}, offset=9)
    moved = SourceWatermarks(lambda: [A, B])  # the partition on another worker
    moved.restore(first.reported(), states=first.states(),
                  states_offset=first.states_offset())
    # nothing heard of them on their new readers: they are as they were left
    assert moved.watermark(40, 0) == END
    moved.update({A: (None, ACTIVE)}, offset=10)  # a record of A again
    assert moved.watermark(40, 0) == 50


def test_a_marker_read_again_after_the_restore_adds_its_marks_but_not_its_states() -> None:
    # Saved after offset 9: A active again, B ended. The marker at 7, read again from
    # the committed offset, said A ended: with B's later end that was never the state.
    first = SourceWatermarks(lambda: [A, B])
    first.update({A: (50, ENDED)}, offset=7)
    first.update({A: (60, ACTIVE), B: (70, ENDED)}, offset=9)
    again = SourceWatermarks(lambda: [A, B])
    again.restore({A: 40, B: 70}, states=first.states(), states_offset=first.states_offset())
    again.update({A: (50, ENDED)}, offset=7)
    assert again.states() == {A: ACTIVE, B: ENDED}
    assert again.reported() == {A: 50, B: 70} and again.watermark(0, 0) == 50
    again.update({A: (80, ENDED)}, offset=12)  # beyond what the states held
    assert again.watermark(50, 0) == END


def test_a_state_reported_before_the_restore_stands() -> None:
    marks = SourceWatermarks(lambda: [A])
    marks.update({A: (50, ACTIVE)})
    marks.restore({A: 40}, states={A: ENDED, B: "asleep"}, states_offset=3)
    assert marks.states() == {A: ACTIVE}


def test_a_restored_partition_does_not_count_the_idle_time_of_markers_read_again() -> None:
    # The saved watermark already holds the wall time the markers after the last commit
    # counted: read again by the next owner (or after a restart), they add nothing.
    markers = [1_000, 4_000, 9_000, 15_000]
    first = SourceWatermarks(lambda: [A, B])
    first.update({A: (50, IDLE), B: (40, IDLE)})
    current = 40
    for wall in markers:
        current = first.watermark(current, wall) or current
    assert current == 14_050
    again = SourceWatermarks(lambda: [A, B])
    again.restore(first.reported(), idle_wall=first.idle_wall())
    restored = current
    again.update({A: (50, IDLE), B: (40, IDLE)})
    for wall in markers:
        restored = again.watermark(restored, wall) or restored
    assert restored == current
    assert again.watermark(restored, 16_000) == first.watermark(current, 16_000) == 15_050


def test_markers_read_again_from_before_the_idle_stretch_add_nothing_either() -> None:
    # The committed offset is before the sources went idle: the first markers read again
    # still say active, and must not make the restored partition forget what was counted.
    markers = [(1_000, ACTIVE), (2_000, IDLE), (12_000, IDLE)]

    def read(marks: SourceWatermarks, current: int) -> int:
        for wall, state in markers:
            marks.update({A: (100, state)})
            current = max(current, marks.watermark(current, wall) or current)
        return current

    first = SourceWatermarks(lambda: [A])
    reached = read(first, -(1 << 60))
    assert reached == 10_100
    again = SourceWatermarks(lambda: [A])
    again.restore(first.reported(), idle_wall=first.idle_wall())
    assert read(again, reached) == reached


def test_correlate_waits_for_the_topics_metadata() -> None:
    expected: list[str] | None = None
    marks = SourceWatermarks(lambda: expected)
    marks.update({A: (5, ACTIVE)})
    assert marks.watermark(0, 0) is None
    expected = [A]
    assert marks.watermark(0, 0) == 5


@given(st.lists(st.tuples(st.sampled_from([A, B, C]), st.integers(0, 10**6)), max_size=40))
def test_the_correlate_watermark_never_moves_back_while_every_source_is_active(
        reports: list[tuple[str, int]]) -> None:
    marks = SourceWatermarks(lambda: [A, B, C])
    marks.update({A: (0, ACTIVE), B: (0, ACTIVE), C: (0, ACTIVE)})
    last = marks.watermark(0, 0)
    assert last == 0
    for source, value in reports:
        marks.update({source: (value, ACTIVE)})
        now = marks.watermark(last, 0)
        assert now is not None and now >= last
        last = now


def test_end_of_input_decides_every_trigger_read_and_the_engine_goes_on() -> None:
    from streams.model.validate import event_from_record
    from tests import builders

    engine = builders.make_engine()
    r = builders.requested(0)
    assert engine.process(event_from_record(r)) == []
    decided = engine.decide_pending()
    assert {f.rule for f in decided} == {"enrichment-without-consent",
                                         "enrichment-without-notice"}
    assert engine.pending() == 0
    # the watermark is just past the last deadline (the trigger's time + the notice
    # grace), not infinity: a later event is applied as usual
    assert engine.watermark == r["occurred_at"] + builders.GRACE + 1
    later = builders.requested(builders.GRACE + 60_000, event_id="r-later")
    engine.process(event_from_record(later))
    assert engine.stats.late == 0
    assert engine.decide_pending() != []


def test_control_records_are_never_events() -> None:
    from streams.pipeline.control import END_OF_INPUT, control_kind, encode_control

    value = encode_control()
    assert control_kind(value) == END_OF_INPUT
    from streams.errors import InvalidEvent as Invalid
    from streams.serde.wire import SingleObjectFraming

    with pytest.raises(Invalid):
        SingleObjectFraming().decode(value)


def test_a_marker_carries_how_far_its_direct_sources_were_read() -> None:
    from streams.pipeline.watermarks import decode_marker_read_to

    report = {"t:0": (5, "active"), "t:1": (None, "idle")}
    value = encode_marker(report, {"t:0": 42, "u:3": 7})  # only the report's sources
    assert decode_marker_read_to(value) == (report, {"t:0": 42})
    assert decode_marker(value) == report
    with pytest.raises(InvalidEvent):
        decode_marker(MARKER + b'{"t:0": [5, "active", "42"]}')
