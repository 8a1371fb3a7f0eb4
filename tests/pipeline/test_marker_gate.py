"""Direct mode: a marker waits until the engine has read its direct inputs as far as the
marker's sender had, so a partition read again after a crash decides as the first time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.pipeline.marker_gate import HeldMarker, MarkerGate
from tests.hypothesis_profiles import examples

OWN = "events.consent:0"
OTHER = "events.consent:1"  # another correlate partition's direct source


def _marker(offset: int, read_to: dict[str, int] | None = None) -> HeldMarker:
    return HeldMarker(report={}, read_to=read_to or {}, offset=offset, sent_at=offset)


def _gate(read_to: int = 0) -> MarkerGate:
    """A gate whose own source is committed (so read as far) up to `read_to`."""
    committed = {OWN: read_to}
    return MarkerGate(lambda source: source.endswith(":0"), lambda s: committed.get(s, 0))


def test_a_marker_the_engine_has_read_as_far_as_is_applied_at_once() -> None:
    gate = _gate(read_to=10)
    marker = _marker(1, {OWN: 10})
    assert gate.offer(marker) == [marker] and gate.held() == 0


def test_a_marker_ahead_of_the_engine_waits_and_the_ones_after_it_too() -> None:
    gate = _gate(read_to=3)
    ahead, later = _marker(1, {OWN: 10}), _marker(2, {OWN: 4})
    assert gate.offer(ahead) == [] and gate.offer(later) == []  # in order: behind `ahead`
    assert gate.read(OWN, 9) == []
    assert gate.read(OWN, 10) == [ahead, later] and gate.held() == 0


def test_sources_of_other_partitions_and_markers_without_positions_do_not_hold() -> None:
    gate = _gate()
    assert gate.offer(_marker(1, {OTHER: 99})) != []
    assert gate.offer(_marker(2)) != []


def test_what_is_committed_counts_as_read_even_when_nothing_is_read_again() -> None:
    """After a restart the committed offset may be the end: nothing is read again, and a
    marker is covered by the commit (learnt after the partition opened, too)."""
    committed = {OWN: 0}
    gate = MarkerGate(lambda source: source == OWN, lambda s: committed.get(s, 0))
    marker = _marker(1, {OWN: 10})
    assert gate.offer(marker) == []
    committed[OWN] = 10
    later = _marker(2)
    assert gate.offer(later) == [marker, later]


def test_reading_never_goes_back() -> None:
    gate = _gate(read_to=10)
    gate.read(OWN, 5)
    marker = _marker(1, {OWN: 10})
    assert gate.offer(marker) == [marker]


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=50)), max_size=40))
def test_markers_come_out_in_order_each_once_and_only_when_covered(
        steps: list[tuple[bool, int]]) -> None:
    gate = _gate()
    read = 0
    offered: list[HeldMarker] = []
    applied: list[HeldMarker] = []
    for n, (is_marker, value) in enumerate(steps):
        if is_marker:
            marker = _marker(n, {OWN: value})
            offered.append(marker)
            out = gate.offer(marker)
        else:
            read = max(read, value)
            out = gate.read(OWN, value)
        assert all(m.read_to[OWN] <= read for m in out)
        applied.extend(out)
    assert applied == offered[:len(applied)]
    assert len(applied) + gate.held() == len(offered)
    assert gate.read(OWN, 10**9) == offered[len(applied):]
