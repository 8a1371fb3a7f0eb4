"""`consentwatch worker`: the Faust app that puts the engine on Kafka.

Two stages, each fed in batches straight from the consumer's fetches (see
`faust_adapter.py`; Faust's per-record agent path costs more than the engine itself):

1. `route` reads every input topic, decodes each record, sends poison records to
   the dead-letter topic (with source topic, partition, offset, reason and the
   original bytes) and forwards valid ones to the correlate topic keyed by subject,
   as the validated event's values (`streams/serde/relay.py`: no second Avro
   decode). A FeatureToggled is account-wide, so it is copied to every partition
   of the correlate topic. After the records, it sends every correlate partition a
   marker with the watermark and state (active, idle, ended) of each input partition
   it reads (`watermarks.py`); a timer sends one every second too. A control record
   (`control.py`: end of input) is no event: it only marks its input partition ended.
2. `correlate` runs one engine per partition of the correlate topic. Its watermark
   is the minimum over the input partitions that are not idle, so records that one
   input (or one worker) delivers ahead of another are never made late by it; with
   every input idle it advances with the wall clock. The watermark and the input
   partitions' marks are saved with the state, so pending decisions are taken after a
   rebalance or a restart with or without new traffic. State is in
   a Faust table (RocksDB through rocksdict by default, memory as an option),
   written at most every `state_flush_interval_s` (`faust_store.py`): a subject
   touched by many batches in that time is serialised and logged once.

Direct mode (`WorkerSettings.direct`, chosen at start by `kafka_io.input_path`): when
every subject-keyed input topic has the correlate topic's partition count, `direct`
reads partition p of each into correlate partition p's engine (Faust's assignor gives
partition p of topics of one count subscribed together to one worker); an event whose
subject is on another partition is forwarded as `route` would, and the toggles topic
still goes through `route`. Watermarks are unchanged: every input partition is reported
in the markers, and each correlate partition takes the minimum over all of them, so a
forwarded event is covered as before. Decisions record positions of several inputs
(`positions.py`), so recovery sends again what was decided at or after each input's
committed offset.

Delivery is at-least-once. A batch's findings are sent as soon as it is processed;
each handler returns the batch's `BatchCommit` (its outputs, and the flush that carries
its state), and the ordered commit (`faust_adapter.BatchingConsumer._commit_in_order`)
acknowledges and commits its offsets only after both are delivered; after a restart, decisions
recorded at or after the first offset read again are sent again
(`Engine.decided_since`), so no finding is lost and a copy carries the same finding
id, rule, subject, trigger and evidence.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import orjson

from streams.engine import Engine, EngineParams
from streams.errors import InvalidEvent, RegistryUnavailable
from streams.kafka.connection import KafkaConnection
from streams.kafka.faust_adapter import (
    BatchCommit,
    BatchHandler,
    app_class,
    batching_transport,
    consumer_of,
    partition_count,
    producer_of,
)
from streams.kafka.murmur2 import partition_for
from streams.kafka.topics import MAX_RECORD_BYTES, TopicNames, replica_configs
from streams.metrics import EnginePartition, PartitionView, PipelineMetrics
from streams.model.events import FeatureToggled
from streams.model.findings import Amendment, DeadLetter, Finding
from streams.model.validate import refuse_future
from streams.pipeline.control import END_OF_INPUT, control_kind, is_control
from streams.pipeline.marker_gate import HeldMarker, MarkerGate
from streams.pipeline.positions import position_of, resend_after
from streams.pipeline.watermarks import (
    ACTIVE,
    END,
    SourceClocks,
    SourceReport,
    SourceWatermarks,
    decode_marker_read_to,
    encode_marker,
    is_marker,
    source_id,
    source_tp,
)
from streams.privacy.pseudonymise import Pseudonymiser, default_pseudonymiser
from streams.runtime import StateCollector
from streams.serde.relay import decode_relayed, encode_relayed, is_relayed
from streams.serde.wire import (
    SingleObjectFraming,
    WireFormat,
    await_schemas,
    encode_finding,
    encode_output,
    finding_writer,
)
from streams.state.faust_store import TableStore

__all__ = ["WorkerSettings", "build_app"]

log = logging.getLogger("consentwatch.worker")

# Route sends markers after its batches at most this often (and every tick_interval_s).
_MARKER_INTERVAL_S = 0.1
# A dead letter keeps at most this much of its record (the rest is named by its digest).
MAX_DEAD_LETTER_PAYLOAD = 256 * 1024
_PARTITION_CACHE = 1_000_000
# How long a revocation waits for the revoked partitions' last flush to be delivered.
_REVOKED_FLUSH_WAIT_S = 30.0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    connection: KafkaConnection
    topics: TopicNames = field(default_factory=TopicNames)
    data_dir: Path = Path("var/worker")
    partitions: int = 4
    replication: int = 1
    store: str = "rocksdb"  # or "memory"
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    params: EngineParams = field(default_factory=EngineParams)
    tick_interval_s: float = 1.0
    # How long a correlate partition's changed state may stay unwritten. Each flush
    # serialises every subject changed since the last one, so a longer interval writes
    # a busy subject fewer times; the offsets its batches cover are committed only
    # after the flush, so after a crash up to this much more input is read again
    # (Kafka Streams flushes its state caches at each commit, every 30 s by default).
    # A batch flushes its partition once this is over; so does a timer, on a partition no
    # batch reaches (`_Pipeline.flush_due`).
    state_flush_interval_s: float = 30.0
    # Once no batch changed the worker's state for this long, its partitions are flushed
    # without waiting for the interval: with no traffic to share a flush, waiting saves
    # nothing and only holds back their commits (consumer lag, a restart's re-reading).
    state_flush_quiet_s: float = 1.0
    # A flush also starts once this many keys are waiting (bounds a flush's size).
    state_flush_max_keys: int = 50_000
    framing: WireFormat = field(default_factory=SingleObjectFraming)
    # None: the public development key (the CLI warns); one key for every worker
    pseudonymiser: Pseudonymiser | None = None
    # Read the subject-keyed input topics directly (they have `partitions` partitions:
    # `kafka_io.input_path`), and why this path was chosen (logged at start).
    direct: bool = False
    input_path_reason: str = ""


class _Partition:
    """One correlate partition's engine, store and source watermarks, and the batches
    whose state changes wait for the next flush."""

    __slots__ = ("changes_seen", "dirty_since", "engine", "flushing", "gate", "in_flight",
                 "saved", "sources", "store", "unflushed_outputs", "waiting")

    def __init__(self, engine: Engine, store: TableStore, sources: SourceWatermarks,
                 gate: MarkerGate) -> None:
        self.engine = engine
        self.store = store
        self.sources = sources
        self.gate = gate
        self.dirty_since: float | None = None  # monotonic time of the first unflushed change
        # Its store's count of changes at its last batch (`_Pipeline.traffic_at`).
        self.changes_seen = 0
        self.waiting: list[asyncio.Future[None]] = []  # resolved once a flush is delivered
        self.saved: tuple[Any, ...] | None = None  # the last progress put (`_progress`)
        self.in_flight: asyncio.Future[None] | None = None  # the last flush, until delivered
        self.flushing = asyncio.Lock()
        # The outputs of the batches whose state waits for the next flush: it waits for them.
        self.unflushed_outputs: list[asyncio.Future[Any]] = []

    def _progress(self) -> tuple[Any, ...]:
        """The event-time progress: watermark, greatest event time, the sources' marks,
        idle wall time, the sources' states and the marker offset they hold."""
        engine, sources = self.engine, self.sources
        # With a marker held by the gate (direct mode), the offsets committed may pass it
        # before it is applied: states saved without it would stand, after a restart or a
        # move, for what it said, which is never read again. Saved without states, the
        # next owner learns them again from the reports.
        held = self.gate.held() > 0
        return (engine.watermark, engine.max_seen, sources.reported(), sources.idle_wall(),
                {} if held else sources.states(), None if held else sources.states_offset())

    def save_progress(self) -> None:
        """Put the event-time progress in the store when it changed (the next flush
        writes it, after the state it goes with)."""
        progress = self._progress()
        if progress != self.saved:
            self.saved = progress
            self.store.put_meta(orjson.dumps({"watermark": progress[0],
                                              "max_seen": progress[1],
                                              "sources": progress[2],
                                              "idle_wall": progress[3],
                                              "states": progress[4],
                                              "states_offset": progress[5]}))

    def restore_progress(self) -> None:
        raw = self.store.meta()
        if raw is None:
            return
        try:
            saved = orjson.loads(raw)
            watermark, max_seen = int(saved["watermark"]), int(saved["max_seen"])
            marks = {str(k): int(v) for k, v in saved["sources"].items()}
            idle_wall = saved.get("idle_wall")  # absent in what older versions saved
            idle_wall = None if idle_wall is None else int(idle_wall)
            # absent in what older versions saved: the states are learnt again
            states = {str(k): str(v) for k, v in saved.get("states", {}).items()}
            states_offset = saved.get("states_offset")
            states_offset = None if states_offset is None else int(states_offset)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            log.error("partition %s: its saved watermark cannot be read; it is rebuilt "
                      "from the input partitions' reports", self.store.partition)
            return
        self.sources.restore(marks, idle_wall=idle_wall, states=states,
                             states_offset=states_offset)
        self.engine.max_seen = max(self.engine.max_seen, max_seen)
        self.engine.watermark = max(self.engine.watermark, watermark)
        self.saved = self._progress()


_PARTITION_COUNTS: dict[str, int] = {}


class _Batch:
    """What one stage's batch sends: appended to producer batches, awaited together."""

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self._builders: dict[tuple[str, int], Any] = {}
        self.futures: list[asyncio.Future[Any]] = []
        self.batches: list[tuple[str, int, asyncio.Future[Any], int]] = []

    async def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None
                     ) -> None:
        builder = self._builders.get((topic, partition))
        if builder is None:
            builder = self._builders[(topic, partition)] = self._producer.create_batch()
        if builder.append(key=key, value=value, timestamp=None) is None:
            await self._send(topic, partition, builder)
            builder = self._builders[(topic, partition)] = self._producer.create_batch()
            if builder.append(key=key, value=value, timestamp=None) is None:
                raise ValueError("record larger than the producer's batch size")

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """One keyed record, partitioned as the producer's default partitioner would
        (murmur2 of the key): findings, amendments, dead letters."""
        count = _PARTITION_COUNTS.get(topic)
        if count is None:
            count = _PARTITION_COUNTS[topic] = len(await self._producer.partitions_for(topic))
        await self.append(topic, partition_for(key, count), key, value)

    async def _send(self, topic: str, partition: int, builder: Any) -> None:
        count = builder.record_count()
        future = await self._producer.send_batch(builder, topic, partition=partition)
        self.futures.append(future)
        self.batches.append((topic, partition, future, count))

    async def enqueue(self) -> asyncio.Future[list[tuple[str, int, int]]]:
        """Hand what is left to the producer; a future of the last offset of each batch,
        done once every record is delivered."""
        for (topic, partition), builder in self._builders.items():
            if builder.record_count():
                await self._send(topic, partition, builder)
        self._builders.clear()
        futures, batches = self.futures, self.batches

        async def delivered() -> list[tuple[str, int, int]]:
            if futures:
                await asyncio.gather(*futures)
            return [(topic, partition, future.result().offset + count - 1)
                    for topic, partition, future, count in batches]

        return asyncio.ensure_future(delivered())


class _Pipeline:
    """The worker's topics, table and per-partition engines; the batch handlers."""

    def __init__(self, app: Any, settings: WorkerSettings) -> None:
        names = settings.topics
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
               "value_serializer": "raw"}
        self.app = app
        self.settings = settings
        self.framing = settings.framing
        self.pseudonymiser = settings.pseudonymiser or default_pseudonymiser()
        finding_writer()  # at start: a Finding schema it cannot write stops the worker here
        self.input_topics = sorted(names.inputs.values())
        # Read by the correlate partitions themselves, in direct mode: source number
        # (positions.py) by topic.
        self.direct_topics: dict[str, int] = {}
        if settings.direct:
            subject_keyed = sorted(topic for kind, topic in names.inputs.items()
                                   if kind != FeatureToggled.TYPE)
            self.direct_topics = {topic: n for n, topic in enumerate(subject_keyed, 1)}
        self.inputs = app.topic(*self.input_topics, **raw)
        self.correlate = app.topic(names.correlate, partitions=settings.partitions, **raw)
        # bytes keys and values make Faust use its "raw" codec for the table and its store
        self.table = app.Table("state", default=None, partitions=settings.partitions,
                               key_type=bytes, value_type=bytes,
                               extra_topic_configs={
                                   **replica_configs(settings.replication),
                                   "max.message.bytes": str(MAX_RECORD_BYTES)})
        self.partitions: dict[int, _Partition] = {}
        params = settings.params
        self.clocks = SourceClocks(params.allowed_lateness_ms, params.idle_timeout_ms)
        self._earliest: dict[str, int] = {}
        self._expected: list[str] | None = None
        self._partition_of: dict[bytes, int] = {}
        self._markers_sent = 0.0
        self.metrics = PipelineMetrics(view=_WorkerView(self))
        # Keeps the cyclic collector off the engine state after each flush (16% more
        # events/s in a same-hour A/B on the 1M mix).
        self._collector = StateCollector()
        self._last_report: dict[str, SourceReport] = {}
        # Held by an input batch from its first send to its last, and by the timer's
        # report (`tick_markers`): see there.
        self._sending = asyncio.Lock()
        # Direct mode: the next offset of each input partition its engine has read, sent
        # with every marker (marker_gate.py).
        self._read_to: dict[str, int] = {}
        self._handling: int | None = None  # the correlate partition a batch is in
        # When a batch last changed the state of any partition (events taken, or the
        # decisions a marker let it take): the worker's traffic, for `flush_due`.
        self.traffic_at = time.monotonic()

    # -- helpers ---------------------------------------------------------------------

    def _producer(self) -> Any:
        return producer_of(self.app)

    def _app_consumer(self) -> Any:
        return self.app.consumer

    def _correlate_partition(self, key: bytes) -> int:
        partition = self._partition_of.get(key)
        if partition is None:
            if len(self._partition_of) >= _PARTITION_CACHE:
                self._partition_of.clear()
            partition = partition_for(key, self.settings.partitions)
            self._partition_of[key] = partition
        return partition

    async def _dead_letter(self, batch: _Batch, tp: Any, record: Any,
                           error: InvalidEvent, event: Any = None) -> None:
        """`event`: the record's event when it decoded; the payload is then that event in
        the input's own encoding (a correlate record holds it relayed, see relay.py)."""
        self.metrics.observe_dead_letter(error.code)
        payload = bytes(record.value or b"") if event is None else self.framing.encode(event)
        reason = error.message
        if len(payload) > MAX_DEAD_LETTER_PAYLOAD:
            # Whole, it may not fit a Kafka record: its delivery would fail, stopping the
            # worker on every restart. The record itself stays on its topic meanwhile.
            reason += (f" (payload: the first {MAX_DEAD_LETTER_PAYLOAD} of {len(payload)} "
                       f"bytes, whose SHA-256 is {hashlib.sha256(payload).hexdigest()}; the "
                       f"whole record is {tp.topic}[{tp.partition}]@{record.offset})")
            payload = payload[:MAX_DEAD_LETTER_PAYLOAD]
        letter = DeadLetter(source=tp.topic, partition=tp.partition, position=record.offset,
                            reason_code=error.code, reason=reason,
                            payload=payload, dead_lettered_at=_now_ms())
        key = f"{letter.source}/{letter.partition}/{letter.position}".encode()
        await batch.send(self.settings.topics.dead_letters, key, encode_output(letter))

    async def _send_outputs(self, batch: _Batch, outputs: Iterable[Finding | Amendment]
                            ) -> None:
        names = self.settings.topics
        pseudonymiser = self.pseudonymiser
        for output in outputs:
            if isinstance(output, Finding):
                await batch.send(names.findings, output.finding_id.encode(),
                                 encode_finding(output, pseudonymiser))
            else:
                await batch.send(names.amendments, output.amendment_id.encode(),
                                 encode_output(pseudonymiser.amendment(output)))

    def _decode(self, record: Any) -> Any:
        """The record's event; InvalidEvent for a poison record (a decoder bug too)."""
        try:
            value = record.value or b""
            if is_relayed(value):
                return decode_relayed(value)
            return self.framing.decode(value)
        except InvalidEvent:
            raise
        except Exception:  # a decoder bug must not stop the stage
            _log_bug("unexpected error decoding %s[%s]@%s", record.topic,
                     record.partition, record.offset)
            raise InvalidEvent("internal_error", "the record could not be decoded") from None

    async def _schemas_of(self, records: list[Any]) -> None:
        """The writer schemas of an input batch, resolved before it is decoded: a registry
        outage holds the batch (unacknowledged, in order) instead of dead-lettering
        valid records."""
        await await_schemas(self.framing, (r.value for r in records
                                           if r.value and not is_control(r.value)),
                            self._registry_unavailable)

    def _input_event(self, record: Any, future_skew_ms: int) -> Any:
        """The event of an input record; InvalidEvent for a poison record or one from
        the future (spec: "Time from the future")."""
        event = self._decode(record)
        # A record without a timestamp (-1, an old message format): the wall clock
        # stands for its reception.
        received = record.timestamp if record.timestamp >= 0 else None
        refuse_future(event.occurred_at, future_skew_ms, received)
        return event

    def _registry_unavailable(self, error: RegistryUnavailable, delay_s: float) -> None:
        self.metrics.observe_registry_error()
        log.warning("%s; the batch is read again in %.1f s", error, delay_s)

    # -- stage 1: route ---------------------------------------------------------------

    async def route(self, tp: Any, records: list[Any]) -> BatchCommit:
        async with self._sending:
            return await self._route(tp, records)

    async def _route(self, tp: Any, records: list[Any]) -> BatchCommit:
        batch = _Batch(self._producer())
        correlate = self.settings.topics.correlate
        partitions = range(self.settings.partitions)
        latest: int | None = None
        source = source_id(tp.topic, tp.partition)
        future_skew = self.settings.params.max_future_skew_ms
        await self._schemas_of(records)
        rejoined = False
        for record in records:
            if is_control(record.value):
                latest = await self._control(batch, tp, record, latest)
                continue
            try:
                event = self._input_event(record, future_skew)
            except InvalidEvent as error:
                await self._dead_letter(batch, tp, record, error)
                continue
            rejoined = rejoined or await self._rejoin(batch, source)
            relayed = encode_relayed(event)
            if type(event) is FeatureToggled:
                key = event.account_id.encode()
                for partition in partitions:
                    await batch.append(correlate, partition, key, relayed)
            else:
                key = event.subject_id.encode()
                await batch.append(correlate, self._correlate_partition(key), key, relayed)
            if latest is None or event.occurred_at > latest:
                latest = event.occurred_at
        delivered = await batch.enqueue()
        # Records are in the producer's queue before any marker that covers them.
        if latest is not None:
            self.clocks.observe(source, latest, _now_ms())
        if time.monotonic() - self._markers_sent >= _MARKER_INTERVAL_S:
            await self.send_markers()
        return BatchCommit(delivered)

    async def _rejoin(self, batch: _Batch, source: str, part: _Partition | None = None
                      ) -> bool:
        """Before the first event of a batch of an input partition this worker last
        reported idle or ended, or has not reported since it was assigned (its previous
        reader may have reported it ended or idle, `SourceClocks.report`): markers (in
        `batch`, ahead of the event) that report it active again, and `part` (direct
        mode: the partition that applies the events before it reads those markers back)
        told at once. Without them a correlate partition kept it out of its minimum
        until this worker's next marker, and a marker of another worker read meanwhile
        could move its watermark past the events (spec: an idle input takes part again
        from its next record). True (done for this batch)."""
        last = self._last_report.get(source)
        if last is None or last[1] != ACTIVE:
            self.clocks.rejoin(source, _now_ms())
            await self._append_markers(batch)
        # Whatever this worker last reported (a timer's report may have said it active
        # already): the partition's own view may be older (restored with its state).
        if part is not None and part.sources.state(source) != ACTIVE:
            part.sources.update({source: (None, ACTIVE)})
        return True

    async def _control(self, batch: _Batch, tp: Any, record: Any, latest: int | None
                       ) -> int | None:
        """An input's control record (no event): end of input marks its partition ended,
        after the records before it (`latest`: their greatest event time, not observed
        yet); returns what is left unobserved."""
        if not _is_end_of_input(tp, record):
            return latest
        source = source_id(tp.topic, tp.partition)
        if latest is not None:
            self.clocks.observe(source, latest, _now_ms())
        self.clocks.end(source, _now_ms())
        await self._append_markers(batch)  # after the records it covers
        return None

    async def send_markers(self, always: bool = False) -> None:
        """Every correlate partition gets this worker's report on its input partitions.

        After its batches, only a changed report is sent; the timer sends it `always`:
        a correlate partition that moved to another worker learns every source again
        from the records after its committed offset. Called by an input batch, or by the
        timer through `tick_markers`."""
        self._markers_sent = time.monotonic()
        report = self.clocks.report(_now_ms(), self._caught_up)
        if not report or (report == self._last_report and not always):
            return
        batch = _Batch(self._producer())
        await self._append_markers(batch, report)
        await batch.enqueue()

    async def tick_markers(self) -> None:
        """The timer's report (`send_markers(always=True)`), never while an input batch
        sends. A batch changes the clocks before all its records are with the producer
        (an end of input, `_control`; a rejoin, `_rejoin`), and the producer does not
        keep the order of two tasks' sends to a partition (a send that comes just after
        the partition's pending batch went out is appended before the one that waited
        for it). Interleaved, a report could reach a correlate partition ahead of the
        records it covers, or an older report (input ended) after a newer one (input
        active again) and that batch's records: either way a trigger is decided without
        records that then arrive late."""
        async with self._sending:
            await self.send_markers(always=True)

    async def _append_markers(self, batch: _Batch,
                              report: dict[str, SourceReport] | None = None) -> None:
        """This worker's report, appended to `batch` for every correlate partition."""
        if report is None:
            report = self.clocks.report(_now_ms(), self._caught_up)
        self._last_report = report
        log.debug("watermark report: %s", report)
        value = encode_marker(report, self._read_positions())
        for partition in range(self.settings.partitions):
            await batch.append(self.settings.topics.correlate, partition, None, value)

    def _read_positions(self) -> dict[str, int]:
        """How far this worker has read each input partition it reads directly, as the
        report says (`position`): after its last record handed over, or after the offsets
        without a record the consumer passed over since (transaction markers). Said
        without them, the partition's committed offset (past a marker) looked like
        records read after an idle report, which made the source active again for good."""
        consumer = self._app_consumer()
        read_to = self._read_to
        for source, offset in read_to.items():
            handed = consumer.next_offset(source_tp(source))
            if handed is not None and handed > offset:
                read_to[source] = handed
        return read_to

    def position(self, tp: Any) -> tuple[int, int] | None:
        """(next offset to hand over, high watermark) of a partition this worker reads,
        or None while either is not known.

        The next offset follows the last record handed to a stage, and the offsets
        without a record after it that the consumer passed over once every record
        before them was handed over (transaction markers); before the first, where this
        consumer started (its committed offset, kept by Faust's seek, or the earliest
        offset). Never the fetch position: records fetched ahead are not handed over yet.
        """
        consumer = self._app_consumer()
        try:
            highwater: int | None = consumer.highwater(tp)
        except Exception:  # not assigned any more, or not fetched yet
            return None
        if highwater is None:
            return None
        start = consumer.next_offset(tp)
        if start is None:
            start = self._earliest.get(source_id(tp.topic, tp.partition))
        if start is None:
            return None
        return int(start), int(highwater)

    def _caught_up(self, source: str) -> bool | None:
        position = self.position(source_tp(source))
        return None if position is None else position[0] >= position[1]

    async def refresh_earliest(self) -> None:
        """The earliest offsets of this worker's inputs, asked once for all of them."""
        missing = [source for source in self.clocks.sources() if source not in self._earliest]
        if not missing:
            return
        tps = {source_tp(source): source for source in missing}
        try:
            earliest = await self._app_consumer().earliest_offsets(*tps)
        except Exception:  # not assigned any more, or the broker is away: next tick
            return
        for tp, offset in earliest.items():
            if tp in tps and offset is not None:
                self._earliest[tps[tp]] = int(offset)

    # -- stage 1 and 2 at once: an input partition read by its correlate partition -----

    def _owns(self, number: int) -> bool:
        try:
            assignment = self._app_consumer().assignment()
        except Exception:  # not started, or rebalancing
            return False
        return source_tp(source_id(self.settings.topics.correlate, number)) in assignment

    async def direct(self, tp: Any, records: list[Any]) -> BatchCommit:
        async with self._sending:
            return await self._handle(self._direct, tp, records)

    async def _direct(self, tp: Any, records: list[Any]) -> BatchCommit:
        """A batch of partition p of a subject-keyed input topic, processed by correlate
        partition p's engine (direct mode): as `route`, but an event whose subject is on
        p is processed here instead of being forwarded. The ordered commit acknowledges
        the batch once its findings and its state's flush are delivered."""
        number = tp.partition
        if not self._owns(number):
            # Faust's assignor gives partition p of co-partitioned topics to one worker
            # (tests/pipeline: test_two_workers_each_get_partition_p_...); should that ever
            # not hold, forwarding is correct still.
            return await self._route(tp, records)
        outputs: list[Finding | Amendment] = []
        part = self._part(number, records[0].offset, outputs)
        engine = part.engine
        batch = _Batch(self._producer())
        correlate = self.settings.topics.correlate
        latest: int | None = None
        source = source_id(tp.topic, number)
        source_number = self.direct_topics[tp.topic]
        future_skew = self.settings.params.max_future_skew_ms
        await self._schemas_of(records)
        rejoined = False
        now = _now_ms()
        for record in records:
            if is_control(record.value):
                # everything before it went into the engine: the end marker covers it
                self._read_to[source] = record.offset + 1
                latest = await self._control(batch, tp, record, latest)
                continue
            try:
                event = self._input_event(record, future_skew)
            except InvalidEvent as error:
                await self._dead_letter(batch, tp, record, error)
                continue
            rejoined = rejoined or await self._rejoin(batch, source, part)
            if type(event) is FeatureToggled:  # account-wide: every partition
                key = event.account_id.encode()
                relayed = encode_relayed(event)
                for partition in range(self.settings.partitions):
                    await batch.append(correlate, partition, key, relayed)
            else:
                key = event.subject_id.encode()
                partition = self._correlate_partition(key)
                if partition != number:  # not keyed by subject with murmur2: forwarded
                    await batch.append(correlate, partition, key, encode_relayed(event))
                else:
                    counted = await self._process_here(
                        engine, event, position_of(source_number, record.offset), now,
                        outputs, batch, tp, record)
                    if counted is not None and (latest is None or counted > latest):
                        latest = counted
                    continue
            if latest is None or event.occurred_at > latest:
                latest = event.occurred_at
        self._read_to[source] = records[-1].offset + 1
        at = position_of(source_number, records[-1].offset)
        for ready in part.gate.read(source, records[-1].offset + 1):
            outputs.extend(self._apply_marker(part, ready, at))
        await self._send_outputs(batch, outputs)
        commit = await self._commit(part, number, batch)
        # Its records are processed, or with the producer (those forwarded to another
        # partition: `_commit` handed them over), before any marker covering them.
        if latest is not None:
            self.clocks.observe(source, latest, _now_ms())
        if time.monotonic() - self._markers_sent >= _MARKER_INTERVAL_S:
            await self.send_markers()
        return commit

    async def _process_here(self, engine: Engine, event: Any, at: int, now: int,
                            outputs: list[Finding | Amendment], batch: _Batch, tp: Any,
                            record: Any) -> int | None:
        """`event` into this partition's engine (direct mode); the event time it counted,
        which for a duplicate is its first copy's: a duplicate's own time must not move
        the input's watermark (spec: "otherwise ignored"). None when the engine failed
        (the record is then dead-lettered)."""
        try:
            outputs.extend(engine.process(event, wall_ms=now, position=at))
        except InvalidEvent as refused:  # a trigger beyond the engine's horizon
            await self._dead_letter(batch, tp, record, refused)
            return None
        except Exception:  # an engine bug must not stop the partition
            _log_bug("engine error at %s[%s]@%s", tp.topic, tp.partition, record.offset)
            await self._dead_letter(batch, tp, record, InvalidEvent(
                "internal_error", "the correlation stage failed on this record"))
            return None
        # For a duplicate, the first copy's time may be another input's: never above the
        # record's own.
        own: int = event.occurred_at
        return min(engine.counted_at, own)

    # -- stage 2: correlate -------------------------------------------------------------

    def expected_sources(self) -> list[str] | None:
        """Every input partition, once the topics' metadata is known."""
        if self._expected is None:
            consumer = self._app_consumer()
            sources: list[str] = []
            for topic in self.input_topics:
                count = partition_count(consumer, topic)
                if not count:
                    return None
                sources.extend(source_id(topic, n) for n in range(count))
            self._expected = sources
        return self._expected

    def open_partition(self, number: int, first_offset: int) -> tuple[_Partition, list[Finding]]:
        store = TableStore(self.table, number)
        engine = Engine(store, self.settings.params, external_watermark=True)
        if self.direct_topics:
            again = engine.recover(0, self._resend_after(number))
        else:
            again = engine.recover(first_offset)
        if again:
            log.info("partition %s: sending %d findings again after recovery", number, len(again))
        part = _Partition(engine, store, SourceWatermarks(self.expected_sources),
                          self._gate(number))
        # The watermark and the sources' marks saved with the state (never ahead of it):
        # without them a partition that moved, or restarted, with no new traffic would
        # wait for ever for reports of sources that have nothing more to say.
        part.restore_progress()
        self.partitions[number] = part
        return part, again

    def _gate(self, number: int) -> MarkerGate:
        """Partition `number`'s marker gate: its direct sources are read at least as far
        as their committed offsets (what is before them is in the state), and as far as
        the consumer handed them over (records, and the offsets without a record it passed
        over after them: a marker that says so is not held until the next commit)."""
        own = frozenset(source_id(topic, number) for topic in self.direct_topics)

        def handed_over(source: str) -> int:
            consumer = self._app_consumer()
            tp = source_tp(source)
            committed = consumer.committed_offset(tp)
            handed = consumer.next_offset(tp)
            return max(0 if committed is None else committed, 0 if handed is None else handed)

        return MarkerGate(own.__contains__, handed_over)

    def _resend_after(self, number: int) -> Callable[[int], bool]:
        """`resend_after` for partition `number`: each of its sources' committed offset,
        as the consumer sought to it on assignment (everything before it was delivered
        by the ordered commit)."""
        consumer = self._app_consumer()
        topics = {0: self.settings.topics.correlate,
                  **{n: topic for topic, n in self.direct_topics.items()}}
        committed: dict[int, int] = {}
        for n, topic in topics.items():
            offset = consumer.committed_offset(source_tp(source_id(topic, number)))
            committed[n] = 0 if offset is None else offset
        return resend_after(committed)

    def _part(self, number: int, first_offset: int, outputs: list[Finding | Amendment]
              ) -> _Partition:
        part = self.partitions.get(number)
        if part is None:
            part, again = self.open_partition(number, first_offset)
            outputs.extend(again)
        return part

    async def correlate_batch(self, tp: Any, records: list[Any]) -> BatchCommit:
        return await self._handle(self._correlate_batch, tp, records)

    async def _handle(self, handler: Callable[[Any, list[Any]], Awaitable[BatchCommit]],
                      tp: Any, records: list[Any]) -> BatchCommit:
        """`handler`'s batch, which changes correlate partition `tp.partition`'s state:
        `flush_due` leaves that partition alone meanwhile (its findings are not sent yet)."""
        self._handling = tp.partition
        try:
            return await handler(tp, records)
        finally:
            self._handling = None
            self._collector.keep()

    async def _correlate_batch(self, tp: Any, records: list[Any]) -> BatchCommit:
        number = tp.partition
        outputs: list[Finding | Amendment] = []
        part = self._part(number, records[0].offset, outputs)
        engine = part.engine
        batch = _Batch(self._producer())
        now = _now_ms()
        for record in records:
            value = record.value
            try:
                if is_marker(value):
                    report, read_to = decode_marker_read_to(value)
                    marker = HeldMarker(report, read_to, record.offset, _sent_at(record))
                    held = part.gate.held()
                    for ready in part.gate.offer(marker):
                        outputs.extend(self._apply_marker(part, ready, ready.offset))
                    if not held and part.gate.held():
                        log.warning("partition %s: its watermark waits until %s is read "
                                    "again as far as the worker that sent the marker at %s "
                                    "had read it", number, part.gate.waiting_for(), record.offset)
                    continue
                event = self._decode(record)
            except InvalidEvent as error:
                await self._dead_letter(batch, tp, record, error)
                continue
            try:
                outputs.extend(engine.process(event, wall_ms=now, position=record.offset))
            except InvalidEvent as refused:  # a trigger beyond the engine's horizon
                await self._dead_letter(batch, tp, record, refused, event)
            except Exception:  # an engine bug must not stop the partition
                _log_bug("engine error at %s[%s]@%s", tp.topic, tp.partition,
                         record.offset)
                await self._dead_letter(batch, tp, record, InvalidEvent(
                    "internal_error", "the correlation stage failed on this record"), event)
        await self._send_outputs(batch, outputs)
        return await self._commit(part, number, batch)

    async def _commit(self, part: _Partition, number: int, batch: _Batch) -> BatchCommit:
        """The BatchCommit of a batch of partition `number` whose outputs are in `batch`:
        its state flushed with it, or with a later batch (`state_flush_interval_s`)."""
        part.save_progress()
        if not part.store.dirty_keys():
            return BatchCommit(await batch.enqueue())  # nothing of its own waits for a flush
        if self.partitions.get(number) is not part:
            # Revoked while the batch was half-way (`flush_revoked` left it alone): the
            # rebalance is over and the next owner may be restoring the state already, so
            # it is not written. This batch, and those that waited for a flush, are not
            # acknowledged: the next owner reads them again.
            _cancel(part.waiting)
            part.waiting = []
            dropped: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            dropped.cancel()
            return BatchCommit(await batch.enqueue(), dropped)
        now_s = time.monotonic()
        changes = part.store.changes
        if changes != part.changes_seen:
            self.traffic_at, part.changes_seen = now_s, changes
        if part.dirty_since is None:
            part.dirty_since = now_s
        if (now_s - part.dirty_since >= self.settings.state_flush_interval_s
                or part.store.dirty_keys() >= self.settings.state_flush_max_keys):
            return await self._flush(part, number, batch)
        flushed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        part.waiting.append(flushed)
        delivered = await batch.enqueue()
        part.unflushed_outputs.append(delivered)
        return BatchCommit(delivered, flushed)

    def _apply_marker(self, part: _Partition, marker: HeldMarker, position: int
                      ) -> list[Finding | Amendment]:
        """The decisions a marker lets partition `part` take (`position`: what caused
        them, for `Engine.decided_since`)."""
        report = marker.report
        stale = [source for source in part.gate.read_past(marker)
                 if source in report and report[source][1] != ACTIVE]
        if stale:
            # Records after its end (or idle) report are in the engine already: they made
            # the source active again (`_rejoin`), which this older report must not undo.
            # An end applied now would decide them with everything before it.
            report = {**report, **{source: (report[source][0], ACTIVE) for source in stale}}
        part.sources.update(report, offset=marker.offset)
        engine = part.engine
        watermark = part.sources.watermark(engine.watermark, marker.sent_at)
        log.debug("partition %s: watermark %s", part.store.partition, watermark)
        if watermark == END:
            return engine.decide_pending(position=position)
        if watermark is not None:
            return engine.advance_to(watermark, position=position)
        return []

    async def _flush(self, part: _Partition, number: int,
                     batch: _Batch | None = None) -> BatchCommit:
        """Write the partition's changed state to its storage and changelog: the batch's
        outputs (in `batch`, the batch whose commit flushes) and the changelog's records,
        done once they are delivered and the store recorded it, which also releases the
        batches that waited for this flush.

        The state is written only once everything the batches it carries sent is
        delivered (findings, amendments, dead letters): a state holding an event as seen
        must never be stored while that event's outputs may still be lost. After a crash
        the event, read again, would be a duplicate, and an amendment it caused would
        never be sent again (`Engine.decided_since` re-sends findings, not amendments)."""
        changelog = self.table.changelog_topic.get_topic_name()
        outputs: list[asyncio.Future[Any]] = []
        waiting: list[asyncio.Future[None]] = []
        own = batch is not None  # else the timer's or a revocation's
        async with part.flushing:  # one flush of a partition at a time, in order
            # Done once this flush is delivered or failed: a revocation waits for it.
            in_flight = part.in_flight = asyncio.get_running_loop().create_future()
            try:
                if batch is not None:
                    part.unflushed_outputs.append(await batch.enqueue())
                # Batches of the partition may come meanwhile (this flush may be the timer's):
                # their outputs are waited for too.
                while part.unflushed_outputs:
                    pending, part.unflushed_outputs = part.unflushed_outputs, []
                    outputs.extend(pending)
                    await _delivered_or_stop(pending, number)
                if not own and self._handling == number:
                    # A batch of the partition began meanwhile: the state holds part of it
                    # and its outputs are not sent yet. It flushes when it is due.
                    _settle(in_flight)
                    return BatchCommit(asyncio.ensure_future(asyncio.gather(*outputs)))
                # From here to `store.flush()` nothing awaits: the state cannot change.
                waiting, part.waiting, part.dirty_since = part.waiting, [], None
                batch = _Batch(self._producer())
                for key, value in part.store.flush():
                    await batch.append(changelog, number, key, value)
                delivered = await batch.enqueue()
            except BaseException as error:
                # The batches that waited for this flush are not acknowledged (read again
                # after a restart), and their commit tasks end instead of waiting for ever.
                _fail(waiting or part.waiting, error)
                _settle(in_flight)
                raise
        delivered.add_done_callback(lambda _: _settle(in_flight))
        self._collector.settle()  # once the batch is with the producer: it waits for none
        store = part.store

        async def persisted() -> None:
            try:
                offsets = await delivered
            except BaseException as error:
                _fail(waiting, error)  # not acknowledged: read again after a restart
                raise
            for topic, _, offset in offsets:
                if topic == changelog and self.partitions.get(number) is part:
                    store.persisted(offset)
            for future in waiting:
                if not future.done():
                    future.set_result(None)

        outputs_delivered = asyncio.ensure_future(asyncio.gather(*outputs, delivered))
        return BatchCommit(outputs_delivered, asyncio.ensure_future(persisted()))

    async def flush_due(self) -> None:
        """The flush of a partition whose oldest unflushed change is `state_flush_interval_s`
        old, when no batch came to take it (a batch flushes its own partition then), or
        of any partition once no batch changed any partition's state for
        `state_flush_quiet_s` (traffic stopped: waiting would share the flush with
        nothing). The pause is the worker's, not the partition's: under a
        backlog one partition's batches can be seconds apart (the consumer hands over
        one partition's fetched records after another's, and one marker can let a
        partition take a million decisions), and its decisions trail its events; flushed
        at each of its own pauses, a subject was written once for its events and again
        for its decisions (writing the state took a sixth of the worker's time on the 1M mix).

        Without it the batches that wait for the flush (`part.waiting`) are committed only
        once another batch reaches the partition: while none comes (markers stopped, a
        stalled route stage), the partition's commits stop behind them. Not during a
        batch of that partition: its state changes are made but its outputs not yet
        sent, and it decides itself whether it flushes."""
        now_s = time.monotonic()
        interval = self.settings.state_flush_interval_s
        quiet = self.settings.state_flush_quiet_s
        for number, part in list(self.partitions.items()):
            if (part.waiting and part.dirty_since is not None
                    and (now_s - part.dirty_since >= interval
                         or now_s - self.traffic_at >= quiet)
                    and number != self._handling and self.partitions.get(number) is part):
                try:
                    await self._flush(part, number)
                except Exception:
                    log.exception("partition %s: the state flush on the timer failed", number)

    async def flush_revoked(self, parts: Iterable[tuple[int, _Partition]]) -> None:
        """A revoked partition's unflushed state goes out now: the batches that wait for
        it are acknowledged (`faust_adapter`'s ordered commit), so it must be in the
        changelog. Waits for its delivery, and for a flush already under way: the
        partition's next owner reads the changelog once the rebalance ends, and a flush
        still in this worker's producer would reach the changelog after what that owner
        writes there.

        Not a partition whose batch is half-way (suspended at a send): its state holds part
        of that batch, which must not persist should the batch fail (`stop_on_failure`).
        That batch flushes it, with what waits for a flush, once it ends (`_commit`: its
        partition is no longer this worker's); a flush it has begun is waited for."""
        for number, part in parts:
            try:
                if number != self._handling and (part.store.dirty_keys() or part.waiting):
                    await self._flush(part, number)
                if part.in_flight is not None:
                    await asyncio.wait_for(asyncio.shield(part.in_flight), _REVOKED_FLUSH_WAIT_S)
            except TimeoutError:
                log.warning("partition %s: the state flush on revocation was not delivered "
                            "within %.0f s; the rebalance goes on", number, _REVOKED_FLUSH_WAIT_S)
            except Exception:
                log.exception("partition %s: the state flush on revocation failed", number)

    # -- rebalancing ---------------------------------------------------------------------

    def assigned(self, assigned: Iterable[Any]) -> None:
        inputs = set(self.input_topics)
        self.clocks.assign((source_id(tp.topic, tp.partition) for tp in assigned
                            if tp.topic in inputs), _now_ms())

    def revoked(self, revoked: Iterable[Any]) -> list[tuple[int, _Partition]]:
        """Forget the revoked partitions; returns the correlate ones, to `flush_revoked`."""
        inputs = set(self.input_topics)
        dropped: list[tuple[int, _Partition]] = []
        for tp in revoked:
            if tp.topic == self.settings.topics.correlate:
                part = self.partitions.pop(tp.partition, None)
                if part is not None:  # keep what it counted since the last scrape
                    dropped.append((tp.partition, part))
                    self.metrics.observe_engine(tp.partition, part.engine.stats)
                    self.metrics.forget_engine(tp.partition)
            elif tp.topic in inputs:
                source = source_id(tp.topic, tp.partition)
                self.clocks.revoke([source])
                self._last_report.pop(source, None)  # reported again, if it comes back
                self._earliest.pop(source, None)
                self._read_to.pop(source, None)
        return dropped


class _WorkerView:
    """What the metrics read at scrape time (streams/metrics/view.py)."""

    def __init__(self, pipeline: _Pipeline) -> None:
        self._pipeline = pipeline

    def partitions(self) -> dict[int, PartitionView]:
        return {number: EnginePartition(part.engine, part.store.size)
                for number, part in self._pipeline.partitions.items()}

    def consumer_lag(self) -> dict[tuple[str, int], int]:
        """Records past the last one processed, for each input and correlate partition."""
        pipeline = self._pipeline
        consumer = consumer_of(pipeline.app)
        if consumer is None:
            return {}
        topics = {*pipeline.input_topics, pipeline.settings.topics.correlate}
        lag: dict[tuple[str, int], int] = {}
        try:
            assignment = consumer.assignment()
        except Exception:  # not started yet
            return {}
        for tp in assignment:
            if tp.topic in topics:
                position = pipeline.position(tp)
                if position is not None:
                    lag[(tp.topic, tp.partition)] = max(0, position[1] - position[0])
        return lag


def _sent_at(marker: Any) -> int:
    """The wall clock that moves a partition whose inputs are all idle: when `route` sent
    the marker (its record's timestamp), not when it is read. A partition read again (a
    restart, a new owner) then moves over the same markers as it did the first time and
    takes the same decisions; by the reader's clock, a partition read again from far back
    would decide whatever the catching-up markers let the wall clock reach, before the
    records after them (a toggle, a consent) were applied. A marker without a timestamp
    (-1) falls back to the reader's clock."""
    timestamp = int(marker.timestamp)
    return timestamp if timestamp >= 0 else _now_ms()


def _is_end_of_input(tp: Any, record: Any) -> bool:
    if control_kind(record.value) == END_OF_INPUT:
        return True
    log.warning("%s[%s]@%s: a control record of unknown kind, ignored", tp.topic, tp.partition,
                record.offset)
    return False


async def _delivered_or_stop(outputs: list[asyncio.Future[Any]], number: int) -> None:
    """Wait until every one of `outputs` is delivered. One that cannot be stops the worker
    at once, as a batch that fails half-way does (`stop_on_failure`): the state that
    holds its events must not be written, now or by a later flush."""
    try:
        await asyncio.gather(*outputs)
    except Exception as exc:
        _stop_worker(f"outputs of partition {number}'s batches were not delivered", exc)


def _cancel(futures: Iterable[asyncio.Future[None]]) -> None:
    for future in futures:
        future.cancel()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail(futures: Iterable[asyncio.Future[None]], error: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)


# The worker's exit status when a batch failed half-way (EX_SOFTWARE).
EXIT_BATCH_FAILED = 70


def stop_on_failure(handler: BatchHandler) -> BatchHandler:
    """`handler`, but a batch that fails half-way stops the process at once.

    Nothing of a failed batch may persist: a state flush after it (on revocation, at
    shutdown) would record its events as seen, and the restarted worker would skip
    them as duplicates, their findings and amendments never sent. So the worker ends
    as `kill -9` would (which the ordered commit is built for): the batch's offsets are
    not committed, and it is read again, whole, by the next owner of its partitions.
    """
    async def handle(tp: Any, records: list[Any]) -> Any:
        try:
            return await handler(tp, records)
        except Exception as exc:
            _fail_stop(tp, records, exc)

    return handle


def _log_bug(message: str, *args: object) -> None:
    """Log the exception being handled, a bug met on a record: its type and traceback, not
    its text, which may quote the record's personal data."""
    exc = sys.exc_info()[1]
    where = "".join(traceback.format_tb(exc.__traceback__)) if exc is not None else ""
    log.error(message + " (%s; its text is not logged: it may quote the record)\n%s",
              *args, type(exc).__name__, where)


def _stop_worker(what: str, exc: BaseException) -> NoReturn:
    """End the process as `kill -9` would, after one critical line: `what` failed, and
    is read again after the restart. The exception's text is not logged: it may hold a
    record's personal data."""
    log.critical("%s (%s); the worker stops and the batch is read again after its restart",
                 what, type(exc).__name__)
    logging.shutdown()
    os._exit(EXIT_BATCH_FAILED)


def _fail_stop(tp: Any, records: list[Any], exc: Exception) -> NoReturn:
    _stop_worker(f"a batch of {tp.topic}[{tp.partition}] from offset "
                 f"{records[0].offset if records else '?'} failed", exc)


def _delivery_failed(tp: Any, offsets: range, exc: Exception) -> NoReturn:
    """A batch whose outputs or state flush were not delivered stops the process too
    (`stop_on_failure`): its partition's commits would stop before it while later state
    kept being flushed, and after the restart its events would be duplicates of that
    state, their amendments lost. Ended now, the batch is read again, whole."""
    _stop_worker(f"a batch of {tp.topic}[{tp.partition}] from offset {offsets.start} was "
                 "not delivered", exc)


def build_app(settings: WorkerSettings) -> Any:
    """The Faust app with both stages wired; `faust.Worker(app).execute_from_commandline()`."""
    import faust

    handlers: dict[str, Any] = {}
    transport = batching_transport(handlers, on_failed_delivery=_delivery_failed)

    app = app_class(faust.App, transport)(
        settings.topics.group_id,
        broker=f"kafka://{settings.connection.bootstrap}",
        broker_credentials=settings.connection.faust_credentials(),
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        # one folder per pipeline: a data dir shared by two prefixes must not mix tables
        datadir=str(settings.data_dir / settings.topics.group_id),
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        autodiscover=False,
        processing_guarantee="at_least_once",
        # The stages append whole batches (faust_adapter.py): larger producer batches, fewer
        # requests. A record still fits: the largest state value is far below this.
        producer_max_batch_size=256 * 1024,
        # A subject's state is one changelog record, and its size has no fixed bound:
        # past 1 MB (Kafka's default) its delivery would fail and stop the worker.
        producer_max_request_size=MAX_RECORD_BYTES,
        # Larger fetches, larger batches: a subject's events of one meeting then more
        # often share a batch, and its state is written once for them.
        consumer_max_fetch_size=4 * 1024 * 1024,
    )
    pipeline = _Pipeline(app, settings)
    pipeline._collector.start()
    app.consentwatch = pipeline  # for tests and metrics
    for topic in pipeline.input_topics:
        handler = pipeline.direct if topic in pipeline.direct_topics else pipeline.route
        handlers[topic] = stop_on_failure(handler)
    handlers[settings.topics.correlate] = stop_on_failure(pipeline.correlate_batch)

    # The agents subscribe the topics and let Faust assign their partitions together
    # with the table's; their records go down the batch path and never reach them.
    @app.agent(pipeline.inputs)
    async def route(stream: Any) -> None:
        async for _ in stream.events():
            raise RuntimeError("records of the input topics take the batch path")

    @app.agent(pipeline.correlate)
    async def correlate(stream: Any) -> None:
        async for _ in stream.events():
            raise RuntimeError("records of the correlate topic take the batch path")

    @app.task
    async def announce() -> None:
        # A task: it runs once the worker has set its logging up.
        log.info("input topics read %s: %s", "directly by the correlate partitions"
                 if settings.direct else "through the correlate topic",
                 settings.input_path_reason or "the default")

    @app.timer(interval=settings.tick_interval_s)
    async def tick() -> None:
        # An exception in a Faust timer stops the whole worker: log it, try next time.
        try:
            await pipeline.tick_markers()
            await pipeline.refresh_earliest()
        except Exception:
            log.exception("the watermark timer failed; it runs again in a second")

    @app.timer(interval=min(settings.tick_interval_s, settings.state_flush_interval_s,
                            settings.state_flush_quiet_s))
    async def flush_due() -> None:
        # Its own timer: a tick held up (a slow broker call) does not hold up the flush.
        try:
            await pipeline.flush_due()
        except Exception:
            log.exception("the state flush timer failed; it runs again in a second")

    async def on_assigned(sender: Any, assigned: Any, **_: Any) -> None:
        pipeline.assigned(assigned)

    async def on_revoked(sender: Any, revoked: Any, **_: Any) -> None:
        await pipeline.flush_revoked(pipeline.revoked(revoked))

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        from streams.metrics import exposition

        body, content_type = exposition(pipeline.metrics, request.headers.get("Accept"))
        # aiohttp refuses a content_type argument that carries a charset
        return web.bytes(body, headers={"Content-Type": content_type})

    app.on_partitions_assigned.connect(on_assigned)
    app.on_partitions_revoked.connect(on_revoked)
    del route, correlate, announce, tick, flush_due, metrics
    return app
