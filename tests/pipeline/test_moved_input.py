"""An input partition that moves to another worker after its end of input was read there:
the new reader has read nothing of it, and it is as its previous reader left it (spec:
an end-of-input marker moves the watermark to the end of everything before it; an idle
input takes part again from its next record). Reported active by its new reader, it held
every correlate partition at its last watermark until the idle timeout (30 s), which a
rebalance early in a backlog turned into a 30 s wait for the last decisions."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams.kafka.topics import TopicNames
from streams.pipeline import worker
from streams.pipeline.control import encode_control
from streams.pipeline.watermarks import ACTIVE, ENDED, decode_marker, is_marker
from tests import builders as b
from tests.pipeline.worker_fakes import FakeProducer, WallClock, input_record, make_pipeline

SECOND = 1000
NAMES = TopicNames()
TOGGLES = TP(NAMES.inputs["FeatureToggled"], 0)
REQUESTS = TP(NAMES.inputs["EnrichmentRequested"], 0)
CORRELATE = TP(NAMES.correlate, 0)
TOGGLES_ID = f"{TOGGLES.topic}:0"


def _end(tp: TP, offset: int, clock: WallClock) -> Any:
    return SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset, key=None,
                           value=encode_control(), timestamp=clock.now)


async def _ended_then_moved(clock: WallClock) -> tuple[Any, Any, FakeProducer]:
    """X reads every input: the end of each but REQUESTS, then (TOGGLES moved to Y,
    which starts after its end marker: committed) a request on REQUESTS and its end. Y
    reads the correlate partition."""
    shared = FakeProducer(clock)
    x = make_pipeline(clock, partitions=1, producer=shared)
    y = make_pipeline(clock, partitions=1, producer=shared)
    inputs = [TP(topic, 0) for topic in x.input_topics]
    x.consumer.assigned = set(inputs)
    x.assigned(inputs)
    y.consumer.assigned = {CORRELATE}
    y.assigned([CORRELATE])
    for tp in inputs:
        if tp != REQUESTS:
            x.consumer.high[tp] = x.consumer.next[tp] = 1
            await x.route(tp, [_end(tp, 0, clock)])
    x.consumer.assigned.discard(TOGGLES)
    x.revoked([TOGGLES])
    y.consumer.assigned.add(TOGGLES)
    y.assigned([TOGGLES])
    y.consumer.high[TOGGLES] = y.consumer.next[TOGGLES] = 1
    clock.now += 2 * SECOND
    for pipeline in (x, y):
        await pipeline.send_markers(always=True)
    x.consumer.high[REQUESTS] = x.consumer.next[REQUESTS] = 2
    await x.route(REQUESTS, [input_record(REQUESTS.topic, 0, 0, b.requested(
        10 * SECOND, event_id="r-1"), clock.now), _end(REQUESTS, 1, clock)])
    return x, y, shared


def _findings(producer: FakeProducer) -> list[Any]:
    return [r for (topic, _), log in producer.logs.items() if topic == NAMES.findings
            for r in log]


def test_an_ended_input_that_moved_stays_ended_until_its_next_record(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = WallClock(b.T0 + 3600 * SECOND)
    monkeypatch.setattr(worker, "_now_ms", clock)

    async def scenario() -> Any:
        _, y, shared = await _ended_then_moved(clock)
        commit = await y.correlate_batch(CORRELATE, list(shared.logs[(CORRELATE.topic, 0)]))
        await commit.outputs
        return y, shared

    y, shared = asyncio.run(scenario())
    # the request was decided at once, not after the idle timeout
    assert [r.key for r in _findings(shared)] and y.partitions[0].engine.watermark > b.T0
    assert y.partitions[0].sources.states()[TOGGLES_ID] == ENDED


def test_the_next_record_of_a_moved_input_is_preceded_by_a_report_that_it_is_active(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = WallClock(b.T0 + 3600 * SECOND)
    monkeypatch.setattr(worker, "_now_ms", clock)

    async def scenario() -> Any:
        _, y, shared = await _ended_then_moved(clock)
        log = shared.logs[(CORRELATE.topic, 0)]
        before = len(log)
        y.consumer.high[TOGGLES] = 2
        y._markers_sent = float("inf")  # no marker after the batch: only the rejoin's
        await y.route(TOGGLES, [input_record(TOGGLES.topic, 0, 1, b.toggle(
            20 * SECOND, event_id="t-1"), clock.now)])
        return [decode_marker(r.value).get(TOGGLES_ID) if is_marker(r.value) else "event"
                for r in log[before:]]

    # Y's marker, before the toggle, says it is active again
    assert asyncio.run(scenario()) == [(None, ACTIVE), "event"]

