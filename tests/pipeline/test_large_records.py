"""A record of any size is dead-lettered in a Kafka record that fits: its payload is cut
to `MAX_DEAD_LETTER_PAYLOAD` and its reason names the rest (its size, digest and place).
A dead letter too large for the topic failed its delivery, which stops the worker, and
the batch, read again after the restart, stopped it again."""

from __future__ import annotations

import asyncio
import hashlib
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams.kafka.topics import TopicNames
from streams.pipeline import worker
from streams.serde.relay import decode_relayed, is_relayed
from streams.serde.wire import decode_output
from tests import builders as b
from tests.pipeline.worker_fakes import WallClock, input_record, make_pipeline, subject_on

NAMES = TopicNames()


@pytest.mark.parametrize("direct", [False, True], ids=["route", "direct"])
def test_a_huge_record_is_one_dead_letter_that_fits(direct: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    clock = WallClock(b.T0 + 10_000)
    monkeypatch.setattr(worker, "_now_ms", clock)
    huge = b"\x00" * (3 * worker.MAX_DEAD_LETTER_PAYLOAD)
    topic = NAMES.inputs["ConsentChanged"]

    # In direct mode a subject of partition 0 stays there, one of partition 1 is forwarded.
    here, there = subject_on(0, 2), subject_on(1, 2)

    async def scenario() -> tuple[list[object], Any]:
        pipeline = make_pipeline(clock, partitions=2, direct=direct)
        tps = [TP(t, n) for t in pipeline.input_topics for n in range(2)]
        tps += [TP(NAMES.correlate, 0), TP(NAMES.correlate, 1)]
        pipeline.consumer.assigned = set(tps)
        pipeline.assigned(tps)
        handle = pipeline.direct if direct else pipeline.route
        await handle(TP(topic, 0), [
            SimpleNamespace(topic=topic, partition=0, offset=0, key=None, value=huge,
                            timestamp=clock.now),
            input_record(topic, 0, 1, b.consent(0, subject_id=here, event_id="c-here"),
                         clock.now),
            input_record(topic, 0, 2, b.consent(0, subject_id=there, event_id="c-there"),
                         clock.now)])
        return [decode_output(r.value) for (written, _), log in pipeline.producer.logs.items()
                if written == NAMES.dead_letters for r in log], pipeline

    letters, pipeline = asyncio.run(scenario())
    # The records after it are handled as they would be without it: forwarded to their
    # subject's partition, or (direct mode, the subject of this partition) decided here.
    forwarded = {(number, decode_relayed(r.value).event_id)
                 for (written, number), log in pipeline.producer.logs.items()
                 if written == NAMES.correlate for r in log if is_relayed(r.value)}
    if direct:
        assert forwarded == {(1, "c-there")}
        assert pipeline.partitions[0].engine.store.subject(here).seen == {"c-here": b.T0}
    else:
        assert forwarded == {(0, "c-here"), (1, "c-there")}
    assert len(letters) == 1
    letter = letters[0]
    assert letter.payload == huge[:worker.MAX_DEAD_LETTER_PAYLOAD]  # type: ignore[attr-defined]
    reason = letter.reason  # type: ignore[attr-defined]
    assert f"the first {worker.MAX_DEAD_LETTER_PAYLOAD} of {len(huge)} bytes" in reason
    assert hashlib.sha256(huge).hexdigest() in reason and f"{topic}[0]@0" in reason
