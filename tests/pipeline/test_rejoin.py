"""An input partition reported idle takes part in the watermark again from its next
record (spec: "Event time, lateness and absence"), also for a correlate partition that
reads a marker of another worker before this worker's next one."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams.kafka.topics import TopicNames
from streams.pipeline import worker
from tests import builders as b
from tests.pipeline.worker_fakes import (
    FakeProducer,
    WallClock,
    input_record,
    make_pipeline,
    subject_on,
)

SECOND = 1000
NAMES = TopicNames()


def test_a_consent_after_an_idle_input_rejoined_is_not_late(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = WallClock(b.T0 + 10 * SECOND)
    monkeypatch.setattr(worker, "_now_ms", clock)

    async def scenario() -> Any:
        shared = FakeProducer(clock)  # the correlate topic both workers write to
        x = make_pipeline(clock, producer=shared)  # reads requests:0 and consents:0
        y = make_pipeline(clock, producer=shared)  # reads the rest, and correlate:*
        correlate = NAMES.correlate
        requests = TP(NAMES.inputs["EnrichmentRequested"], 0)
        consents = TP(NAMES.inputs["ConsentChanged"], 0)
        joins = TP(NAMES.inputs["ParticipantJoined"], 0)
        inputs = [TP(topic, n) for topic in x.input_topics for n in range(2)]
        x.consumer.assigned = {requests, consents}
        x.assigned([requests, consents])
        rest = [tp for tp in inputs if tp not in (requests, consents)]
        y.consumer.assigned = set(rest) | {TP(correlate, 0), TP(correlate, 1)}
        y.assigned(rest)
        s1 = subject_on(1, 2)
        # joins:0 has an event at T0 and stays busy; every other input is read and quiet
        # for the idle timeout
        y.consumer.high[joins] = y.consumer.next[joins] = 1
        await y.route(joins, [input_record(joins.topic, 0, 0, b.joined(
            0, subject_id="j0", event_id="j-0"), clock.now)])
        clock.now += 31 * SECOND
        y.clocks.observe(f"{joins.topic}:0", b.T0, clock.now)
        for pipeline in (x, y):
            await pipeline.send_markers(always=True)
        # requests:0 rejoins with s1's request at T0+10s; X's marker after it is not due
        # yet (it sent one less than 0.1 s ago)
        x._markers_sent = time.monotonic()
        x.consumer.high[requests] = x.consumer.next[requests] = 1
        await x.route(requests, [input_record(requests.topic, 0, 0, b.requested(
            10 * SECOND, subject_id=s1, event_id="r-1"), clock.now)])
        # Y: joins:0 moves on to T0+60s, its marker after its records
        y.consumer.high[joins] = y.consumer.next[joins] = 2
        y._markers_sent = 0.0
        await y.route(joins, [input_record(joins.topic, 0, 1, b.joined(
            60 * SECOND, subject_id="j1", event_id="j-1"), clock.now)])
        # consents:0 rejoins with s1's grant at T0+5s: the watermark is min(requests at
        # T0+10s - lateness, joins at T0+30s) = T0-20s, so it is not late
        clock.now += 200
        x.consumer.high[consents] = x.consumer.next[consents] = 1
        x._markers_sent = 0.0
        await x.route(consents, [input_record(consents.topic, 0, 0, b.consent(
            5 * SECOND, subject_id=s1, event_id="c-grant"), clock.now)])
        commit = await y.correlate_batch(TP(correlate, 1), list(shared.logs[(correlate, 1)]))
        await commit.outputs
        return y, shared

    y, shared = asyncio.run(scenario())
    assert y.partitions[1].engine.stats.late == 0
    sent = [r for (topic, _), log in shared.logs.items()
            if topic in (NAMES.findings, NAMES.amendments) for r in log]
    assert sent == []


def test_direct_mode_a_rejoining_input_holds_back_its_own_partition_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its partition applies the records before it reads the markers back: it learns from
    the batch itself that the input takes part again."""
    clock = WallClock(b.T0 + 10 * SECOND)
    monkeypatch.setattr(worker, "_now_ms", clock)

    async def scenario() -> Any:
        pipeline = make_pipeline(clock, direct=True)
        correlate = NAMES.correlate
        tps = [TP(topic, n) for topic in pipeline.input_topics for n in range(2)]
        tps += [TP(correlate, 0), TP(correlate, 1)]
        pipeline.consumer.assigned = set(tps)
        pipeline.assigned(tps)
        requests = TP(NAMES.inputs["EnrichmentRequested"], 1)
        s1 = subject_on(1, 2)
        pipeline.consumer.high[requests] = pipeline.consumer.next[requests] = 1
        await pipeline.direct(requests, [input_record(requests.topic, 1, 0, b.requested(
            0, subject_id=s1, event_id="r-0"), clock.now)])
        clock.now += 31 * SECOND
        await pipeline.send_markers(always=True)
        log = pipeline.producer.logs[(correlate, 1)]
        commit = await pipeline.correlate_batch(TP(correlate, 1), list(log))
        await commit.outputs
        source = f"{requests.topic}:1"
        idle_before = pipeline.partitions[1].sources._states[source]
        pipeline._markers_sent = time.monotonic()
        pipeline.consumer.high[requests] = 2
        await pipeline.direct(requests, [input_record(requests.topic, 1, 1, b.requested(
            40 * SECOND, subject_id=s1, event_id="r-1"), clock.now)])
        return idle_before, pipeline.partitions[1].sources._states[source]

    before, after = asyncio.run(scenario())
    assert (before, after) == ("idle", "active")


def test_a_batch_of_poison_only_does_not_bring_an_idle_input_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Reported active with no event to observe, it would hold every partition at its
    old mark (or none) until it went idle again."""
    clock = WallClock(b.T0 + 10 * SECOND)
    monkeypatch.setattr(worker, "_now_ms", clock)

    async def scenario() -> Any:
        pipeline = make_pipeline(clock)
        requests = TP(NAMES.inputs["EnrichmentRequested"], 0)
        pipeline.consumer.assigned = {requests}
        pipeline.assigned([requests])
        pipeline.consumer.high[requests] = pipeline.consumer.next[requests] = 1
        await pipeline.route(requests, [input_record(requests.topic, 0, 0, b.requested(
            0, event_id="r-0"), clock.now)])
        clock.now += 31 * SECOND
        await pipeline.send_markers(always=True)
        source = f"{requests.topic}:0"
        before = pipeline._last_report[source][1]
        poison = SimpleNamespace(topic=requests.topic, partition=0, offset=1, key=None,
                                 value=b"\xc3\x01not avro", timestamp=clock.now)
        pipeline.consumer.high[requests] = 2
        pipeline._markers_sent = time.monotonic()
        await pipeline.route(requests, [poison])
        return before, pipeline.clocks.report(clock.now, lambda _: True)[source][1]

    assert asyncio.run(scenario()) == ("idle", "idle")
