"""Records in batches, straight from the consumer's fetches, past Faust's per-record path.

Faust hands every record to an agent through the conductor, a channel queue and
the stream iterator: several asyncio tasks and about 150 µs per record, whatever the
agent does. The worker's own topics do not need that: `BatchingConsumer` replaces
the consumer's drain loop, and for a topic with a batch handler it gives the handler
all the records of one partition that a fetch returned, then acknowledges their
offsets itself, so Faust's commit machinery commits them as usual. Every other topic
(the tables' changelogs during recovery) still takes Faust's own per-message path.

What this relies on in faust-streaming (pinned in pyproject.toml, checked by
tests/test_batching.py): `Consumer._drain_messages(fetcher)` as the fetch loop,
`_wait_next_records`, `_to_message`, `callback`, `_read_offset`, `_committed_offset`,
`_acked`, `_acked_index`, `_n_acked`, `_commit_every`, `commit()`, `flow_active`,
`perform_seek()`, `consumer_stopped_errors`, and `App._new_transport()`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ["BatchHandler", "BatchingConsumer", "batching_transport"]

log = logging.getLogger("consentwatch.worker")

# (topic-partition, records) -> None when done, or an awaitable that completes once
# what the batch produced is delivered; the records are aiokafka ConsumerRecords.
BatchHandler = Callable[[Any, list[Any]], Awaitable[Awaitable[Any] | None]]


class BatchingConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    """Faust's aiokafka consumer with a batch path for the topics in `batch_handlers`."""

    batch_handlers: Mapping[str, BatchHandler] = {}
    _n_acked: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch_last: dict[Any, int] = {}  # last offset handled, by partition
        self._in_flight: set[asyncio.Future[None]] = set()

    async def _drain_messages(self, fetcher: Any) -> None:
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                records, active = await self._wait_next_records(1.0)
                await asyncio.sleep(0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    await self.perform_seek()
                    continue
                await self._drain_batch(records, active)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    async def _drain_batch(self, records: Mapping[Any, list[Any]], active: Any) -> None:
        generation = self.app.consumer_generation_id
        handlers = self.batch_handlers
        for tp, fetched in records.items():
            if not self.flow_active or self.app.consumer_generation_id != generation:
                return  # a rebalance began: these records are fetched again after it
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            read = self._read_offset[tp]
            # After a seek Faust keeps the next offset to read here, after a record the
            # last one read; either way, nothing below it is new.
            batch = fetched if read is None else [r for r in fetched if r.offset >= read]
            if not batch:
                continue
            handler = handlers.get(tp.topic)
            if handler is None:
                await self._one_by_one(tp, batch)
            else:
                delivered = await handler(tp, batch)
                offsets = self._offsets_of(tp, batch)
                if delivered is None:
                    self._ack(tp, offsets)
                else:
                    # Acknowledged once what the batch produced is delivered; the next
                    # batch is processed meanwhile (Faust commits runs without gaps).
                    task = asyncio.ensure_future(
                        self._ack_when_delivered(delivered, tp, offsets))
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)
            self._read_offset[tp] = batch[-1].offset
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()

    async def _one_by_one(self, tp: Any, batch: list[Any]) -> None:
        """Faust's own path: each record through the conductor's callback."""
        callback = self.callback
        for record in batch:
            message = self._to_message(tp, record)
            await self.wait_first(callback(message), self.suspend_flow.wait())

    def _offsets_of(self, tp: Any, batch: list[Any]) -> range:
        """The offsets a batch covers: its own, and those without a record just before
        it (transaction markers, say), which would otherwise stall the commit."""
        committed = self._committed_offset[tp]
        first = batch[0].offset
        floor = committed if committed is not None else first
        previous = self._batch_last.get(tp)
        if previous is not None and previous < first:
            floor = max(floor, previous + 1)
        last = batch[-1].offset
        self._batch_last[tp] = last
        return range(min(first, floor), last + 1)

    async def _ack_when_delivered(self, delivered: Awaitable[Any], tp: Any,
                                  offsets: range) -> None:
        try:
            await delivered
        except Exception:
            # Not acknowledged: the commit stops before this batch, which is read again
            # after the next restart or rebalance.
            log.exception("a batch of %s was not delivered", tp)
            return
        # Acknowledged even when a rebalance came in between: what it produced is out,
        # and Faust commits only the partitions still assigned. Dropping it would leave
        # a gap that stops the partition's commits where it kept the partition.
        self._ack(tp, offsets)

    def _ack(self, tp: Any, offsets: range) -> None:
        committed = self._committed_offset[tp]
        acked = self._acked[tp]
        index = self._acked_index[tp]
        added = 0
        for offset in offsets:
            if offset not in index and (committed is None or offset >= committed):
                index.add(offset)
                acked.append(offset)
                added += 1
        self._n_acked += added


class BatchingTransport(faust_aiokafka.Transport):  # type: ignore[misc]
    Consumer = BatchingConsumer


def batching_transport(handlers: Mapping[str, BatchHandler]) -> type[BatchingTransport]:
    """A transport whose consumers send the topics of `handlers` down the batch path."""
    consumer = type("WorkerConsumer", (BatchingConsumer,), {"batch_handlers": handlers})
    return type("WorkerTransport", (BatchingTransport,), {"Consumer": consumer})
