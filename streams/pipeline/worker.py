"""`consentwatch worker`: the Faust app that puts the engine on Kafka.

Two stages:

1. `route` reads every input topic, decodes each record, sends poison records to
   the dead-letter topic (with source topic, partition, offset, reason and the
   original bytes) and forwards valid ones, unchanged, to the correlate topic keyed
   by subject. A FeatureToggled is account-wide, so it is copied to every
   partition of the correlate topic: each partition then sees the toggles in its
   own event-time order, exactly as `replay` does.
2. `correlate` runs one engine per partition of the correlate topic, its state in
   a Faust table (RocksDB via rocksdict by default), and produces findings and
   amendments. A timer sends a tick into each partition this worker owns, so an
   idle partition advances its watermark by the wall clock inside the agent (Faust
   tables can only be written there).

Delivery is at-least-once. Faust flushes the producer before it commits offsets;
after a restart, decisions recorded at or after the first offset read again are
sent again (`Engine.decided_since`), so no finding is lost and a copy carries the
same finding id, rule, subject, trigger and evidence.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.engine import Engine, EngineParams
from streams.errors import InvalidEvent
from streams.model.events import FeatureToggled
from streams.model.findings import Amendment, DeadLetter, Finding
from streams.pipeline.connection import KafkaConnection
from streams.pipeline.faust_store import FaustStore
from streams.pipeline.scheduling import EventTimeScheduler, event_time_scheduler
from streams.pipeline.topics import TopicNames
from streams.serde.wire import SingleObjectFraming, WireFormat, encode_output

__all__ = ["TICK", "WorkerSettings", "build_app"]

log = logging.getLogger("consentwatch.worker")

TICK = b"\x00consentwatch-tick"


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
    framing: WireFormat = field(default_factory=SingleObjectFraming)


class _Partition:
    """One partition's engine and store, opened on its first message after assignment."""

    __slots__ = ("engine", "store")

    def __init__(self, engine: Engine, store: FaustStore) -> None:
        self.engine = engine
        self.store = store


def _dead_letter(message: Any, error: InvalidEvent) -> DeadLetter:
    return DeadLetter(
        source=message.topic,
        partition=message.partition,
        position=message.offset,
        reason_code=error.code,
        reason=error.message,
        payload=bytes(message.value or b""),
        dead_lettered_at=_now_ms(),
    )


class _Pipeline:
    """The worker's topics, table and per-partition engines; the agents call into it."""

    def __init__(self, app: Any, settings: WorkerSettings) -> None:
        names = settings.topics
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
               "value_serializer": "raw"}
        self.settings = settings
        self.framing = settings.framing
        self.inputs = app.topic(*names.inputs.values(), **raw)
        self.correlate = app.topic(names.correlate, partitions=settings.partitions, **raw)
        self.findings = app.topic(names.findings, **raw)
        self.amendments = app.topic(names.amendments, **raw)
        self.dead_letters = app.topic(names.dead_letters, **raw)
        # bytes keys and values make Faust use its "raw" codec for the table and its store
        self.table = app.Table("state", default=None, partitions=settings.partitions,
                               key_type=bytes, value_type=bytes)
        self.partitions: dict[int, _Partition] = {}

    async def send_dead_letter(self, message: Any, error: InvalidEvent) -> None:
        letter = _dead_letter(message, error)
        key = f"{letter.source}/{letter.partition}/{letter.position}".encode()
        await self.dead_letters.send(key=key, value=encode_output(letter))

    async def send_outputs(self, outputs: list[Finding | Amendment]) -> None:
        for output in outputs:
            if isinstance(output, Finding):
                await self.findings.send(key=output.finding_id.encode(),
                                         value=encode_output(output))
            else:
                await self.amendments.send(key=output.amendment_id.encode(),
                                           value=encode_output(output))

    async def route(self, message: Any) -> None:
        """Stage 1: decode, dead-letter or forward to the correlate topic."""
        try:
            decoded = self.framing.decode(message.value or b"")
        except InvalidEvent as error:
            await self.send_dead_letter(message, error)
            return
        except Exception:  # a decoder bug must not crash-loop the agent
            log.exception("unexpected error decoding %s[%s]@%s", message.topic,
                          message.partition, message.offset)
            await self.send_dead_letter(message, InvalidEvent(
                "internal_error", "the record could not be decoded"))
            return
        if isinstance(decoded, FeatureToggled):
            key = decoded.account_id.encode()
            for partition in range(self.settings.partitions):
                await self.correlate.send(key=key, value=message.value, partition=partition)
        else:
            await self.correlate.send(key=decoded.subject_id.encode(), value=message.value)

    def open_partition(self, number: int, first_offset: int) -> tuple[_Partition, list[Finding]]:
        store = FaustStore(self.table, number)
        engine = Engine(store, self.settings.params)
        # The watermark is not restored: the records read again from the committed
        # offset (duplicates included) bring it back, and it is never ahead of the state.
        engine.restore_deadlines()
        again = engine.decided_since(first_offset)
        if again:
            log.info("partition %s: sending %d findings again after recovery", number, len(again))
        part = _Partition(engine, store)
        self.partitions[number] = part
        return part, again

    async def correlate_one(self, message: Any) -> None:
        """Stage 2: one message of the correlate topic through its partition's engine.

        Nothing raised here may escape: a crashed Faust agent is restarted on the same
        record, again and again.
        """
        try:
            await self._correlate(message)
        except Exception:
            log.exception("engine error at %s[%s]@%s", message.topic, message.partition,
                          message.offset)
            await self.send_dead_letter(message, InvalidEvent(
                "internal_error", "the correlation stage failed on this record"))

    async def _correlate(self, message: Any) -> None:
        number = message.partition
        part = self.partitions.get(number)
        outputs: list[Finding | Amendment] = []
        if part is None:
            part, again = self.open_partition(number, message.offset)
            outputs.extend(again)
        engine = part.engine
        now = _now_ms()
        if message.value == TICK:
            outputs.extend(engine.idle_tick(now, position=message.offset))
        else:
            try:
                decoded = self.framing.decode(message.value or b"")
            except InvalidEvent as error:
                await self.send_dead_letter(message, error)
                return
            outputs.extend(engine.process(decoded, wall_ms=now, position=message.offset))
        part.store.flush()
        if outputs:
            await self.send_outputs(outputs)

    async def tick(self, assignment: Any) -> None:
        for tp in assignment:
            if tp.topic == self.settings.topics.correlate:
                await self.correlate.send(key=None, value=TICK, partition=tp.partition)

    def revoked(self, revoked: Any) -> None:
        for tp in revoked:
            if tp.topic == self.settings.topics.correlate:
                self.partitions.pop(tp.partition, None)


def _highwater(app: Any, tp: Any) -> int | None:
    """The partition's high watermark as of the consumer's last fetch, if known."""
    try:
        value = app.consumer.highwater(tp)
    except Exception:  # not started, or the partition is not assigned any more
        return None
    return int(value) if value is not None else None


def build_app(settings: WorkerSettings) -> Any:
    """The Faust app with both stages wired; `faust.Worker(app).execute_from_commandline()`."""
    import faust

    app = faust.App(
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
        ConsumerScheduler=event_time_scheduler(set(settings.topics.inputs.values()),
                                               highwater=lambda tp: _highwater(app, tp)),
    )
    pipeline = _Pipeline(app, settings)
    app.consentwatch = pipeline  # for tests and metrics

    @app.agent(pipeline.inputs)
    async def route(stream: Any) -> None:
        async for event in stream.events():
            await pipeline.route(event.message)

    @app.agent(pipeline.correlate)
    async def correlate(stream: Any) -> None:
        async for event in stream.events():
            await pipeline.correlate_one(event.message)

    @app.timer(interval=settings.tick_interval_s)
    async def tick() -> None:
        consumer = getattr(app, "_consumer", None)
        if consumer is not None:
            await pipeline.tick(consumer.assignment())

    async def on_revoked(sender: Any, revoked: Any, **_: Any) -> None:
        pipeline.revoked(revoked)
        # Faust seeks every partition back to its committed offset after a rebalance:
        # records held for event-time merging would come again, so drop them all.
        consumer = getattr(app, "_consumer", None)
        scheduler = getattr(consumer, "scheduler", None)
        if isinstance(scheduler, EventTimeScheduler):
            scheduler.forget_all()

    app.on_partitions_revoked.connect(on_revoked)
    del route, correlate, tick
    return app
