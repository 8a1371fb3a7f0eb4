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


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> WallClock:
    """The workers' wall clock, an hour after the events."""
    now = WallClock(b.T0 + 3600 * SECOND)
    monkeypatch.setattr(worker, "_now_ms", now)
    return now


def _findings(producer: FakeProducer) -> list[Any]:
    return [r for (topic, _), log in producer.logs.items() if topic == NAMES.findings
            for r in log]


def test_an_ended_input_that_moved_stays_ended_until_its_next_record(
        clock: WallClock) -> None:

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
        clock: WallClock) -> None:

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



def test_direct_mode_a_restored_ended_input_is_active_again_on_its_own_partition_at_once(
        clock: WallClock) -> None:
    """Partition p, restarted with its inputs ended in its saved state, gets a record of
    its own input S: the timer may have reported S active already (records waiting), but
    p's own view is the restored one, and a marker of another worker read first must not
    decide S's record with an end (found by a review)."""

    async def scenario() -> Any:
        shared = FakeProducer(clock)
        first = make_pipeline(clock, partitions=1, direct=True, producer=shared)
        z = make_pipeline(clock, partitions=1, producer=shared)  # reads the toggles
        direct = [TP(topic, 0) for topic in first.input_topics if topic in first.direct_topics]
        first.consumer.assigned = {*direct, CORRELATE}
        first.assigned([*direct, CORRELATE])
        z.consumer.assigned = {TOGGLES}
        z.assigned([TOGGLES])
        committed = await _every_input_ended(clock, shared, first, direct, z)
        log = shared.logs[(CORRELATE.topic, 0)]
        # the restart, on the same state; Z's timer reports the toggles meanwhile
        clock.now += 5 * SECOND
        await z.send_markers(always=True)
        again = make_pipeline(clock, partitions=1, direct=True, producer=shared)
        again.table = first.table
        again.consumer.assigned = {*direct, CORRELATE}
        again.assigned([*direct, CORRELATE])
        for tp in direct:
            again.consumer.committed[tp] = again.consumer.high[tp] = again.consumer.next[tp] = 1
        again.consumer.committed[CORRELATE] = committed
        again.consumer.high[REQUESTS] = 2  # a request waiting after the end
        await again.tick_markers()
        again._markers_sent = float("inf")
        await again.direct(REQUESTS, [input_record(REQUESTS.topic, 0, 1, b.requested(
            100 * SECOND, event_id="r-1"), clock.now)])
        again.consumer.next[REQUESTS] = 2
        await (await again.correlate_batch(CORRELATE, list(log[committed:]))).outputs
        return again.partitions[0].engine.store.subject(b.SUBJECT).triggers["r-1"].pending

    assert asyncio.run(scenario())  # it waits for the requests' watermark, as in replay


def test_markers_read_again_after_a_restart_do_not_mix_older_states_with_the_restored(
        clock: WallClock) -> None:
    """The state saved after offset f, the offset committed at c < f (a crash between
    the changelog's delivery and the commit): the markers from c are read again. An
    older marker among them (REQUESTS ended, before its request) beside the restored
    states (every other input ended since) was never the partition's state, and would
    decide the request at once (found by a review)."""
    joins = TP(NAMES.inputs["ParticipantJoined"], 0)

    async def scenario() -> Any:
        shared = FakeProducer(clock)
        y, w, v, r = (make_pipeline(clock, partitions=1, producer=shared) for _ in range(4))
        rest = [TP(topic, 0) for topic in v.input_topics if TP(topic, 0) not in (joins, REQUESTS)]
        for pipeline, tps in ((y, [joins]), (w, [REQUESTS]), (v, rest), (r, [CORRELATE])):
            pipeline.consumer.assigned = set(tps)
            pipeline.assigned(tps)
        for tp in rest:
            v.consumer.high[tp] = v.consumer.next[tp] = 1
            await v.route(tp, [_end(tp, 0, clock)])
        y.consumer.high[joins] = y.consumer.next[joins] = 1
        y._markers_sent = 0.0
        await y.route(joins, [input_record(joins.topic, 0, 0, b.joined(
            10 * SECOND, subject_id="other", event_id="j-0"), clock.now)])
        w.consumer.high[REQUESTS] = w.consumer.next[REQUESTS] = 1
        await w.route(REQUESTS, [_end(REQUESTS, 0, clock)])
        log = shared.logs[(CORRELATE.topic, 0)]
        await (await r.correlate_batch(CORRELATE, list(log))).outputs
        committed = len(log)
        clock.now += SECOND
        await w.tick_markers()  # {requests: ended}
        await y.tick_markers()  # {joins: active}
        w.consumer.high[REQUESTS] = w.consumer.next[REQUESTS] = 2
        w._markers_sent = 0.0
        await w.route(REQUESTS, [input_record(REQUESTS.topic, 0, 1, b.requested(
            100 * SECOND, event_id="r-1"), clock.now)])
        y.consumer.high[joins] = y.consumer.next[joins] = 2
        await y.route(joins, [_end(joins, 1, clock)])
        await (await r.correlate_batch(CORRELATE, list(log[committed:]))).outputs
        await r._flush(r.partitions[0], 0)
        restarted = make_pipeline(clock, partitions=1, producer=shared)
        restarted.table = r.table
        restarted.consumer.assigned = {CORRELATE}
        restarted.assigned([CORRELATE])
        restarted.consumer.committed[CORRELATE] = committed
        for record in log[committed:]:  # one batch each: the older marker applied alone
            await (await restarted.correlate_batch(CORRELATE, [record])).outputs
        part = restarted.partitions[0]
        return (part.engine.store.subject(b.SUBJECT).triggers["r-1"].pending,
                part.sources.state(f"{rest[0].topic}:0"))

    pending, ended_before = asyncio.run(scenario())
    assert pending  # it waits for the requests' watermark, as in replay
    assert ended_before == ENDED  # restored: no marker read again says so


async def _every_input_ended(clock: WallClock, shared: FakeProducer, reader: Any,
                             direct: list[TP], toggles: Any) -> int:
    """`reader` (direct mode, partition 0) reads the end of each of its `direct` inputs,
    `toggles` the toggles' end; `reader` applies the markers and flushes its state.
    Returns the correlate offset after them."""
    for tp in direct:
        reader.consumer.high[tp] = reader.consumer.next[tp] = 1
        await reader.direct(tp, [_end(tp, 0, clock)])
    toggles.consumer.high[TOGGLES] = toggles.consumer.next[TOGGLES] = 1
    await toggles.route(TOGGLES, [_end(TOGGLES, 0, clock)])
    log = shared.logs[(CORRELATE.topic, 0)]
    await (await reader.correlate_batch(CORRELATE, list(log))).outputs
    await reader._flush(reader.partitions[0], 0)
    return len(log)


def _direct_worker(clock: WallClock, shared: FakeProducer, table: Any = None
                   ) -> tuple[Any, list[TP]]:
    """A one-partition worker in direct mode holding every input and the correlate
    partition (on `table`: a restart or a move), and its directly read inputs."""
    pipeline = make_pipeline(clock, partitions=1, direct=True, producer=shared)
    if table is not None:
        pipeline.table = table
    tps = [TP(topic, 0) for topic in pipeline.input_topics]
    pipeline.consumer.assigned = {*tps, CORRELATE}
    pipeline.assigned([*tps, CORRELATE])
    return pipeline, [tp for tp in tps if tp.topic in pipeline.direct_topics]


def _after_the_requests(pipeline: Any, direct: list[TP]) -> None:
    """The offsets a worker starts from: every direct input after its end marker, two
    requests waiting after it, the toggles read to their end."""
    consumer = pipeline.consumer
    for tp in direct:
        consumer.committed[tp] = consumer.next[tp] = consumer.high[tp] = 1
    consumer.high[REQUESTS] = 3
    consumer.committed[TOGGLES] = consumer.next[TOGGLES] = consumer.high[TOGGLES] = 2


def test_direct_mode_states_are_not_saved_past_a_marker_the_gate_still_holds(
        clock: WallClock) -> None:
    """A marker held by the gate (its sender had read an own input further than the
    partition has) can be committed past before it is applied: a restart or a move then
    never reads it again. States saved without it stood for what it said (the toggles
    active again), and an end of them decided a request at once (found by a review)."""
    async def scenario() -> Any:
        shared = FakeProducer(clock)

        def requests() -> list[Any]:
            return [input_record(REQUESTS.topic, 0, 1, b.requested(
                        100 * SECOND, event_id="r-1"), clock.now),
                    input_record(REQUESTS.topic, 0, 2, b.requested(
                        1000 * SECOND, event_id="r-2"), clock.now)]

        first, direct = _direct_worker(clock, shared)
        ended = await _every_input_ended(clock, shared, first, direct, first)
        log = shared.logs[(CORRELATE.topic, 0)]
        # two requests after the end (not flushed), a toggle after the toggles' end, and
        # the first worker is gone
        clock.now += SECOND
        first.consumer.high[REQUESTS] = 3
        await first.direct(REQUESTS, requests())
        first.consumer.next[REQUESTS] = 3
        first.consumer.high[TOGGLES] = 2
        first._markers_sent = float("inf")
        await first.route(TOGGLES, [input_record(TOGGLES.topic, 0, 1, b.toggle(
            50 * SECOND, event_id="t-1"), clock.now)])
        # the next owner holds the toggles' marker (requests read as far as 3 there),
        # commits past it and loses the partition
        second, _ = _direct_worker(clock, shared, first.table)
        _after_the_requests(second, direct)
        second.consumer.committed[CORRELATE] = ended
        second._markers_sent = float("inf")
        past = len(log)
        await (await second.correlate_batch(CORRELATE, list(log[ended:past]))).outputs
        assert second.partitions[0].gate.held() == 1
        await second._flush(second.partitions[0], 0)
        third, _ = _direct_worker(clock, shared, first.table)
        _after_the_requests(third, direct)
        third.consumer.committed[CORRELATE] = past
        third._markers_sent = float("inf")
        clock.now += SECOND
        await third.direct(REQUESTS, requests())
        third.consumer.next[REQUESTS] = 3
        await third.send_markers(always=True)
        await (await third.correlate_batch(CORRELATE, list(log[past:]))).outputs
        return third.partitions[0].engine.store.subject(b.SUBJECT).triggers["r-1"].pending

    # it waits for the toggles (active again, whose new reader has not reported them)
    assert asyncio.run(scenario())
