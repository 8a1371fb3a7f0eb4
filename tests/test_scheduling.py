"""The route stage's scheduler: event-time order across partitions, each partition in order."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from streams.pipeline.scheduling import EventTimeScheduler


@dataclass(frozen=True)
class _Record:
    timestamp: int
    offset: int


@given(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]),
                       st.lists(st.integers(0, 50), max_size=20), max_size=4))
def test_merge_keeps_partition_order_and_orders_sorted_partitions(
        times: dict[str, list[int]]) -> None:
    records = {tp: [_Record(t, i) for i, t in enumerate(ts)] for tp, ts in times.items()}
    merged = list(EventTimeScheduler().iterate(records))
    assert sorted((tp, r.offset) for tp, r in merged) == sorted(
        (tp, r.offset) for tp, rs in records.items() for r in rs)
    for tp in records:
        offsets = [r.offset for t, r in merged if t == tp]
        assert offsets == sorted(offsets)
    if all(ts == sorted(ts) for ts in times.values()):
        stamps = [r.timestamp for _, r in merged]
        assert stamps == sorted(stamps)
