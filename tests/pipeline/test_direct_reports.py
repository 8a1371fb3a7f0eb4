"""Direct mode: an input partition's clock moves over a batch only once the batch's
outputs and the state it changed are delivered, in the order the batches were read.

Else a marker covering the batch could be in the correlate topic while the state is not
in the changelog; after a crash the marker could be read again before the batch is, and
decide without its events (route mode forwards the events ahead of the marker instead).
"""

from __future__ import annotations

import asyncio
from typing import Any

from streams.kafka.faust_adapter import BatchCommit
from streams.pipeline import worker
from streams.pipeline.watermarks import ACTIVE, ENDED, SourceClocks

SOURCE = "events.consent:0"


def _pipeline() -> Any:
    pipeline: Any = object.__new__(worker._Pipeline)
    pipeline.clocks = SourceClocks(allowed_lateness_ms=0, idle_timeout_ms=60_000)
    pipeline.clocks.assign([SOURCE], 0)
    pipeline._not_durable = {}
    pipeline._durable_tail = {}
    pipeline._epoch = {}
    pipeline.markers = 0

    async def send_markers(always: bool = False) -> None:
        pipeline.markers += 1

    pipeline.send_markers = send_markers
    pipeline.position = lambda tp: (10, 10)  # read to the end
    return pipeline


def _report(pipeline: Any) -> Any:
    """(watermark, state) of the source in the next marker."""
    return pipeline.clocks.report(1, pipeline._caught_up).get(SOURCE)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_batch_is_reported_once_its_outputs_and_its_state_are_delivered() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        pipeline = _pipeline()
        outputs, changelog = loop.create_future(), loop.create_future()
        pipeline._report_when_durable(SOURCE, BatchCommit(outputs, changelog), [(1000, False)])
        assert pipeline._caught_up(SOURCE) is False  # read, not durable: not idle either
        outputs.set_result(None)
        await _settle()
        assert _report(pipeline) == (None, ACTIVE)
        changelog.set_result(None)
        await _settle()
        assert _report(pipeline) == (1000, ACTIVE)
        assert pipeline._caught_up(SOURCE) is True

    asyncio.run(scenario())


def test_batches_are_reported_in_the_order_they_were_read() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        pipeline = _pipeline()
        first, second = loop.create_future(), loop.create_future()
        pipeline._report_when_durable(SOURCE, BatchCommit(first), [(1000, False)])
        pipeline._report_when_durable(SOURCE, BatchCommit(second), [(None, True)])
        second.set_result(None)
        await _settle()
        assert _report(pipeline) == (None, ACTIVE) and pipeline.markers == 0
        first.set_result(None)
        await _settle()
        assert _report(pipeline) == (1000, ENDED)
        assert pipeline.markers == 1  # an end of input is reported at once

    asyncio.run(scenario())


def test_a_batch_whose_state_is_not_delivered_is_never_reported() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        pipeline = _pipeline()
        outputs, changelog = loop.create_future(), loop.create_future()
        pipeline._report_when_durable(SOURCE, BatchCommit(outputs, changelog), [(1000, False)])
        outputs.set_result(None)
        changelog.set_exception(OSError("the broker went away"))
        await _settle()
        assert _report(pipeline)[0] is None

    asyncio.run(scenario())


def test_a_batch_of_a_revoked_partition_is_not_reported() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        pipeline = _pipeline()
        pipeline.input_topics = ["events.consent"]
        pipeline.settings = type("S", (), {"topics": type("T", (), {"correlate": "c"})()})()
        pipeline._earliest = {}
        done = loop.create_future()
        pipeline._report_when_durable(SOURCE, BatchCommit(done), [(1000, False)])
        pipeline.revoked([type("TP", (), {"topic": "events.consent", "partition": 0})()])
        pipeline.clocks.assign([SOURCE], 0)  # assigned again, in a new generation
        done.set_result(None)
        await _settle()
        assert _report(pipeline) == (None, ACTIVE)

    asyncio.run(scenario())


def test_an_idle_partition_moves_by_when_its_markers_were_sent_not_when_they_are_read() -> None:
    """Read again later (a restart, a new owner), the same markers give the same watermarks."""
    from streams.pipeline.watermarks import IDLE, SourceWatermarks

    def watermarks(read_at: list[int]) -> list[int | None]:
        marks = SourceWatermarks(lambda: [SOURCE])
        found = []
        for sent_at, _ in zip((1_000, 2_000, 5_000), read_at, strict=True):
            marks.update({SOURCE: (100, IDLE)})
            marker = type("Record", (), {"timestamp": sent_at})()
            found.append(marks.watermark(0, worker._sent_at(marker)))
        return found

    assert watermarks([1_000, 2_000, 5_000]) == watermarks([90_000, 90_001, 90_002]) \
        == [100, 1_100, 4_100]
    assert worker._sent_at(type("Record", (), {"timestamp": -1})()) > 0
