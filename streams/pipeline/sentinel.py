"""The end of a finite input on Kafka: a sentinel on every input partition.

A stream never ends, so a worker never takes the decisions that `replay` takes at
the end of its file. To close them all (a benchmark, a test, a backfill through
Kafka), send one harmless event at a time past every deadline to every partition of
every input topic: each input partition's watermark, so each correlate partition's
(their minimum), passes it. Harmless: the sentinel request and view are never
decided (nothing passes their own time) and the view is the subject's own, so no
sentinel ever raises a finding.

Send it only once the worker has consumed everything else, or what it has not
consumed yet becomes late.
"""

from __future__ import annotations

import asyncio
from typing import Any

from streams.model.events import Event
from streams.model.validate import event_from_record
from streams.pipeline.connection import KafkaConnection
from streams.pipeline.kafka_io import event_key, start_client
from streams.pipeline.topics import TopicNames
from streams.serde.wire import SingleObjectFraming, WireFormat

__all__ = ["SENTINEL_ACCOUNT", "SENTINEL_PREFIX", "produce_sentinels", "sentinel_events"]

SENTINEL_PREFIX = "zz-sentinel"
SENTINEL_ACCOUNT = f"{SENTINEL_PREFIX}-account"
_PROVIDER = f"{SENTINEL_PREFIX}-provider"
_USE = "third_party_sharing.enrichment"


def _fields(kind: str, subject: str) -> dict[str, Any]:
    meeting = {"account_id": SENTINEL_ACCOUNT, "meeting_id": f"{SENTINEL_PREFIX}-meeting"}
    fields: dict[str, dict[str, Any]] = {
        "ParticipantJoined": {**meeting, "subject_id": subject, "display_name": "Sentinel",
                              "is_guest": True},
        "EnrichmentRequested": {**meeting, "subject_id": subject, "provider": _PROVIDER,
                                "data_use": _USE, "data_sent": [], "trigger": "USER_ACTION"},
        "EnrichmentMatched": {**meeting, "subject_id": subject, "provider": _PROVIDER,
                              "request_event_id": f"{SENTINEL_PREFIX}-request",
                              "matched": False, "data_returned": []},
        "ProfileViewed": {**meeting, "subject_id": subject, "viewer_id": subject,
                          "provider": _PROVIDER, "data_disclosed": []},
        "ConsentChanged": {"subject_id": subject, "consent_record_id": SENTINEL_PREFIX,
                           "data_use": _USE, "status": "WITHDRAWN", "data_categories": []},
        "NoticeDelivered": {"account_id": SENTINEL_ACCOUNT, "subject_id": subject,
                            "notice_kind": "ENRICHMENT", "channel": SENTINEL_PREFIX,
                            "notice_version": SENTINEL_PREFIX},
        "FeatureToggled": {"account_id": SENTINEL_ACCOUNT, "provider": _PROVIDER,
                           "enabled": False, "actor_id": SENTINEL_PREFIX},
    }
    return fields[kind]


def sentinel_events(names: TopicNames, partitions: int, at: int
                    ) -> list[tuple[str, int, Event]]:
    """(topic, partition, event) for every partition of every input topic."""
    out: list[tuple[str, int, Event]] = []
    for kind, topic in sorted(names.inputs.items()):
        for partition in range(partitions):
            subject = f"{SENTINEL_PREFIX}-{partition}"
            record = {"type": kind, "event_id": f"{SENTINEL_PREFIX}-{kind}-{partition}-{at}",
                      "occurred_at": at, **_fields(kind, subject)}
            out.append((topic, partition, event_from_record(record)))
    return out


async def produce_sentinels(connection: KafkaConnection, names: TopicNames, at: int,
                            framing: WireFormat | None = None) -> list[Event]:
    """Send the sentinels (each input topic's partitions are read from the broker)."""
    from aiokafka import AIOKafkaProducer

    framing = framing or SingleObjectFraming()
    producer = AIOKafkaProducer(acks="all", **connection.aiokafka_options())
    await start_client(producer, connection)
    sent: list[Event] = []
    try:
        counts = {topic: len(await producer.partitions_for(topic))
                  for topic in names.inputs.values()}
        futures = []
        for topic, partition, event in sentinel_events(names, max(counts.values()), at):
            if partition < counts[topic]:
                futures.append(await producer.send(topic, framing.encode(event),
                                                   key=event_key(event),
                                                   partition=partition))
                sent.append(event)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent
