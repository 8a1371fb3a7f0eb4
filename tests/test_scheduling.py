"""The route stage's scheduler: event-time order across input partitions, none lost."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from streams.pipeline.scheduling import event_time_scheduler


@dataclass(frozen=True)
class _TP:
    topic: str
    partition: int


@dataclass(frozen=True)
class _Record:
    timestamp: int
    offset: int
    headers: tuple[tuple[str, bytes], ...] = ()


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


INPUTS = {"in.a", "in.b", "in.c"}


def _scheduler(clock: _Clock) -> object:
    return event_time_scheduler(INPUTS, idle_ms=500)(clock)


@given(st.lists(st.tuples(st.sampled_from(sorted(INPUTS)),
                          st.lists(st.integers(0, 10), min_size=1, max_size=8)),
                max_size=12))
def test_every_record_comes_out_once_in_partition_order(
        fetches: list[tuple[str, list[int]]]) -> None:
    clock = _Clock()
    scheduler = _scheduler(clock)
    offsets: dict[str, int] = {}
    out = []
    for topic, gaps in fetches:
        tp = _TP(topic, 0)
        batch = []
        for gap in gaps:
            offsets[topic] = offsets.get(topic, -1) + 1
            batch.append(_Record(offsets[topic] * 10 + gap, offsets[topic]))
        clock.now += 0.1
        out += list(scheduler.iterate({tp: batch}))  # type: ignore[attr-defined]
    clock.now += 10  # everything idle: the rest comes out
    out += list(scheduler.iterate({}))  # type: ignore[attr-defined]
    assert sorted((tp.topic, r.offset) for tp, r in out) == sorted(
        (topic, o) for topic, last in offsets.items() for o in range(last + 1))
    for topic in offsets:
        mine = [r.offset for tp, r in out if tp.topic == topic]
        assert mine == sorted(mine)


def test_a_sparse_topic_does_not_run_ahead_of_a_busy_one() -> None:
    clock = _Clock()
    scheduler = _scheduler(clock)
    busy, sparse = _TP("in.a", 0), _TP("in.b", 0)
    toggles = [_Record(t, i) for i, t in enumerate((5, 500, 5000))]
    first = list(scheduler.iterate({busy: [_Record(t, t) for t in range(0, 100, 10)],  # type: ignore[attr-defined]
                                    sparse: toggles}))
    stamps = [r.timestamp for _, r in first]
    assert stamps == sorted(stamps)
    assert max(stamps) <= 90  # the toggles at 500 and 5000 wait for the busy topic
    clock.now += 0.1
    second = list(scheduler.iterate({busy: [_Record(t, t) for t in range(100, 1000, 10)]}))  # type: ignore[attr-defined]
    assert [r.timestamp for tp, r in second if tp == sparse] == [500]


def test_other_topics_pass_straight_through() -> None:
    scheduler = _scheduler(_Clock())
    tp = _TP("correlate", 3)
    records = [_Record(9, 0), _Record(1, 1)]
    assert list(scheduler.iterate({tp: records})) == [(tp, records[0]), (tp, records[1])]  # type: ignore[attr-defined]


def test_an_empty_partition_with_more_data_in_kafka_is_waited_for() -> None:
    clock = _Clock()
    highwater = {_TP("in.a", 0): 100, _TP("in.b", 0): 3}
    scheduler = event_time_scheduler(INPUTS, idle_ms=500, highwater=highwater.get)(clock)
    busy, sparse = _TP("in.a", 0), _TP("in.b", 0)
    out = list(scheduler.iterate({busy: [_Record(t, t) for t in range(10)],
                                  sparse: [_Record(t * 100, t) for t in range(3)]}))
    assert [r.timestamp for _, r in out] == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    clock.now += 5  # long after idle_ms: "in.a" still has 90 records in Kafka
    assert list(scheduler.iterate({})) == []
    out = list(scheduler.iterate({busy: [_Record(t, t) for t in range(10, 100)]}))
    # "in.a" is caught up now (fetched to its high watermark), but not idle yet
    assert [r.timestamp for tp, r in out if tp == sparse] == []
    clock.now += 1
    rest = list(scheduler.iterate({}))
    assert [r.timestamp for _, r in rest] == [100, 200]


def test_the_occurred_at_header_wins_over_the_kafka_timestamp() -> None:
    from streams.pipeline.scheduling import EVENT_TIME_HEADER, event_time

    stamped = _Record(999, 0, ((EVENT_TIME_HEADER, (-5).to_bytes(8, "big", signed=True)),))
    assert event_time(stamped) == -5
    assert event_time(_Record(999, 0)) == 999
