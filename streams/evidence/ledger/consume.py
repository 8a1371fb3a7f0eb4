"""`ledger run`: the findings and amendments topics into the ledger, each record once.

Order of work per batch, which is what makes the ledger exactly-once on top of
at-least-once delivery:

1. poll a batch (at most `batch_size` records) from both topics;
2. store it in ONE ledger transaction, idempotent by finding_id / amendment_id;
3. only after that transaction commits, commit the batch's Kafka offsets.

A crash (even `kill -9`) before 3 re-delivers the batch on restart; the ledger then
skips what it already holds. A crash during 2 rolls the transaction back. Offsets
are never ahead of the ledger, so nothing is lost.

The consumer group is `<prefix>.ledger`, apart from the worker's. Ledger calls run in
a worker thread, so a slow database never stalls the consumer's heartbeats.

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
from streams.pipeline.connection import KafkaConnection
from streams.pipeline.topics import TopicNames

__all__ = ["ConsumerSettings", "RunStats", "consume_into_ledger", "ledger_group_id"]

_POLL_MS = 500


def ledger_group_id(names: TopicNames) -> str:
    """The ledger's consumer group: `<prefix>.ledger`."""
    return f"{names.prefix}.ledger"


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


async def consume_into_ledger(connection: KafkaConnection, names: TopicNames,
                              ledger: SqlLedger, settings: ConsumerSettings,
                              stop: asyncio.Event, on_skip: SkipHandler,
                              on_progress: Callable[[RunStats, int], None] | None = None,
                              ) -> RunStats:
    """Consume until `stop` is set; returns what was done. See the module docstring."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError

    from streams.pipeline.kafka_io import start_client

    consumer = AIOKafkaConsumer(
        names.findings, names.amendments, group_id=ledger_group_id(names),
        enable_auto_commit=False, auto_offset_reset="earliest",
        isolation_level="read_committed", max_poll_records=settings.batch_size,
        **connection.aiokafka_options())
    await start_client(consumer, connection)
    stats = RunStats()
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

    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=_POLL_MS, max_records=settings.batch_size)
            if not batch:
                if uncovered:
                    await checkpoint()
                continue
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
            uncovered += new
            if uncovered and time.monotonic() - last_checkpoint >= settings.checkpoint_interval_s:
                await checkpoint()
        if uncovered:
            await checkpoint()
    finally:
        await consumer.stop()
    return stats
