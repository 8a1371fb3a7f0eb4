"""Direct mode: an input partition whose last records were written in a transaction ends
with a marker (a control record no consumer is handed). The consumer passes over it once
the records before it were handed over, and the source is then read to its end and goes
idle. The idle report must say how far the source was read counting the marker: said
without it, the partition's committed offset (past the marker) looked like records read
after the report, which made the source active again for good, and the watermark waited
for its next record (a flaky Kafka test: it failed whenever the commit came before the
decision)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.types import TP

from streams.kafka.topics import TopicNames
from streams.pipeline import worker
from tests import builders as b
from tests.pipeline.worker_fakes import WallClock, assigned_direct_pipeline, input_record

SECOND = 1000
NAMES = TopicNames()


@pytest.mark.parametrize("committed", [False, True])
def test_a_source_ending_with_a_transaction_marker_goes_idle_and_its_request_is_decided(
        monkeypatch: pytest.MonkeyPatch, committed: bool) -> None:
    clock = WallClock(b.T0 + 3600 * SECOND)
    monkeypatch.setattr(worker, "_now_ms", clock)

    async def scenario() -> Any:
        pipeline, correlate = assigned_direct_pipeline(clock)
        consumer = pipeline.consumer
        requests = TP(NAMES.inputs["EnrichmentRequested"], 0)
        request = b.requested(3600 * SECOND - 10 * SECOND, event_id="r-1")
        await pipeline.direct(requests, [input_record(requests.topic, 0, 0, request,
                                                      clock.now)])
        # The transaction's marker at offset 1: the consumer passed over it.
        consumer.high[requests] = 2
        consumer.next[requests] = 2
        if committed:  # the ordered commit acknowledged it before the next report
            consumer.committed[requests] = 2
        read = 0
        for _ in range(8):  # idle, then the wall clock moves the watermark past the
            clock.now += 60 * SECOND  # notice grace (5 min)
            await pipeline.send_markers(always=True)
            log = list(pipeline.producer.logs[(NAMES.correlate, 0)])
            commit = await pipeline.correlate_batch(correlate, log[read:])
            read = len(log)
            await commit.outputs
        return pipeline

    pipeline = asyncio.run(scenario())
    state = pipeline.partitions[0].engine.store.subject(b.requested(0)["subject_id"])
    assert not state.triggers["r-1"].pending
    findings = [r for (topic, _), log in pipeline.producer.logs.items()
                if topic == NAMES.findings for r in log]
    assert findings
