"""A record of any size is dead-lettered in a Kafka record that fits: its payload is cut
to `MAX_DEAD_LETTER_PAYLOAD` and its reason names the rest (its size, digest and place).
A dead letter too large for the topic failed its delivery, which stops the worker, and
the batch, read again after the restart, stopped it again."""

from __future__ import annotations

import asyncio
import hashlib
from types import SimpleNamespace

import pytest
from faust.types import TP

from streams.kafka.topics import TopicNames
from streams.pipeline import worker
from streams.serde.wire import decode_output
from tests import builders as b
from tests.pipeline.worker_fakes import WallClock, input_record, make_pipeline

NAMES = TopicNames()


@pytest.mark.parametrize("direct", [False, True], ids=["route", "direct"])
def test_a_huge_record_is_one_dead_letter_that_fits(direct: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    clock = WallClock(b.T0 + 10_000)
    monkeypatch.setattr(worker, "_now_ms", clock)
    huge = b"\x00" * (3 * worker.MAX_DEAD_LETTER_PAYLOAD)
    topic = NAMES.inputs["ConsentChanged"]

    async def scenario() -> list[object]:
        pipeline = make_pipeline(clock, partitions=2, direct=direct)
        tps = [TP(t, n) for t in pipeline.input_topics for n in range(2)]
        tps += [TP(NAMES.correlate, 0), TP(NAMES.correlate, 1)]
        pipeline.consumer.assigned = set(tps)
        pipeline.assigned(tps)
        handle = pipeline.direct if direct else pipeline.route
        await handle(TP(topic, 0), [
            SimpleNamespace(topic=topic, partition=0, offset=0, key=None, value=huge,
                            timestamp=clock.now),
            input_record(topic, 0, 1, b.consent(0, event_id="c-after"), clock.now)])
        return [decode_output(r.value) for (written, _), log in pipeline.producer.logs.items()
                if written == NAMES.dead_letters for r in log]

    letters = asyncio.run(scenario())
    assert len(letters) == 1
    letter = letters[0]
    assert letter.payload == huge[:worker.MAX_DEAD_LETTER_PAYLOAD]  # type: ignore[attr-defined]
    reason = letter.reason  # type: ignore[attr-defined]
    assert f"the first {worker.MAX_DEAD_LETTER_PAYLOAD} of {len(huge)} bytes" in reason
    assert hashlib.sha256(huge).hexdigest() in reason and f"{topic}[0]@0" in reason
