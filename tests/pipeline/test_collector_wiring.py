"""The worker freezes what each batch of a correlate partition leaves alive
(`StateCollector.keep`, streams/runtime.py), in route and direct mode."""

from __future__ import annotations

import asyncio

import pytest
from faust.types import TP

from streams.kafka.topics import TopicNames
from streams.pipeline import worker
from tests import builders as b
from tests.pipeline.worker_fakes import WallClock, input_record, make_pipeline, subject_on

NAMES = TopicNames()


class _Spy:
    def __init__(self) -> None:
        self.kept = 0

    def keep(self) -> None:
        self.kept += 1


@pytest.mark.parametrize("direct", [False, True], ids=["route", "direct"])
def test_each_batch_of_a_correlate_partition_ends_with_keep(
        direct: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = WallClock(b.T0)
    monkeypatch.setattr(worker, "_now_ms", clock)

    async def scenario() -> int:
        pipeline = make_pipeline(clock, partitions=1, direct=direct)
        spy = pipeline._collector = _Spy()
        requests = TP(NAMES.inputs["EnrichmentRequested"], 0)
        correlate = TP(NAMES.correlate, 0)
        pipeline.consumer.assigned = {requests, correlate}
        pipeline.assigned([requests, correlate])
        record = input_record(requests.topic, 0, 0, b.requested(
            0, subject_id=subject_on(0, 1), event_id="r-1"), clock.now)
        handle = pipeline.direct if direct else pipeline.route
        await handle(requests, [record])
        if not direct:
            log = list(pipeline.producer.logs[(correlate.topic, 0)])
            await pipeline.correlate_batch(correlate, log)
        return spy.kept

    assert asyncio.run(scenario()) == 1
