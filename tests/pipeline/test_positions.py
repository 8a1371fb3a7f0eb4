"""Positions of decisions taken by a correlate partition that reads several inputs
(streams/pipeline/positions.py): after a recovery, exactly the findings decided at or
after each input's committed offset are sent again."""

from __future__ import annotations

from streams.engine.core import Engine
from streams.engine.state import DictStore
from streams.model.validate import event_from_record
from streams.pipeline.positions import position_of, resend_after
from tests.builders import T0, requested


def test_a_position_keeps_the_correlate_offset_as_it_is() -> None:
    assert position_of(0, 1234) == 1234
    assert position_of(2, 7) > position_of(1, 10**12) > position_of(0, 10**13)


def test_each_input_is_compared_with_its_own_committed_offset() -> None:
    again = resend_after({0: 100, 1: 5, 2: 0})
    assert again(position_of(0, 100)) and not again(position_of(0, 99))
    assert again(position_of(1, 5)) and not again(position_of(1, 4))
    assert again(position_of(2, 0))
    assert again(position_of(3, 0))  # a source it does not know: sent again
    assert not again(-1)  # never decided on a worker


def test_decided_since_sends_again_the_decisions_at_or_after_each_committed_offset() -> None:
    engine = Engine(DictStore(), external_watermark=True)
    # Three triggers from two inputs (source 1 at offsets 3 and 8, source 2 at offset 4),
    # each decided while the record at that position was processed.
    triggers = [(requested(0, subject_id="u-a", event_id="e-a"), position_of(1, 3)),
                (requested(0, subject_id="u-b", event_id="e-b"), position_of(1, 8)),
                (requested(0, subject_id="u-c", event_id="e-c"), position_of(2, 4))]
    decided: dict[str, str] = {}
    for record, at in triggers:
        engine.process(event_from_record(record), position=at)
        for finding in engine.advance_to(T0 + 1 + len(decided), position=at):
            decided[finding.finding_id] = record["event_id"]
    assert set(decided.values()) == {"e-a", "e-b", "e-c"}

    def resent(committed: dict[int, int]) -> set[str]:
        return {decided[f.finding_id]
                for f in engine.decided_since(0, resend_after(committed))}

    assert resent({1: 4, 2: 5}) == {"e-b"}
    assert resent({1: 9, 2: 4}) == {"e-c"}
    assert resent({1: 3, 2: 0}) == {"e-a", "e-b", "e-c"}
    assert resent({1: 9, 2: 5}) == set()
