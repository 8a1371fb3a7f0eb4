"""Direct mode: an input partition's end-of-input marker travels through the correlate
topic, while the records after it are read at once. A record that came after the end
marker rejoins its input: the marker, applied later, must not end it again and decide
that record (spec: the marker moves the watermark to the end of everything *before* it;
a record after it takes part again)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams.kafka.topics import TopicNames
from streams.pipeline import worker
from streams.pipeline.control import encode_control
from tests import builders as b
from tests.pipeline.worker_fakes import WallClock, assigned_direct_pipeline, input_record

SECOND = 1000
NAMES = TopicNames()


def _end(topic: str, offset: int, clock: WallClock) -> Any:
    return SimpleNamespace(topic=topic, partition=0, offset=offset, key=None,
                           value=encode_control(), timestamp=clock.now)


def test_a_record_after_an_end_marker_is_not_decided_by_that_marker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = WallClock(b.T0 + 3600 * SECOND)
    monkeypatch.setattr(worker, "_now_ms", clock)

    async def scenario() -> Any:
        pipeline, correlate = assigned_direct_pipeline(clock)
        requests = NAMES.inputs["EnrichmentRequested"]
        r1 = b.requested(100 * SECOND, event_id="r-1")
        await pipeline.direct(TP(requests, 0), [input_record(requests, 0, 0, r1, clock.now)])
        for topic in pipeline.input_topics:  # every other input ends
            if topic != requests:
                handle = pipeline.direct if topic in pipeline.direct_topics else pipeline.route
                await handle(TP(topic, 0), [_end(topic, 0, clock)])
        # The requests end, and at once a request of the same subject comes after the end.
        r2 = b.requested(1000 * SECOND, event_id="r-2")
        await pipeline.direct(TP(requests, 0), [
            _end(requests, 1, clock), input_record(requests, 0, 2, r2, clock.now)])
        # The markers come back through the correlate topic, the end marker first.
        log = list(pipeline.producer.logs[(NAMES.correlate, 0)])
        commit = await pipeline.correlate_batch(correlate, log)
        await commit.outputs
        state = pipeline.partitions[0].engine.store.subject(r2["subject_id"])
        pending = {event_id: bool(state.triggers[event_id].pending)
                   for event_id in ("r-1", "r-2")}
        # The next marker reports the requests' watermark, r-2's time - lateness: r-1
        # is decided, r-2 still waits for its watermark, as replay's would.
        await pipeline.send_markers(always=True)
        commit = await pipeline.correlate_batch(
            correlate, list(pipeline.producer.logs[(NAMES.correlate, 0)])[len(log):])
        await commit.outputs
        return pending, {event_id: bool(state.triggers[event_id].pending)
                         for event_id in ("r-1", "r-2")}, pipeline

    before, after, pipeline = asyncio.run(scenario())
    assert before == {"r-1": True, "r-2": True}  # the end marker decided neither
    assert after == {"r-1": False, "r-2": True}
    findings = [r for (topic, _), log in pipeline.producer.logs.items()
                if topic == NAMES.findings for r in log]
    assert findings  # r-1's
