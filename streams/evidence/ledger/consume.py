"""`ledger run`: the findings and amendments topics into the ledger, each record once.

Order of work per batch, which is what makes the ledger exactly-once on top of
at-least-once delivery:

1. poll a batch (at most `batch_size` records) from both topics;
2. store it in ONE ledger transaction, idempotent by finding_id / amendment_id;
3. only after that transaction commits, commit the batch's Kafka offsets.

A crash (even `kill -9`) before 3 re-delivers the batch on restart; the ledger then
skips what it already holds. A crash during 2 rolls the transaction back. Offsets
are never ahead of the ledger, so nothing is lost.

The consumer group is `<prefix>.ledger.<ledger id>`: the id is a random one the ledger
keeps in itself, so each ledger remembers its own position in the topics (a new ledger
reads them from the beginning, even after another ledger consumed them). Ledger calls
run in a worker thread, so a slow database never stalls the consumer's heartbeats.

Once the consumer has read every record that was on the topics when it started, it says
so once (`on_caught_up`) with what it read of each kind.

Checkpoints (when a signing key is given): after a batch that stored something, once
`checkpoint_interval` seconds have passed since the last one; and whenever the topics
go quiet or the command stops with entries not yet covered. So the newest checkpoint
covers every entry at most `checkpoint_interval` seconds (plus one poll) after it
was stored, and the checkpoints table grows by at most one row per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.evidence.ledger.base import InvalidRecord
from streams.evidence.ledger.records import Row, to_row
from streams.evidence.ledger.sql import SqlLedger
from streams.kafka.connection import KafkaConnection
from streams.kafka.topics import TopicNames

__all__ = ["ConsumerSettings", "RunStats", "consume_into_ledger", "ledger_group_id"]

_POLL_MS = 500


def ledger_group_id(names: TopicNames, ledger_id: str) -> str:
    """The consumer group of the ledger with id `ledger_id`: `<prefix>.ledger.<id>`."""
    return f"{names.prefix}.ledger.{ledger_id}"


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    batch_size: int = 500
    checkpoint_interval_s: float = 10.0
    key: Ed25519PrivateKey | None = None
    key_name: str = "consentwatch"

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return (f"ConsumerSettings(batch_size={self.batch_size}, checkpoint_interval_s="
                f"{self.checkpoint_interval_s}, key={'set' if self.key else None})")


@dataclass(slots=True)
class RunStats:
    batches: int = 0
    stored: int = 0
    duplicates: int = 0
    skipped: int = 0
    checkpoints: int = 0
    findings_read: int = 0
    amendments_read: int = 0


#: Told once, when the records on the topics at the start are all read: the stats so far.
CaughtUpHandler = Callable[[RunStats], None]


#: Told about each record that cannot be stored: (topic, partition, offset, reason code).
SkipHandler = Callable[[str, int, int, str], None]


def _rows(batch: dict[Any, list[Any]], names: TopicNames,
          on_skip: SkipHandler) -> tuple[list[Row], int]:
    """The batch's records as ledger rows; unreadable ones reported and left out."""
    from streams.errors import InvalidEvent
    from streams.model.findings import Amendment, Finding
    from streams.serde.wire import decode_output

    rows: list[Row] = []
    skipped = 0
    for tp, records in batch.items():
        topic, partition = tp.topic, tp.partition
        kind, wanted = (("finding", Finding) if topic == names.findings
                        else ("amendment", Amendment))
        for record in records:
            try:
                if record.value is None:
                    raise InvalidEvent("tombstone", "a record with no value")
                item = decode_output(record.value)
                if not isinstance(item, wanted):
                    raise InvalidEvent("wrong_type", f"not a {kind}")
                rows.append(to_row(kind, item.to_dict()))
            except InvalidEvent as exc:
                skipped += 1
                on_skip(topic, partition, record.offset, exc.code)
            except InvalidRecord:
                skipped += 1
                on_skip(topic, partition, record.offset, "invalid_record")
    return rows, skipped


async def _caught_up(consumer: Any, start_ends: dict[Any, int]) -> bool:
    """Whether the consumer's position is past every record there was at the start on
    each partition it was given (False while it has none yet)."""
    assigned = consumer.assignment()
    if not assigned:
        return False
    for tp in assigned:
        if await consumer.position(tp) < start_ends.get(tp, 0):
            return False
    return True


async def _end_offsets(consumer: Any, names: TopicNames) -> dict[Any, int]:
    from aiokafka import TopicPartition

    from streams.kafka.faust_adapter import refresh_metadata

    await refresh_metadata(consumer)
    tps = [TopicPartition(topic, p) for topic in (names.findings, names.amendments)
           for p in sorted(consumer.partitions_for_topic(topic) or ())]
    return dict(await consumer.end_offsets(tps)) if tps else {}


async def _start_consumer(connection: KafkaConnection, names: TopicNames, ledger: SqlLedger,
                          settings: ConsumerSettings) -> tuple[Any, dict[Any, int]]:
    """The ledger's consumer, started, and the end offsets of the topics at its start."""
    from aiokafka import AIOKafkaConsumer

    from streams.kafka.kafka_io import start_client

    group = ledger_group_id(names, await asyncio.to_thread(ledger.ledger_id))
    consumer = AIOKafkaConsumer(
        names.findings, names.amendments, group_id=group,
        enable_auto_commit=False, auto_offset_reset="earliest",
        isolation_level="read_committed", max_poll_records=settings.batch_size,
        **connection.aiokafka_options())
    await start_client(consumer, connection)
    try:
        return consumer, await _end_offsets(consumer, names)
    except BaseException:
        await consumer.stop()
        raise


async def consume_into_ledger(connection: KafkaConnection, names: TopicNames,
                              ledger: SqlLedger, settings: ConsumerSettings,
                              stop: asyncio.Event, on_skip: SkipHandler,
                              on_progress: Callable[[RunStats, int], None] | None = None,
                              on_caught_up: CaughtUpHandler | None = None,
                              ) -> RunStats:
    """Consume until `stop` is set; returns what was done. See the module docstring."""
    from aiokafka.errors import KafkaError

    consumer, start_ends = await _start_consumer(connection, names, ledger, settings)
    stats = RunStats()
    waiting_to_catch_up = on_caught_up is not None
    uncovered = 0  # entries stored since the last checkpoint
    last_checkpoint = time.monotonic()

    async def checkpoint() -> None:
        nonlocal uncovered, last_checkpoint
        if settings.key is not None and uncovered:
            await asyncio.to_thread(ledger.checkpoint, settings.key, settings.key_name)
            stats.checkpoints += 1
        uncovered = 0
        last_checkpoint = time.monotonic()
        if on_progress is not None:
            on_progress(stats, await asyncio.to_thread(ledger.size))

    async def store_batch(batch: dict[Any, list[Any]]) -> None:
        nonlocal uncovered
        rows, skipped = _rows(batch, names, on_skip)
        new = await asyncio.to_thread(ledger.append_rows, rows)  # one transaction
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
        # Only now: the ledger holds the batch. A failed commit (a rebalance) means the
        # batch comes again, and the ledger skips what it holds.
        with contextlib.suppress(KafkaError):
            await consumer.commit(offsets)
        stats.batches += 1
        stats.stored += new
        stats.duplicates += len(rows) - new
        stats.skipped += skipped
        stats.findings_read += sum(1 for row in rows if row.kind == "finding")
        stats.amendments_read += sum(1 for row in rows if row.kind == "amendment")
        uncovered += new
        if uncovered and time.monotonic() - last_checkpoint >= settings.checkpoint_interval_s:
            await checkpoint()

    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=_POLL_MS, max_records=settings.batch_size)
            if batch:
                await store_batch(batch)
            elif uncovered:
                await checkpoint()
            if waiting_to_catch_up and await _caught_up(consumer, start_ends):
                waiting_to_catch_up = False
                assert on_caught_up is not None
                on_caught_up(stats)
        if uncovered:
            await checkpoint()
    finally:
        await consumer.stop()
    return stats
