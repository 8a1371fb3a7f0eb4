"""Faust's, mode's and aiokafka's private names, every one of them, and nothing else.

faust-streaming is pinned to a minor version (pyproject.toml), and
tests/kafka/test_faust_adapter.py checks that it still has each name used here and that no
other module of streams/ uses one: an upgrade that renames one breaks that test, here,
not the worker at run time.

The batch path. Faust hands every record to an agent through the conductor, a
channel queue and the stream iterator: several asyncio tasks and about 150 µs per
record, whatever the agent does. The worker's own topics do not need that:
`BatchingConsumer` replaces the consumer's drain loop, and for a topic with a batch
handler it gives the handler all the records of one partition that a fetch returned,
then runs the batch's ordered commit (`BatchingConsumer._commit_in_order`). Every
other topic (the tables' changelogs during recovery) still takes Faust's own
per-message path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = [
    "BatchCommit",
    "BatchHandler",
    "BatchingConsumer",
    "FailedDelivery",
    "IdempotentProducer",
    "app_class",
    "batch_recovery",
    "batching_transport",
    "consumer_of",
    "partition_count",
    "partition_db",
    "producer_of",
    "refresh_metadata",
    "shutting_down_immediately",
    "worker_class",
]

log = logging.getLogger("consentwatch.worker")


@dataclass(frozen=True, slots=True)
class BatchCommit:
    """What must be delivered before a batch's offsets may be committed."""

    # Everything the batch sent: findings, amendments, dead letters, forwarded records.
    outputs: Awaitable[Any]
    # The flush that carries the state the batch changed to the changelog (None: the
    # batch changed no state, or its flush is in `outputs` already).
    changelog: Awaitable[Any] | None = None


# (topic-partition, records) -> None when nothing is to be delivered, or the batch's
# BatchCommit; the records are aiokafka ConsumerRecords.
BatchHandler = Callable[[Any, list[Any]], Awaitable[BatchCommit | None]]

# (topic-partition, offsets, error) -> None: a batch's outputs or changelog flush were
# not delivered (`BatchingConsumer._commit_in_order`).
FailedDelivery = Callable[[Any, range, Exception], None]


class FetchedRecords(dict[Any, list[Any]]):
    """The records of one fetch, by partition, and `positions`: where the consumer stood
    in each partition it was asked for once they were taken, read in aiokafka's own
    thread at that moment. A position follows the last record taken, and the control
    records after it (transaction markers), which aiokafka skips and never returns."""

    positions: dict[Any, int]


class PositionedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    """Faust's consumer thread, whose fetches return `FetchedRecords`."""

    async def _fetch_records(self, consumer: Any, active_partitions: Any,
                             timeout: float | None = None,
                             max_records: int | None = None) -> Any:
        records = await super()._fetch_records(consumer, active_partitions, timeout=timeout,
                                               max_records=max_records)
        fetched = FetchedRecords(records)
        assignment = consumer._fetcher._subscriptions.subscription.assignment
        positions: dict[Any, int] = {}
        if assignment is not None:
            # A copy, taken at once (the main thread changes Faust's set of active
            # partitions while this thread would be iterating it).
            for tp in tuple(active_partitions or records):
                state = assignment.state_value(tp)
                if state is not None and state.has_valid_position:
                    positions[tp] = state.position
        fetched.positions = positions
        return fetched


class BatchingConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    """Faust's aiokafka consumer with a batch path for the topics in `batch_handlers`."""

    batch_handlers: Mapping[str, BatchHandler] = {}
    # Called when a batch was not delivered; None: it is logged.
    on_failed_delivery: FailedDelivery | None = None
    _n_acked: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch_last: dict[Any, int] = {}  # last offset handled, by partition
        self._seeks = 0  # seeks begun: a fetch's positions are stale after one
        self._in_flight: set[asyncio.Future[bool]] = set()
        # by partition, the ordered commit of its last batch, until it acknowledged
        self._last_commit: dict[Any, asyncio.Future[bool]] = {}

    def _new_consumer_thread(self) -> Any:
        return PositionedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def next_offset(self, tp: Any) -> int | None:
        """The offset after the last record handed to a handler; before the first, where
        this consumer started (its committed offset, kept by Faust's seek); or None."""
        last = self._batch_last.get(tp)
        start = last + 1 if last is not None else self._read_offset[tp]
        return None if start is None else int(start)

    def committed_offset(self, tp: Any) -> int | None:
        """The partition's committed offset as this consumer knows it: the group's when
        it was assigned (Faust's seek), then its own latest commit; None: none yet."""
        committed = self._committed_offset.get(tp)
        return None if committed is None else int(committed)

    async def perform_seek(self) -> None:
        """Faust's seek of every assigned partition to its committed offset (after each
        rebalance): what the batch path handled before it is of the old assignment.

        Kept, the last offset handled of a partition this worker had before (revoked and
        assigned again, or held in an earlier generation) made `next_offset` answer from
        the old position until the partition's first batch: a wrong lag, and an input
        partition reported caught up while its records were read again. So are the
        ordered commits still running: each partition's batches are read again from its
        committed offset, and acknowledged in order among themselves, waiting for none
        of the old assignment (which may never end)."""
        self._seeks += 1
        await super().perform_seek()
        self._batch_last.clear()
        self._last_commit.clear()

    async def _drain_messages(self, fetcher: Any) -> None:
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                generation, seeks = self.app.consumer_generation_id, self._seeks
                records, active = await self._wait_next_records(1.0)
                await asyncio.sleep(0)
                if self.should_stop:
                    continue
                if not self.flow_active:
                    if records:
                        await self.perform_seek()
                    continue
                if records:
                    await self._drain_batch(records, active)
                positions = getattr(records, "positions", None)
                if positions:
                    self._pass_over(positions, active, generation, seeks)
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
                commit = await handler(tp, batch)
                # A rebalance that began meanwhile seeks every partition to its committed
                # offset: this batch is acknowledged (below), but it no longer tells where
                # the partition's reading goes on.
                current = self.flow_active and self.app.consumer_generation_id == generation
                offsets = self._offsets_of(tp, batch, keep=current)
                previous = self._last_commit.get(tp)
                if commit is None and previous is None:
                    self._ack(tp, offsets)
                    await self._commit_if_due()
                else:
                    # The next batch is processed meanwhile; its offsets are acknowledged
                    # after this batch's (`_commit_in_order`).
                    self._commit_later(commit, tp, offsets, previous)
                if not current:
                    return  # where the rebalance's seek left the partition, it stays
            self._read_offset[tp] = batch[-1].offset

    def _commit_later(self, commit: BatchCommit | None, tp: Any, offsets: range,
                      previous: asyncio.Future[bool] | None) -> None:
        """`_commit_in_order` of `offsets` as a task: the partition's last commit now."""
        task = asyncio.ensure_future(self._commit_in_order(commit, tp, offsets, previous))
        self._last_commit[tp] = task
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _commit_in_order(self, commit: BatchCommit | None, tp: Any, offsets: range,
                               previous: asyncio.Future[bool] | None) -> bool:
        """The ordered commit of one batch (as quix-streams' `Checkpoint.commit`); True
        once its offsets are acknowledged. `commit` None: nothing to deliver; `previous`:
        the ordered commit of the partition's batch before it, if still running.

        1. Findings delivered: every record the batch sent (findings, amendments, dead
           letters, forwarded events, markers) is acknowledged by the broker.
        2. Changelog delivered: the state the batch changed is in the changelog (the
           first flush after the batch), and the store recorded the changelog offset.
        3. In order: the partition's batch before this one is acknowledged. Faust does
           not hold back every gap (`_new_offset` skips its check while the committed
           offset is None or 0, and passes a gap of one offset at the head): a later
           batch acknowledged first could be committed past one not delivered.
        4. Offsets acknowledged: the batch's offsets join the partition's acknowledged
           run, as Faust's own `ack` adds a message's.
        5. Committed: once `broker_commit_every` offsets are acknowledged (and on Faust's
           commit timer, every `broker_commit_interval`), Faust commits each partition
           up to its first offset not acknowledged.

        A step that fails ends the procedure: the offsets stay unacknowledged, and so do
        those of the partition's later batches (3), its commits stop before them, and
        the batch is read again after the next restart or rebalance. A delivery that
        fails (1, 2) is handed to `on_failed_delivery` (the worker stops, so the batch is
        read again, whole, at once), else logged; a cancelled one (shutdown) is neither.
        Acknowledged even when a rebalance came in between steps: what it produced is
        out, and Faust commits only the partitions still assigned (dropping it would
        leave a gap that stops the partition's commits where it kept the partition).
        """
        try:
            if commit is not None:
                await commit.outputs  # 1
                if commit.changelog is not None:
                    await commit.changelog  # 2
        except Exception as exc:
            failed = self.on_failed_delivery
            if failed is None:
                log.exception("a batch of %s was not delivered", tp)
            else:
                failed(tp, offsets, exc)
            return False
        if previous is not None:
            await asyncio.wait((previous,))  # 3 (cancelling this one leaves it running)
            if previous.cancelled() or not previous.result():
                return False
        self._ack(tp, offsets)  # 4
        if self._last_commit.get(tp) is asyncio.current_task():
            del self._last_commit[tp]  # no later batch waits: the next one needs no task
        await self._commit_if_due()  # 5
        return True

    async def _commit_if_due(self) -> None:
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()

    async def _one_by_one(self, tp: Any, batch: list[Any]) -> None:
        """Faust's own path: each record through the conductor's callback, in order, until
        the flow is suspended (a rebalance) or the consumer stops or crashes.

        Faust's loop races each record's callback against those (`wait_first`: four
        tasks and a wait per record, most of a changelog restore's time); a suspension
        then drops the rest of the batch, one record at a time. Here the batch is raced
        once, with the same outcome: the records after a suspension are not delivered
        (they are fetched again after the rebalance's seek)."""
        await self.wait_first(self._deliver(tp, batch), self.suspend_flow.wait())

    async def _deliver(self, tp: Any, batch: list[Any]) -> None:
        callback = self.callback
        to_message = self._to_message
        for record in batch:
            await callback(to_message(tp, record))

    def _pass_over(self, positions: Mapping[Any, int], active: Any, generation: int,
                   seeks: int) -> None:
        """After a fetch's records were handed over: a batch partition whose consumed
        position is past its next offset has only offsets without a record for us
        between them (transaction markers, aborted records): they count as handed over,
        and are acknowledged after the partition's batches. Without this, an input whose
        last records were written in a transaction was never read to its end (never
        idle, so the watermark waited for its next record), and its committed offset
        stayed one below the end. `generation` and `seeks`: as they were before the fetch;
        after a rebalance or a seek (Faust seeks within a generation too, after a table's
        recovery) the positions are stale, and the seek decides where reading goes on."""
        if (not self.flow_active or self.app.consumer_generation_id != generation
                or self._seeks != seeks):
            return
        for tp, position in positions.items():
            if tp.topic not in self.batch_handlers:
                continue
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue  # its records were not handed over (`_drain_batch`)
            start = self.next_offset(tp)
            if start is None or position <= start:
                continue
            self._batch_last[tp] = position - 1
            offsets = range(start, position)
            previous = self._last_commit.get(tp)
            if previous is None:
                self._ack(tp, offsets)
            else:
                self._commit_later(None, tp, offsets, previous)

    def _offsets_of(self, tp: Any, batch: list[Any], keep: bool = True) -> range:
        """The offsets a batch covers: its own, and those without a record just before
        it (transaction markers, say), which would otherwise stall the commit. `keep`:
        the batch is the partition's last one handled (`next_offset`)."""
        committed = self._committed_offset[tp]
        first = batch[0].offset
        floor = committed if committed is not None else first
        previous = self._batch_last.get(tp)
        if previous is not None and previous < first:
            floor = max(floor, previous + 1)
        last = batch[-1].offset
        if keep:
            self._batch_last[tp] = last
        return range(min(first, floor), last + 1)

    def _ack(self, tp: Any, offsets: range) -> None:
        """Faust's `Consumer.ack`, for a run of offsets at once."""
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


class IdempotentProducer(faust_aiokafka.Producer):  # type: ignore[misc]
    """Faust's producer (acks=all by default) with idempotence: a send retried after a
    broker failed over is written once, not twice, and stays in order."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class BatchingTransport(faust_aiokafka.Transport):  # type: ignore[misc]
    Consumer = BatchingConsumer
    Producer = IdempotentProducer


def batching_transport(handlers: Mapping[str, BatchHandler],
                       on_failed_delivery: FailedDelivery | None = None
                       ) -> type[BatchingTransport]:
    """A transport whose consumers send the topics of `handlers` down the batch path;
    `on_failed_delivery`: called with a batch whose outputs or changelog flush were not
    delivered (None: it is logged)."""
    attributes: dict[str, Any] = {"batch_handlers": handlers}
    if on_failed_delivery is not None:
        attributes["on_failed_delivery"] = staticmethod(on_failed_delivery)
    consumer = type("WorkerConsumer", (BatchingConsumer,), attributes)
    return type("WorkerTransport", (BatchingTransport,), {"Consumer": consumer})


def app_class(base: type, transport: type[BatchingTransport]) -> type:
    """Faust's App class `base`, with `transport` for its consumer, and tables registered
    as soon as it starts (`prompt_table_manager`)."""

    class App(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("TableManager", prompt_table_manager())
            super().__init__(*args, **kwargs)

        def _new_transport(self) -> Any:
            return transport(self.conf.broker_consumer, self)

    return App


def prompt_table_manager() -> type:
    """Faust's TableManager without the second it sleeps before registering the tables'
    changelogs (so that agents started late can still declare tables): the worker
    declares its one table before it starts (`build_app`), and the pause only delayed
    every start, by a second of the 1M benchmark's 25. Its recovery is `batch_recovery`'s."""
    from faust.tables import TableManager

    recovery_class = batch_recovery()

    class PromptTableManager(TableManager):  # type: ignore[misc]
        async def on_start(self) -> None:
            if not self.should_stop:
                await self._update_channels()
                await self.recovery.start()

        @property
        def recovery(self: Any) -> Any:
            if self._recovery is None:
                self._recovery = recovery_class(self.app, self, beacon=self.beacon,
                                                loop=self.loop)
            return self._recovery

    return PromptTableManager


# The most changelog records `batch_recovery` takes from the queue at once (the queue
# holds at most the app's stream_buffer_maxsize, 4096 by default).
RECOVERY_BATCH = 4096


def batch_recovery() -> type:
    """Faust's Recovery, reading the changelog queue a batch at a time.

    Faust's `_slurp_changelogs` takes one record per `asyncio.wait_for(queue.get())`
    (a task and a timer each, and so several turns of the event loop), formats two
    debug lines per record whether or not they are logged, and after each record
    sums what every partition has left. Here, once a record is there, the records
    already queued behind it are taken without waiting and applied in turn with
    Faust's bookkeeping, and whether the recovery is done is asked once per batch.
    With the changelog delivered a batch at a time (`BatchingConsumer._one_by_one`),
    a cold worker's restore became about 4x faster (benchmarks/restore.py); the
    delivery alone gave about 1.2x.
    A record of a partition neither active nor standby is left out, with a warning
    (Faust's loop applied it to the previous record's table)."""
    from time import monotonic

    from faust.tables.recovery import Recovery
    from faust.utils.tracing import finish_span
    from mode import Service

    recovery_log = logging.getLogger(Recovery.__module__)  # Faust's, as its own lines

    class BatchRecovery(Recovery):  # type: ignore[misc]
        # A service task, as Faust's: mode starts the tasks its class names so.
        @Service.task  # type: ignore[untyped-decorator]
        async def _slurp_changelogs(self: Any) -> None:
            if self.app.in_transaction:  # exactly-once: Faust's own, aborted transactions
                await Recovery._slurp_changelogs.fun(self)
                return
            queue = self.tables.changelog_queue
            while not self.should_stop:
                try:
                    self.signal_recovery_end.clear()
                    try:
                        first = await asyncio.wait_for(queue.get(), timeout=5.0)
                    except TimeoutError:
                        if self.should_stop:
                            return
                        self._end_if_recovered()
                        continue
                    events = [first]
                    try:
                        while len(events) < RECOVERY_BATCH and not queue.empty():
                            events.append(queue.get_nowait())
                    except Exception as exc:  # an error the queue held, not a record
                        recovery_log.warning("Error in recovery %s", exc)
                    # One by one, as Faust's loop: an error costs its record, never the
                    # rest of the batch (already off the queue, never fetched again). A
                    # failed apply keeps its buffer, applied again with the next record.
                    for event in events:
                        try:
                            await self._apply_changelog_event(event)
                        except Exception as exc:
                            recovery_log.warning("Error in recovery %s", exc)
                    self._end_if_recovered()
                    if (not (self._standbys_span is None and self.tables.standbys_ready)
                            and not self.standby_remaining_total()):
                        if self._standbys_span:
                            finish_span(self._standbys_span)
                            self._standbys_span = None
                        self.tables.on_standbys_ready()
                except Exception as exc:
                    recovery_log.warning("Error in recovery %s", exc)

        async def _apply_changelog_event(self: Any, event: Any) -> None:
            now = monotonic()
            message = event.message
            tp = message.tp
            offset = message.offset
            bufsize = self.buffer_sizes.get(tp)
            is_active = tp in self.active_tps
            if is_active:
                table = self.tp_to_table[tp]
                offsets = self.active_offsets
                if bufsize is None:
                    bufsize = self.buffer_sizes[tp] = table.recovery_buffer_size
                self._active_events_received_at[tp] = now
            elif tp in self.standby_tps:
                table = self.tp_to_table[tp]
                offsets = self.standby_offsets
                if bufsize is None:
                    bufsize = self.buffer_sizes[tp] = table.standby_buffer_size
                    self._standby_events_received_at[tp] = now
            else:
                recovery_log.warning("a changelog record of %s, not assigned here, "
                                     "offset %s: left out", tp, offset)
                return
            seen_offset = offsets.get(tp)
            if seen_offset is not None and offset <= seen_offset:
                return
            offsets[tp] = offset
            buf = self.buffers[table]
            buf.append(event)
            await table.on_changelog_event(event)
            if len(buf) >= bufsize:
                table.apply_changelog_batch(buf)
                buf.clear()
                self._last_flush_at = now
            if is_active:
                now_after = monotonic()
                last_processed_at = self._last_active_event_processed_at
                if last_processed_at is not None:
                    times = self._processing_times
                    times.append(now_after - last_processed_at)
                    if len(times) > self.num_samples_required_for_estimate:
                        times.popleft()
                self._last_active_event_processed_at = now_after

        def _end_if_recovered(self: Any) -> None:
            if self.in_recovery and not self.need_recovery():
                self.flush_buffers()  # what is still in the buffers
                self._set_recovery_ended()
                if self._actives_span is not None:
                    self._actives_span.set_tag("Actives-Ready", True)
                self.signal_recovery_end.set()

    # mode names a service's logger after its class's module as the class is made
    # (replacing any logger it named so before): this one logs as Faust's recovery,
    # whose progress lines the worker keeps and operators read.
    BatchRecovery.logger = Recovery.logger
    return BatchRecovery


def producer_of(app: Any) -> Any:
    """The app's started aiokafka producer (to append whole producer batches)."""
    return app.producer._ensure_producer()


def consumer_of(app: Any) -> Any:
    """The app's consumer once it was made, else None (`app.consumer` would make it)."""
    return getattr(app, "_consumer", None)


def partition_count(consumer: Any, topic: str) -> int | None:
    """How many partitions `topic` has, from the consumer's cluster metadata.

    Not Faust's `topic_partitions`: it reads the group coordinator's metadata snapshot,
    which only the group's leader keeps, so on any other worker it knows nothing.
    """
    try:
        cluster = consumer._thread._ensure_consumer()._client.cluster
        partitions = cluster.partitions_for_topic(topic)
    except Exception:  # not started yet
        return None
    return len(partitions) if partitions else None


def partition_db(store: Any, partition: int) -> Any:
    """The RocksDB (rocksdict) database of one partition of Faust's table store
    (`table.data`), or None for a store without one (memory)."""
    db_for_partition = getattr(store, "_db_for_partition", None)
    return None if db_for_partition is None else db_for_partition(partition)


async def refresh_metadata(consumer: Any) -> None:
    """Ask the broker for the cluster's metadata now (an aiokafka consumer's
    `partitions_for_topic` only knows topics it has metadata for)."""
    await consumer._client.force_metadata_update()


def worker_class(base: type, on_stop_signal: Callable[[], None]) -> type:
    """mode's Worker class `base`, calling `on_stop_signal` before it handles SIGTERM
    or SIGINT (Ctrl-C)."""

    class Worker(base):  # type: ignore[misc]
        def _on_sigterm(self) -> None:
            on_stop_signal()
            super()._on_sigterm()

        def _on_sigint(self) -> None:
            on_stop_signal()
            super()._on_sigint()

    return Worker


def shutting_down_immediately(worker: Any) -> bool:
    """Whether Faust's Worker is stopping before it ever served."""
    return bool(worker._shutdown_immediately)
