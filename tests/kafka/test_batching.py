"""The batch path through Faust's consumer (`streams/kafka/faust_adapter.py`).

What it relies on in faust-streaming is checked by tests/kafka/test_faust_adapter.py.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pytest
from faust.types import TP

from streams.kafka.faust_adapter import BatchCommit, BatchingConsumer, batching_transport


def test_the_transport_carries_the_handlers_filled_after_it_was_made() -> None:
    handlers: dict[str, Any] = {}
    transport = batching_transport(handlers)
    handlers["t"] = object()
    consumer_class = transport.Consumer
    assert issubclass(consumer_class, BatchingConsumer)
    assert consumer_class.batch_handlers["t"] is handlers["t"]


@dataclass
class _Record:
    offset: int
    value: bytes = b""


class _FakeApp:
    def __init__(self) -> None:
        self.consumer_generation_id = 1


def _consumer(handlers: dict[str, Any]) -> Any:
    """A BatchingConsumer with only the state its batch path reads (no broker)."""
    consumer = object.__new__(batching_transport(handlers).Consumer)
    consumer._batch_last = {}
    consumer._seeks = 0
    consumer._in_flight = set()
    consumer._last_commit = {}
    consumer._read_offset = defaultdict(lambda: None)
    consumer._committed_offset = defaultdict(lambda: None)
    consumer._acked = defaultdict(list)
    consumer._acked_index = defaultdict(set)
    consumer._buffered_partitions = set()
    consumer._n_acked = 0
    consumer._commit_every = None
    consumer.flow_active = True
    consumer.app = _FakeApp()
    return consumer


def test_a_batch_goes_to_its_handler_whole_and_its_offsets_are_acked() -> None:
    seen: list[tuple[TP, list[int]]] = []

    async def handler(tp: TP, records: list[_Record]) -> None:
        seen.append((tp, [r.offset for r in records]))

    consumer = _consumer({"t": handler})
    tp = TP("t", 0)
    consumer._committed_offset[tp] = 5
    asyncio.run(consumer._drain_batch({tp: [_Record(5), _Record(6), _Record(8)]}, {tp}))
    assert seen == [(tp, [5, 6, 8])]
    # 7 holds no record (a transaction marker, say): acked too, or the commit stalls
    assert consumer._acked[tp] == [5, 6, 7, 8]
    assert consumer._n_acked == 4
    assert consumer._read_offset[tp] == 8
    # the next fetch: only what is new goes through, and the gap before it is covered
    asyncio.run(consumer._drain_batch({tp: [_Record(8), _Record(10)]}, {tp}))
    assert seen[-1] == (tp, [8, 10])
    assert consumer._acked[tp] == [5, 6, 7, 8, 9, 10]


def test_a_batch_is_acked_once_what_it_produced_is_delivered() -> None:
    async def scenario() -> Any:
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def handler(tp: TP, records: list[_Record]) -> BatchCommit:
            return BatchCommit(delivered)

        consumer = _consumer({"t": handler})
        tp = TP("t", 0)
        await consumer._drain_batch({tp: [_Record(0), _Record(1)]}, {tp})
        assert consumer._acked[tp] == []  # not delivered yet
        delivered.set_result(None)
        await asyncio.gather(*consumer._in_flight)
        return consumer._acked[tp]

    assert asyncio.run(scenario()) == [0, 1]


def test_a_batch_delivered_after_a_rebalance_is_acked_one_not_delivered_is_not() -> None:
    async def scenario(fail: bool) -> Any:
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def handler(tp: TP, records: list[_Record]) -> BatchCommit:
            return BatchCommit(delivered)

        consumer = _consumer({"t": handler})
        tp = TP("t", 0)
        await consumer._drain_batch({tp: [_Record(0)]}, {tp})
        consumer.app.consumer_generation_id = 2  # partitions were reassigned meanwhile
        if fail:
            delivered.set_exception(RuntimeError("broker gone"))
        else:
            delivered.set_result(None)
        await asyncio.gather(*consumer._in_flight)
        return consumer._acked[tp]

    # Faust commits only partitions still assigned; a dropped ack would be a gap.
    assert asyncio.run(scenario(fail=False)) == [0]
    assert asyncio.run(scenario(fail=True)) == []


def test_the_ordered_commit_acks_after_findings_then_changelog_then_commits() -> None:
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        findings: asyncio.Future[None] = loop.create_future()
        changelog: asyncio.Future[None] = loop.create_future()
        steps: list[str] = []

        async def handler(tp: TP, records: list[_Record]) -> BatchCommit:
            return BatchCommit(findings, changelog)

        async def commit() -> bool:
            steps.append(f"committed {consumer._acked[tp]}")
            return True

        consumer = _consumer({"t": handler})
        consumer._commit_every = 2
        consumer.commit = commit
        tp = TP("t", 0)
        await consumer._drain_batch({tp: [_Record(0), _Record(1)]}, {tp})
        findings.set_result(None)
        await asyncio.sleep(0)
        steps.append(f"findings delivered, acked {consumer._acked[tp]}")
        changelog.set_result(None)
        await asyncio.gather(*consumer._in_flight)
        return steps

    assert asyncio.run(scenario()) == ["findings delivered, acked []", "committed [0, 1]"]


def test_a_changelog_not_delivered_leaves_the_batch_unacknowledged() -> None:
    async def scenario() -> Any:
        loop = asyncio.get_running_loop()
        findings: asyncio.Future[None] = loop.create_future()
        changelog: asyncio.Future[None] = loop.create_future()

        async def handler(tp: TP, records: list[_Record]) -> BatchCommit:
            return BatchCommit(findings, changelog)

        consumer = _consumer({"t": handler})
        tp = TP("t", 0)
        await consumer._drain_batch({tp: [_Record(0)]}, {tp})
        findings.set_result(None)
        changelog.set_exception(RuntimeError("broker gone"))
        await asyncio.gather(*consumer._in_flight)
        return consumer._acked[tp], consumer._n_acked

    assert asyncio.run(scenario()) == ([], 0)


def _in_order_consumer(outputs: list[Any]) -> Any:
    """A consumer whose handler returns, batch after batch, a BatchCommit of each of
    `outputs` (None: a batch with nothing to deliver)."""
    commits = iter(outputs)

    async def handler(tp: TP, records: list[_Record]) -> BatchCommit | None:
        delivered = next(commits)
        return None if delivered is None else BatchCommit(delivered)

    return _consumer({"t": handler})


def test_a_later_batch_of_a_partition_is_acked_only_after_the_one_before_it() -> None:
    """With no committed offset yet Faust commits past a gap: a later batch delivered
    first would have let it commit past the earlier one, never delivered."""
    async def scenario() -> list[list[int]]:
        loop = asyncio.get_running_loop()
        first: asyncio.Future[None] = loop.create_future()
        second: asyncio.Future[None] = loop.create_future()
        consumer = _in_order_consumer([first, second, None, None])
        tp = TP("t", 0)
        seen: list[list[int]] = []
        await consumer._drain_batch({tp: [_Record(o) for o in range(5)]}, {tp})
        await consumer._drain_batch({tp: [_Record(5), _Record(6)]}, {tp})
        await consumer._drain_batch({tp: [_Record(7)]}, {tp})  # nothing to deliver
        second.set_result(None)
        for _ in range(5):
            await asyncio.sleep(0)
        seen.append(list(consumer._acked[tp]))
        first.set_result(None)
        await asyncio.gather(*consumer._in_flight)
        seen.append(list(consumer._acked[tp]))
        # the partition's order ended with its last batch: the next one is acked at once
        await consumer._drain_batch({tp: [_Record(8)]}, {tp})
        seen.append(list(consumer._acked[tp]))
        return seen

    assert asyncio.run(scenario()) == [[], list(range(8)), list(range(9))]


def test_a_batch_not_delivered_leaves_the_later_ones_unacked_and_is_reported_once() -> None:
    async def scenario() -> tuple[list[int], list[tuple[TP, range, str]]]:
        loop = asyncio.get_running_loop()
        first: asyncio.Future[None] = loop.create_future()
        second: asyncio.Future[None] = loop.create_future()
        third: asyncio.Future[None] = loop.create_future()
        failures: list[tuple[TP, range, str]] = []
        consumer = _in_order_consumer([first, second, third])
        consumer.on_failed_delivery = (
            lambda tp, offsets, exc: failures.append((tp, offsets, str(exc))))
        tp = TP("t", 0)
        await consumer._drain_batch({tp: [_Record(o) for o in range(5)]}, {tp})
        await consumer._drain_batch({tp: [_Record(5), _Record(6)]}, {tp})
        second.set_result(None)
        first.set_exception(RuntimeError("KafkaTimeoutError"))
        await consumer._drain_batch({tp: [_Record(7)]}, {tp})
        third.set_result(None)
        await asyncio.gather(*consumer._in_flight)
        return consumer._acked[tp], failures

    assert asyncio.run(scenario()) == ([], [(TP("t", 0), range(5), "KafkaTimeoutError")])


def test_a_cancelled_delivery_is_not_a_failed_one() -> None:
    async def scenario() -> tuple[list[int], list[Exception]]:
        loop = asyncio.get_running_loop()
        first: asyncio.Future[None] = loop.create_future()
        second: asyncio.Future[None] = loop.create_future()
        failures: list[Exception] = []
        consumer = _in_order_consumer([first, second])
        consumer.on_failed_delivery = lambda tp, offsets, exc: failures.append(exc)
        tp = TP("t", 0)
        await consumer._drain_batch({tp: [_Record(0)]}, {tp})
        await consumer._drain_batch({tp: [_Record(1)]}, {tp})
        first.cancel()  # shutting down
        second.set_result(None)
        await asyncio.gather(*consumer._in_flight, return_exceptions=True)
        return consumer._acked[tp], failures

    assert asyncio.run(scenario()) == ([], [])


def test_after_a_seek_a_partitions_batches_wait_for_none_of_the_old_assignment() -> None:
    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        old: asyncio.Future[None] = loop.create_future()  # never delivered
        new: asyncio.Future[None] = loop.create_future()

        async def seek_to_committed() -> dict[TP, int]:
            return {tp: 3}

        consumer = _in_order_consumer([old, new])
        consumer.seek_to_committed = seek_to_committed
        tp = TP("t", 0)
        consumer._committed_offset[tp] = 3
        await consumer._drain_batch({tp: [_Record(3), _Record(4)]}, {tp})
        await consumer.perform_seek()  # a rebalance kept the partition
        await consumer._drain_batch({tp: [_Record(3), _Record(4)]}, {tp})
        new.set_result(None)
        for _ in range(5):
            await asyncio.sleep(0)
        acked = list(consumer._acked[tp])
        old.cancel()
        return acked

    assert asyncio.run(scenario()) == [3, 4]


def test_nothing_is_acked_when_the_handler_fails() -> None:
    async def handler(tp: TP, records: list[_Record]) -> None:
        raise RuntimeError("boom")

    consumer = _consumer({"t": handler})
    tp = TP("t", 0)
    with pytest.raises(RuntimeError):
        asyncio.run(consumer._drain_batch({tp: [_Record(0), _Record(1)]}, {tp}))
    assert consumer._acked[tp] == [] and consumer._n_acked == 0


def test_a_rebalance_stops_the_batch_and_inactive_partitions_are_skipped() -> None:
    seen: list[TP] = []

    async def handler(tp: TP, records: list[_Record]) -> None:
        seen.append(tp)
        consumer.flow_active = False  # a rebalance begins while this batch runs

    consumer = _consumer({"t": handler})
    one, two, paused = TP("t", 1), TP("t", 2), TP("t", 3)
    records = {paused: [_Record(0)], one: [_Record(0)], two: [_Record(0)]}
    asyncio.run(consumer._drain_batch(records, {one, two}))
    assert seen == [one]


def test_after_a_rebalance_the_next_offset_is_the_committed_one_not_the_old_position(
        ) -> None:
    """A partition handled up to 9, then revoked and assigned again (or held in an
    earlier generation) with 5 committed: it is read again from 5, and says so."""
    async def handler(tp: TP, records: list[_Record]) -> None:
        return None

    async def seek_to_committed() -> dict[TP, int]:
        return {tp: 5}

    consumer = _consumer({"t": handler})
    consumer.seek_to_committed = seek_to_committed
    tp = TP("t", 0)
    asyncio.run(consumer._drain_batch({tp: [_Record(8), _Record(9)]}, {tp}))
    assert consumer.next_offset(tp) == 10
    asyncio.run(consumer.perform_seek())
    assert consumer.next_offset(tp) == 5
    asyncio.run(consumer._drain_batch({tp: [_Record(5), _Record(6)]}, {tp}))
    assert consumer.next_offset(tp) == 7


def test_a_batch_a_rebalance_overtook_is_acked_but_leaves_the_position_to_the_seek() -> None:
    async def scenario() -> tuple[Any, Any, Any]:
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def handler(tp: TP, records: list[_Record]) -> BatchCommit:
            # meanwhile: revoked, assigned again, sought to the committed offset 3
            consumer.app.consumer_generation_id = 2
            consumer._read_offset[tp] = 3
            consumer._committed_offset[tp] = 3
            return BatchCommit(delivered)

        consumer = _consumer({"t": handler})
        tp = TP("t", 0)
        await consumer._drain_batch({tp: [_Record(3), _Record(4)]}, {tp})
        delivered.set_result(None)
        await asyncio.gather(*consumer._in_flight)
        return consumer._acked[tp], consumer._read_offset[tp], consumer.next_offset(tp)

    assert asyncio.run(scenario()) == ([3, 4], 3, 3)


def test_offsets_past_the_last_record_with_none_for_us_are_passed_over_and_acked() -> None:
    """A fetch whose consumed position is past its last record (aiokafka skipped the
    transaction marker after it): the partition is read to that position, and the
    marker's offset is acknowledged after the batch, so the commit reaches the end."""
    async def scenario() -> list[Any]:
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def handler(tp: TP, records: list[_Record]) -> BatchCommit:
            return BatchCommit(delivered)

        consumer = _consumer({"t": handler})
        tp = TP("t", 0)
        await consumer._drain_batch({tp: [_Record(0), _Record(1), _Record(2)]}, {tp})
        consumer._pass_over({tp: 4}, {tp}, 1, 0)
        seen: list[Any] = [consumer.next_offset(tp), list(consumer._acked[tp])]
        delivered.set_result(None)  # the batch's outputs: now the marker's turn too
        await asyncio.gather(*consumer._in_flight)
        await asyncio.gather(*consumer._in_flight)
        seen.append(list(consumer._acked[tp]))
        # a fetch of nothing but another marker: passed over at once
        consumer._pass_over({tp: 5}, {tp}, 1, 0)
        seen += [consumer.next_offset(tp), list(consumer._acked[tp])]
        return seen

    assert asyncio.run(scenario()) == [4, [], [0, 1, 2, 3], 5, [0, 1, 2, 3, 4]]


def test_positions_are_not_passed_over_where_records_were_not_handed_over() -> None:
    async def handler(tp: TP, records: list[_Record]) -> None:
        return None

    consumer = _consumer({"t": handler})
    handled, paused, other = TP("t", 0), TP("t", 1), TP("faust-changelog", 0)
    asyncio.run(consumer._drain_batch({handled: [_Record(0)]}, {handled}))
    consumer._pass_over({handled: 1, paused: 7, other: 7}, {handled, other}, 1, 0)
    assert consumer.next_offset(handled) == 1  # the position is the record's own next
    assert consumer.next_offset(paused) is None  # its records were skipped, not read
    assert consumer.next_offset(other) is None  # not a batch topic: Faust's own path
    consumer._pass_over({handled: 9}, {handled}, 2, 0)  # a rebalance began: the seek decides
    assert consumer.next_offset(handled) == 1
    assert consumer._acked[handled] == [0]


def test_positions_of_a_fetch_a_seek_overtook_are_not_passed_over() -> None:
    """Faust seeks within a generation too (after a table's recovery): a seek while a
    fetch's batches ran cleared the partition's ordered commit, and passing over its
    position then acknowledged a batch not yet delivered (found by review)."""
    async def scenario() -> tuple[Any, list[int]]:
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def handler(tp: TP, records: list[_Record]) -> BatchCommit | None:
            if tp.partition == 1:
                await consumer.perform_seek()  # meanwhile, in another task
                return None
            return BatchCommit(delivered)

        async def seek_to_committed() -> dict[TP, int]:
            return {}

        consumer = _consumer({"t": handler})
        consumer.seek_to_committed = seek_to_committed
        tp, other = TP("t", 0), TP("t", 1)
        seeks = consumer._seeks
        await consumer._drain_batch({tp: [_Record(3), _Record(4)], other: [_Record(0)]},
                                    {tp, other})
        consumer._pass_over({tp: 5, other: 1}, {tp, other}, 1, seeks)
        acked = list(consumer._acked[tp])
        delivered.cancel()
        return consumer.next_offset(tp), acked

    next_offset, acked = asyncio.run(scenario())
    assert acked == [] and next_offset != 5


def test_the_workers_producer_waits_for_every_in_sync_replica_and_is_idempotent(
        tmp_path: Any) -> None:
    # On a cluster, a send retried after a broker failed over must not write twice.
    from streams.kafka.connection import KafkaConnection
    from streams.pipeline.worker import WorkerSettings, build_app

    async def made() -> Any:
        app = build_app(WorkerSettings(connection=KafkaConnection("127.0.0.1:9"),
                                       data_dir=tmp_path, store="memory"))
        producer = app.producer._new_producer()
        await producer.stop()  # never started: only releases its client
        return producer

    producer = asyncio.run(made())
    assert producer._txn_manager is not None  # what enable_idempotence sets up
    assert producer._txn_manager.transactional_id is None
    assert producer._sender._acks == -1
