"""A state flush that fails before its records reach the producer still ends the batches
that waited for it (unacknowledged), rather than leaving their commits waiting."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from streams.pipeline import worker


class _Broken(Exception):
    pass


def test_the_batches_waiting_for_a_failed_flush_fail_with_it() -> None:
    async def scenario() -> None:
        pipeline: Any = object.__new__(worker._Pipeline)
        pipeline.table = SimpleNamespace(
            changelog_topic=SimpleNamespace(get_topic_name=lambda: "changelog"))
        pipeline._producer = SimpleNamespace
        pipeline._handling = None

        def flush() -> list[tuple[bytes, bytes]]:
            raise _Broken

        waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        part = SimpleNamespace(waiting=[waiting], dirty_since=1.0,
                               store=SimpleNamespace(flush=flush), in_flight=None,
                               flushing=asyncio.Lock(), unflushed_outputs=[])
        with pytest.raises(_Broken):
            await pipeline._flush(part, 0)
        assert waiting.done()
        with pytest.raises(_Broken):
            waiting.result()
        assert part.waiting == [] and part.dirty_since is None

    asyncio.run(scenario())


class _Builder:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(self, key: bytes | None, value: bytes | None, timestamp: None) -> object:
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class _Producer:
    """Delivers each batch at once, at offset 100 of its partition."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, list[tuple[bytes | None, bytes | None]]]] = []

    def create_batch(self) -> _Builder:
        return _Builder()

    async def send_batch(self, builder: _Builder, topic: str, partition: int
                         ) -> asyncio.Future[Any]:
        self.sent.append((topic, partition, builder.records))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(SimpleNamespace(offset=100))
        return future


class _Consumer:
    """Positions of the records handed over, and high watermarks, by topic-partition."""

    def __init__(self) -> None:
        self.next: dict[tuple[str, int], int] = {}
        self.high: dict[tuple[str, int], int] = {}

    def highwater(self, tp: Any) -> int | None:
        return self.high.get((tp.topic, tp.partition))

    def next_offset(self, tp: Any) -> int | None:
        return self.next.get((tp.topic, tp.partition))


def _pipeline(producer: _Producer, interval_s: float, quiet_s: float = 3600.0) -> Any:
    from streams.runtime import StateCollector

    pipeline: Any = object.__new__(worker._Pipeline)
    pipeline.app = SimpleNamespace(consumer=_Consumer())
    pipeline.direct_topics = {"joins": 1}
    pipeline._earliest = {}
    pipeline.table = SimpleNamespace(
        changelog_topic=SimpleNamespace(get_topic_name=lambda: "changelog"))
    pipeline._producer = lambda: producer
    pipeline._collector = StateCollector()
    pipeline._handling = None
    pipeline.settings = SimpleNamespace(state_flush_interval_s=interval_s,
                                        state_flush_quiet_s=quiet_s, state_flush_max_keys=50_000,
                                        topics=SimpleNamespace(correlate="correlate"))
    pipeline.partitions = {}
    pipeline.traffic_at = time.monotonic()  # busy: only the interval flushes
    return pipeline


def _waiting_partition(pipeline: Any, number: int, dirty_for_s: float
                       ) -> tuple[Any, asyncio.Future[None]]:
    persisted: list[int] = []
    store = SimpleNamespace(flush=lambda: [(b"k", b"v")], persisted=persisted.append)
    waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    part = SimpleNamespace(waiting=[waiting], dirty_since=time.monotonic() - dirty_for_s,
                           store=store, in_flight=None, flushing=asyncio.Lock(),
                           unflushed_outputs=[])
    pipeline.partitions[number] = part
    return part, waiting


def test_a_partition_no_batch_reaches_is_flushed_by_the_timer_and_its_batches_released(
        ) -> None:
    """The batches that wait for a flush are committed even when no later batch comes to
    the partition (the flush interval used to be checked only when one came)."""
    async def scenario() -> None:
        producer = _Producer()
        pipeline = _pipeline(producer, interval_s=5.0)
        part, waiting = _waiting_partition(pipeline, 2, dirty_for_s=6.0)
        _, fresh = _waiting_partition(pipeline, 3, dirty_for_s=1.0)
        await pipeline.flush_due()
        await asyncio.wait_for(waiting, timeout=5)
        assert producer.sent == [("changelog", 2, [(b"k", b"v")])]
        assert part.waiting == [] and part.dirty_since is None
        assert not fresh.done()  # its interval has not passed yet

    asyncio.run(scenario())


@pytest.mark.parametrize(("quiet_for_s", "flushed"), [(2.0, True), (0.2, False)])
def test_once_the_workers_traffic_stopped_its_partitions_are_flushed_before_the_interval(
        quiet_for_s: float, flushed: bool) -> None:
    """Under traffic a flush waits for the interval (each one writes every subject changed
    since the last); once no batch changed any partition for `state_flush_quiet_s` there
    is nothing to wait for, and the commits (the lag) should not. A pause of one
    partition while another changes is no pause: its decisions may be next."""
    async def scenario() -> None:
        producer = _Producer()
        pipeline = _pipeline(producer, interval_s=30.0, quiet_s=1.0)
        pipeline.traffic_at = time.monotonic() - quiet_for_s
        _, first = _waiting_partition(pipeline, 0, dirty_for_s=3.0)
        _, second = _waiting_partition(pipeline, 1, dirty_for_s=3.0)
        await pipeline.flush_due()
        if flushed:
            await asyncio.wait_for(asyncio.gather(first, second), timeout=5)
            assert sorted(producer.sent) == [("changelog", 0, [(b"k", b"v")]),
                                             ("changelog", 1, [(b"k", b"v")])]
        else:
            assert producer.sent == [] and not first.done() and not second.done()

    asyncio.run(scenario())


@pytest.mark.parametrize("topic", ["correlate", "joins"])
def test_a_quiet_worker_flushes_a_partition_whose_input_ends_with_a_transaction_marker(
        topic: str) -> None:
    """A transactional producer ends each transaction with a control record: an offset
    never handed over (the consumer passes over it only after its next fetch), so the
    next offset to hand over may stay one below the high watermark. Taken for records
    still waiting, it held every quiet flush back to the 30-s interval (found by review):
    the quiet flush asks nothing of positions."""
    async def scenario() -> None:
        producer = _Producer()
        pipeline = _pipeline(producer, interval_s=30.0, quiet_s=1.0)
        consumer = pipeline.app.consumer
        consumer.next[(topic, 0)], consumer.high[(topic, 0)] = 899, 900
        pipeline.traffic_at = time.monotonic() - 2.0
        _, waiting = _waiting_partition(pipeline, 0, dirty_for_s=3.0)
        await pipeline.flush_due()
        await asyncio.wait_for(waiting, timeout=5)
        assert producer.sent == [("changelog", 0, [(b"k", b"v")])]

    asyncio.run(scenario())


@pytest.mark.parametrize(("changes", "busy"), [(7, True), (5, False)])
def test_a_batch_that_changed_the_state_is_traffic_even_with_no_event(changes: int,
                                                                     busy: bool) -> None:
    """The decisions a marker lets a partition take change its state as events do (after
    a backlog they come long after its last event): its traffic has not stopped. A batch
    of markers that changed nothing is no traffic."""
    async def scenario() -> None:
        pipeline = _pipeline(_Producer(), interval_s=30.0, quiet_s=1.0)
        long_ago = time.monotonic() - 10.0
        store = SimpleNamespace(dirty_keys=lambda: 3, changes=changes)
        pipeline.traffic_at = long_ago
        part = SimpleNamespace(save_progress=lambda: None, store=store, changes_seen=5,
                               dirty_since=time.monotonic(), waiting=[], unflushed_outputs=[])
        pipeline.partitions[0] = part
        await pipeline._commit(part, 0, worker._Batch(_Producer()))
        assert (pipeline.traffic_at > long_ago) is busy
        assert part.changes_seen == changes

    asyncio.run(scenario())


def test_the_timer_leaves_the_partition_a_batch_is_in_to_that_batch() -> None:
    async def scenario() -> None:
        producer = _Producer()
        pipeline = _pipeline(producer, interval_s=5.0)
        _, waiting = _waiting_partition(pipeline, 1, dirty_for_s=6.0)
        pipeline._handling = 1
        await pipeline.flush_due()
        assert producer.sent == [] and not waiting.done()

    asyncio.run(scenario())


async def _let_others_run() -> None:
    """Enough turns of the event loop for the tasks started to reach their next wait."""
    for _ in range(20):
        await asyncio.sleep(0)


class _SlowProducer(_Producer):
    """Delivers nothing until `deliver` is called."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[asyncio.Future[Any]] = []

    async def send_batch(self, builder: _Builder, topic: str, partition: int
                         ) -> asyncio.Future[Any]:
        self.sent.append((topic, partition, builder.records))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return future

    def deliver(self) -> None:
        for future in self.pending:
            if not future.done():
                future.set_result(SimpleNamespace(offset=100))


def _slow_partition(number: int, dirty_for_s: float
                    ) -> tuple[_SlowProducer, Any, Any, asyncio.Future[None]]:
    """A pipeline on a producer that delivers only when told, and its partition `number`
    with a batch waiting for a flush."""
    producer = _SlowProducer()
    pipeline = _pipeline(producer, interval_s=5.0)
    part, waiting = _waiting_partition(pipeline, number, dirty_for_s=dirty_for_s)
    return producer, pipeline, part, waiting


def test_a_revoked_partitions_flush_is_delivered_before_the_revocation_ends() -> None:
    """The next owner reads the changelog once the rebalance ends: the revoked partition's
    last flush must be in it by then, not behind what that owner writes."""
    async def scenario() -> None:
        producer, pipeline, part, waiting = _slow_partition(2, dirty_for_s=1.0)
        part.store.dirty_keys = lambda: 1
        revocation = asyncio.ensure_future(pipeline.flush_revoked([(2, part)]))
        await _let_others_run()
        assert producer.sent == [("changelog", 2, [(b"k", b"v")])]
        assert not revocation.done() and not waiting.done()
        producer.deliver()
        await asyncio.wait_for(revocation, timeout=5)
        await asyncio.wait_for(waiting, timeout=5)

    asyncio.run(scenario())


def test_a_revocation_waits_for_a_flush_already_under_way() -> None:
    async def scenario() -> None:
        producer, pipeline, part, waiting = _slow_partition(2, dirty_for_s=6.0)
        await pipeline.flush_due()  # the timer's flush: handed over, not delivered
        assert part.waiting == [] and producer.sent
        part.store.dirty_keys = lambda: 0
        revocation = asyncio.ensure_future(pipeline.flush_revoked([(2, part)]))
        await _let_others_run()
        assert not revocation.done()
        producer.deliver()
        await asyncio.wait_for(revocation, timeout=5)
        await asyncio.wait_for(waiting, timeout=5)

    asyncio.run(scenario())


def test_a_revocation_leaves_a_half_done_batchs_state_to_that_batch() -> None:
    """Its state holds part of the batch, which must not persist should the batch fail."""
    async def scenario() -> None:
        producer, pipeline, part, waiting = _slow_partition(2, dirty_for_s=1.0)
        part.store.dirty_keys = lambda: 1
        pipeline._handling = 2
        await asyncio.wait_for(pipeline.flush_revoked([(2, part)]), timeout=5)
        assert producer.sent == [] and not waiting.done() and part.waiting == [waiting]

    asyncio.run(scenario())


def test_the_state_is_written_once_the_outputs_of_its_batches_are_delivered() -> None:
    """Written before, a crash could leave an event seen in the stored state while its
    finding or amendment was lost: read again, the event is a duplicate."""
    async def scenario() -> None:
        producer, pipeline, part, waiting = _slow_partition(1, dirty_for_s=1.0)
        written: list[int] = []
        part.store.flush = lambda: written.append(1) or [(b"k", b"v")]
        earlier = worker._Batch(producer)  # a batch whose state waits for this flush
        await earlier.append("findings", 0, b"f1", b"finding 1")
        part.unflushed_outputs.append(await earlier.enqueue())
        batch = worker._Batch(producer)
        await batch.append("amendments", 0, b"a1", b"amendment 1")
        flush = asyncio.ensure_future(pipeline._flush(part, 1, batch))
        await _let_others_run()
        assert [topic for topic, _, _ in producer.sent] == ["findings", "amendments"]
        assert written == [] and not flush.done()
        producer.deliver()
        commit = await asyncio.wait_for(flush, timeout=5)
        assert written == [1] and producer.sent[-1] == ("changelog", 1, [(b"k", b"v")])
        assert not waiting.done()
        producer.deliver()
        await asyncio.wait_for(commit.outputs, timeout=5)
        await asyncio.wait_for(waiting, timeout=5)

    asyncio.run(scenario())


class _MetaStore:
    partition = 0

    def __init__(self, raw: bytes | None = None) -> None:
        self.raw = raw

    def meta(self) -> bytes | None:
        return self.raw

    def put_meta(self, raw: bytes) -> None:
        self.raw = raw


def _progress_partition(store: _MetaStore) -> Any:
    from streams.pipeline.marker_gate import MarkerGate
    from streams.pipeline.watermarks import SourceWatermarks
    from tests import builders

    return worker._Partition(builders.make_engine(), store,  # type: ignore[arg-type]
                             SourceWatermarks(lambda: ["in:0"]),
                             MarkerGate(lambda _: False, lambda _: 0))


def test_the_idle_wall_time_counted_is_saved_with_the_progress_and_restored() -> None:
    import orjson

    from streams.pipeline.watermarks import IDLE

    part = _progress_partition(_MetaStore())
    part.sources.update({"in:0": (50, IDLE)})
    part.engine.watermark = part.sources.watermark(0, 7_000)
    part.save_progress()
    assert orjson.loads(part.store.raw)["idle_wall"] == 7_000
    moved = _progress_partition(_MetaStore(part.store.raw))
    moved.restore_progress()
    assert moved.sources.idle_wall() == 7_000 and moved.engine.watermark == 50
    # what an older version saved (no idle wall time) still loads
    old = _progress_partition(_MetaStore(b'{"watermark": 50, "max_seen": 80, '
                                         b'"sources": {"in:0": 50}}'))
    old.restore_progress()
    assert old.sources.idle_wall() is None and old.sources.reported() == {"in:0": 50}
    assert old.engine.watermark == 50 and old.engine.max_seen == 80


def test_the_sources_states_are_saved_with_the_progress_and_restored() -> None:
    """A partition that moves keeps an ended input ended while that input's new reader
    has heard nothing of it (tests/pipeline/test_moved_input.py)."""
    from streams.pipeline.watermarks import END, ENDED

    part = _progress_partition(_MetaStore())
    part.sources.update({"in:0": (50, ENDED)}, offset=4)
    part.save_progress()
    moved = _progress_partition(_MetaStore(part.store.raw))
    moved.restore_progress()
    assert moved.sources.states() == {"in:0": ENDED} and moved.sources.states_offset() == 4
    assert moved.sources.watermark(50, 0) == END


def test_a_timer_flush_leaves_the_state_alone_once_a_batch_of_its_partition_began() -> None:
    """The timer's flush waits for earlier outputs; a batch that began meanwhile changed
    the state and has not sent its outputs yet: writing now would store its events."""
    async def scenario() -> None:
        producer, pipeline, part, waiting = _slow_partition(1, dirty_for_s=6.0)
        written: list[int] = []
        part.store.flush = lambda: written.append(1) or [(b"k", b"v")]
        earlier = worker._Batch(producer)
        await earlier.append("findings", 0, b"f1", b"finding 1")
        part.unflushed_outputs.append(await earlier.enqueue())
        timer = asyncio.ensure_future(pipeline.flush_due())
        await _let_others_run()
        pipeline._handling = 1  # a batch of partition 1 begins
        producer.deliver()
        await asyncio.wait_for(timer, timeout=5)
        assert written == [] and not waiting.done() and part.waiting == [waiting]

    asyncio.run(scenario())


def test_a_batch_that_ends_after_its_partition_was_revoked_writes_no_state() -> None:
    """The next owner may be restoring the partition already: the batch, and those that
    waited for a flush, are left unacknowledged (read again by that owner)."""
    async def scenario() -> None:
        producer, pipeline, part, waiting = _slow_partition(1, dirty_for_s=6.0)
        written: list[int] = []
        part.store.flush = lambda: written.append(1) or [(b"k", b"v")]
        part.store.dirty_keys = lambda: 1
        part.save_progress = lambda: None
        del pipeline.partitions[1]  # revoked while the batch was half-way
        batch = worker._Batch(producer)
        await batch.append("findings", 0, b"f2", b"finding 2")
        commit = await pipeline._commit(part, 1, batch)
        assert written == [] and waiting.cancelled() and part.waiting == []
        assert commit.changelog is not None and commit.changelog.cancelled()

    asyncio.run(scenario())
