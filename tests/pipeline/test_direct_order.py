"""A correlate partition reads the events another input partition forwards to it before the
marker that covers them, in direct mode as in route mode: otherwise its watermark passes
them first, a trigger is decided without them (a wrong finding) and they arrive late."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams.kafka.topics import TopicNames
from streams.pipeline import worker
from streams.pipeline.control import encode_control
from streams.pipeline.watermarks import ACTIVE, ENDED, decode_marker, is_marker, source_id
from streams.serde.relay import decode_relayed, is_relayed
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


def _reading_everything(clock: WallClock, producer: FakeProducer | None = None,
                        direct: bool = False) -> Any:
    """A pipeline of two partitions that reads every input partition and correlate's."""
    pipeline = make_pipeline(clock, partitions=2, direct=direct, producer=producer)
    tps = [TP(topic, n) for topic in pipeline.input_topics for n in range(2)]
    tps += [TP(NAMES.correlate, 0), TP(NAMES.correlate, 1)]
    pipeline.consumer.assigned = set(tps)
    pipeline.assigned(tps)
    return pipeline


@pytest.mark.parametrize("direct", [False, True], ids=["route", "direct"])
def test_a_forwarded_consent_reaches_its_partition_before_the_marker_that_covers_it(
        direct: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = WallClock(b.T0 + 10 * SECOND)
    monkeypatch.setattr(worker, "_now_ms", clock)

    async def scenario() -> tuple[list[str], Any]:
        pipeline = _reading_everything(clock, direct=direct)
        handle = pipeline.direct if direct else pipeline.route
        consumer = pipeline.consumer
        correlate = NAMES.correlate
        s1 = subject_on(1, 2)
        requests = TP(NAMES.inputs["EnrichmentRequested"], 1)
        consents = TP(NAMES.inputs["ConsentChanged"], 0)
        # s1's request at T0+1s; then every input read, quiet for the idle timeout
        consumer.high[requests] = consumer.next[requests] = 1
        await handle(requests, [input_record(requests.topic, 1, 0, b.requested(
            1 * SECOND, subject_id=s1, event_id="r-1"), clock.now)])
        clock.now += 31 * SECOND
        await pipeline.send_markers(always=True)
        # consent-changed:0 (not keyed by subject): s1's grant at T0, forwarded to partition
        # 1, then another subject's consent at T0+60s, which stays on partition 0
        consumer.high[consents] = consumer.next[consents] = 2
        pipeline._markers_sent = 0.0
        await handle(consents, [
            input_record(consents.topic, 0, 0, b.consent(0, subject_id=s1,
                                                          event_id="c-grant"), clock.now),
            input_record(consents.topic, 0, 1, b.consent(60 * SECOND,
                                                          subject_id=subject_on(0, 2),
                                                          event_id="c-other"), clock.now)])
        log = pipeline.producer.logs[(correlate, 1)]
        order = ["marker" if is_marker(r.value) else decode_relayed(r.value).event_id
                 for r in log if is_marker(r.value) or is_relayed(r.value)]
        commit = await pipeline.correlate_batch(TP(correlate, 1), list(log))
        await commit.outputs
        return order, pipeline

    order, pipeline = asyncio.run(scenario())
    grant = order.index("c-grant")
    assert "marker" in order[grant:], order
    findings = [r for (topic, _), log in pipeline.producer.logs.items()
                if topic == NAMES.findings for r in log]
    amendments = [r for (topic, _), log in pipeline.producer.logs.items()
                  if topic == NAMES.amendments for r in log]
    assert findings == [] and amendments == []
    assert pipeline.partitions[1].engine.stats.late == 0


class _FirstSendWaits(FakeProducer):
    """The producer of a batch whose first send waits (aiokafka's `send_batch` waits while
    its partition has a batch not yet sent) until `release` is set."""

    def __init__(self, clock: WallClock) -> None:
        super().__init__(clock)
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def send_batch(self, builder: Any, topic: str, partition: int) -> Any:
        if not self.waiting.is_set():
            self.waiting.set()
            await self.release.wait()
        return await super().send_batch(builder, topic, partition)


CONSENTS = TP(NAMES.inputs["ConsentChanged"], 0)
CONSENTS_SOURCE = source_id(CONSENTS.topic, 0)


def _end_record(offset: int, clock: WallClock) -> Any:
    return SimpleNamespace(topic=CONSENTS.topic, partition=0, offset=offset, key=None,
                           value=encode_control(), timestamp=clock.now)


def _grant(offset: int, clock: WallClock) -> Any:
    """s1's grant on consent-changed:0, forwarded to correlate partition 1 in both modes."""
    return input_record(CONSENTS.topic, 0, offset, b.consent(
        0, subject_id=subject_on(1, 2), event_id="c-grant"), clock.now)


def _as_read(producer: FakeProducer) -> list[str]:
    """Correlate partition 1 as its reader sees it: each relayed event's id, and the state
    each marker reports of consent-changed:0."""
    seen = []
    for record in producer.logs[(NAMES.correlate, 1)]:
        if is_marker(record.value):
            report = decode_marker(record.value)
            if CONSENTS_SOURCE in report:
                seen.append(report[CONSENTS_SOURCE][1])
        elif is_relayed(record.value):
            seen.append(decode_relayed(record.value).event_id)
    return seen


@pytest.mark.parametrize("direct", [False, True], ids=["route", "direct"])
def test_an_end_of_input_reaches_no_partition_before_the_records_it_covers(
        direct: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a batch with an end of input waits for the producer, the timer's report (which
    says the input ended) is not sent ahead of the records the batch forwards."""
    clock = WallClock(b.T0 + 10 * SECOND)
    monkeypatch.setattr(worker, "_now_ms", clock)

    async def scenario() -> list[str]:
        producer = _FirstSendWaits(clock)
        pipeline = _reading_everything(clock, producer, direct=direct)
        handle = pipeline.direct if direct else pipeline.route
        # a poison record (its dead letter is the batch's first send), the grant, the end
        poison = SimpleNamespace(topic=CONSENTS.topic, partition=0, offset=0, key=None,
                                 value=b"not an event", timestamp=clock.now)
        batch = asyncio.ensure_future(handle(CONSENTS, [
            poison, _grant(1, clock), _end_record(2, clock)]))
        await producer.waiting.wait()
        tick = asyncio.ensure_future(pipeline.tick_markers())
        await asyncio.sleep(0.01)  # the timer's report goes as far as it can
        producer.release.set()
        await asyncio.gather(batch, tick)
        return _as_read(producer)

    seen = asyncio.run(scenario())
    assert "c-grant" in seen and ENDED in seen, seen
    assert ENDED not in seen[:seen.index("c-grant")], seen


def test_the_timers_older_report_never_follows_a_batch_that_made_its_input_active_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The timer's report says an input ended and waits for the producer; a batch of that
    input comes meanwhile (it is active again). Its records and its report must not be
    followed by the timer's older one, which would end the input again (found by review)."""
    clock = WallClock(b.T0 + 10 * SECOND)
    monkeypatch.setattr(worker, "_now_ms", clock)

    async def scenario() -> list[str]:
        producer = _FirstSendWaits(clock)
        pipeline = _reading_everything(clock, producer)
        producer.waiting.set()  # the end of input goes through at once
        await pipeline.route(CONSENTS, [_end_record(0, clock)])
        producer.waiting.clear()  # the timer's first send waits
        tick = asyncio.ensure_future(pipeline.tick_markers())
        await producer.waiting.wait()
        batch = asyncio.ensure_future(pipeline.route(CONSENTS, [_grant(1, clock)]))
        await asyncio.sleep(0.01)  # the batch goes as far as it can
        producer.release.set()
        await asyncio.gather(tick, batch)
        return _as_read(producer)

    seen = asyncio.run(scenario())
    assert "c-grant" in seen, seen
    assert ENDED not in seen[seen.index("c-grant"):], seen
    assert [state for state in seen if state in (ACTIVE, ENDED)][-1] == ACTIVE, seen
