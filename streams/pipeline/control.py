"""Control records: what a tool puts on an input topic that is not a platform event.

The one kind today is END OF INPUT: the records before it on that input partition
are all there is for now. Once every input partition that is not idle has given
one, each correlate partition decides every trigger it has read (the watermark goes
just past the last of their deadlines) and then goes on as usual; a record that
comes later rejoins its partition, late where it is older than the watermark. So a
finite input (a test, a benchmark, a backfill, the demo) is decided at once, without
fake events that could themselves become findings.

A control record is never an event: it never reaches the rules, is never a
finding, an amendment, a dead letter or a metric sample of events (spec: "Event
time, lateness and absence"). Its value starts with `CONTROL`, which no wire format
of an event starts with (Avro single-object encoding starts C3 01, Confluent framing
00 followed by a 4-byte schema id, and `CONTROL` is 00 followed by text).
"""

from __future__ import annotations

import asyncio

import orjson

from streams.kafka.connection import KafkaConnection
from streams.kafka.kafka_io import start_client
from streams.kafka.topics import TopicNames

__all__ = ["CONTROL", "END_OF_INPUT", "control_kind", "encode_control", "is_control",
           "produce_end_of_input"]

CONTROL = b"\x00consentwatch-control\n"
END_OF_INPUT = "end-of-input"


def is_control(value: bytes | None) -> bool:
    return value is not None and value.startswith(CONTROL)


def encode_control(kind: str = END_OF_INPUT) -> bytes:
    return CONTROL + orjson.dumps({"control": kind})


def control_kind(value: bytes) -> str | None:
    """The kind of a control record; None when its body cannot be read."""
    try:
        body = orjson.loads(value[len(CONTROL):])
    except orjson.JSONDecodeError:
        return None
    kind = body.get("control") if isinstance(body, dict) else None
    return kind if isinstance(kind, str) else None


async def produce_end_of_input(connection: KafkaConnection, names: TopicNames) -> int:
    """An end-of-input record on every partition of every input topic; how many were sent.

    Send it after the last event of the input: the producer's acks=all and the order
    within a partition put it after them.
    """
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(acks="all", enable_idempotence=True,
                                **connection.aiokafka_options())
    await start_client(producer, connection)
    value = encode_control(END_OF_INPUT)
    try:
        futures = []
        for topic in sorted(names.inputs.values()):
            for partition in sorted(await producer.partitions_for(topic)):
                futures.append(await producer.send(topic, value, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(futures)
