"""Per-source watermarks: the route's clocks, the markers, the correlate's minimum."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.errors import InvalidEvent
from streams.pipeline.watermarks import (
    MARKER,
    SourceClocks,
    SourceWatermarks,
    decode_marker,
    encode_marker,
    is_marker,
    source_id,
)

LATENESS = 30_000
IDLE = 30_000
A, B, C = source_id("in.a", 0), source_id("in.b", 0), source_id("in.b", 1)


def test_marker_round_trip_and_recognition() -> None:
    report = {A: 1_000, B: None}
    value = encode_marker(report)
    assert is_marker(value) and decode_marker(value) == report
    assert not is_marker(b"\xc3\x01" + bytes(8)) and not is_marker(None)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"a": "x"}', b'{"a": 1.5}'])
def test_a_bad_marker_is_an_invalid_record(body: bytes) -> None:
    with pytest.raises(InvalidEvent) as error:
        decode_marker(MARKER + body)
    assert error.value.code == "bad_marker"


def test_clock_reports_max_event_minus_lateness_and_leaves_unknown_sources_out() -> None:
    clocks = SourceClocks(LATENESS, IDLE)
    clocks.assign([A, B, C], wall_ms=0)
    clocks.observe(A, 100_000, wall_ms=0)
    clocks.observe(A, 90_000, wall_ms=1)  # an older event does not move it back
    state = {A: False, B: None, C: True}
    # C looks caught up, having given nothing: EMPTY only once idle for the timeout
    assert clocks.report(2, state.__getitem__) == {A: 70_000}
    assert clocks.report(IDLE, state.__getitem__) == {A: 70_000, C: None}


def test_an_idle_caught_up_source_advances_with_the_wall_clock_not_before() -> None:
    clocks = SourceClocks(LATENESS, IDLE)
    clocks.observe(A, 100_000, wall_ms=1_000)
    caught_up = {A: True}.__getitem__
    assert clocks.report(1_000 + IDLE - 1, caught_up) == {A: 70_000}
    assert clocks.report(1_000 + IDLE, caught_up) == {A: 70_000 + IDLE}
    assert clocks.report(1_000 + IDLE + 5_000, caught_up) == {A: 70_000 + IDLE + 5_000}
    # a source with records waiting is not idle, however long it has been
    assert clocks.report(1_000 + 10 * IDLE, {A: False}.__getitem__) == {A: 70_000}


def test_revoked_sources_are_no_longer_reported() -> None:
    clocks = SourceClocks(LATENESS, IDLE)
    clocks.observe(A, 100_000, wall_ms=0)
    clocks.observe(B, 100_000, wall_ms=0)
    clocks.revoke([A])
    assert clocks.report(0, lambda _: False) == {B: 70_000}


def test_correlate_waits_for_every_expected_source_then_takes_the_minimum() -> None:
    marks = SourceWatermarks(lambda: [A, B, C])
    marks.update({A: 50})
    assert marks.watermark() is None
    marks.update({B: 20, C: 90})
    assert marks.watermark() == 20
    marks.update({B: 10})  # a lower report (a new owner reading again) never moves it back
    assert marks.watermark() == 20
    marks.update({B: None})  # caught up with nothing new: holds nobody back
    assert marks.watermark() == 50
    marks.update({A: None, B: None, C: None})
    assert marks.watermark() is None


def test_correlate_waits_for_the_topics_metadata() -> None:
    expected: list[str] | None = None
    marks = SourceWatermarks(lambda: expected)
    marks.update({A: 5})
    assert marks.watermark() is None
    expected = [A]
    assert marks.watermark() == 5


@given(st.lists(st.tuples(st.sampled_from([A, B, C]), st.integers(0, 10**6)), max_size=40))
def test_the_correlate_watermark_never_moves_back_once_every_source_reported(
        reports: list[tuple[str, int]]) -> None:
    marks = SourceWatermarks(lambda: [A, B, C])
    marks.update({A: 0, B: 0, C: 0})
    last = marks.watermark()
    assert last == 0
    for source, value in reports:
        marks.update({source: value})
        now = marks.watermark()
        assert now is not None and now >= last
        last = now
