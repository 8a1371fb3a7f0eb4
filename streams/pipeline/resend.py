"""Re-sending dead letters: a letter's original bytes back to the input topic they came
from, keyed as `produce` keys them, once the cause (a producer clock, a schema not yet
deployed) is fixed.

A dead letter keeps its source topic and its bytes, not the record's key, so the key is
derived again from the event: the payload is decoded with the pipeline's wire format
and keyed by `kafka_io.event_key` (subject; account for a toggle). A letter whose bytes
do not decode cannot be keyed, and is not re-sent: a record sent to a partition other
than its subject's would be correlated apart from the subject's other events. A letter
from the correlate topic (the correlation stage failed on it) holds the event in the
input encoding and goes back to the input topic of its type.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streams.errors import ConsentwatchError
from streams.kafka.connection import KafkaConnection
from streams.kafka.kafka_io import event_key, start_client
from streams.kafka.topics import TopicNames
from streams.model.findings import DeadLetter
from streams.serde.wire import WireFormat

__all__ = ["LetterSelection", "Resend", "plan_resend", "resend"]


@dataclass(frozen=True, slots=True)
class LetterSelection:
    """Which dead letters to re-send; None selects any."""

    reason: str | None = None
    source: str | None = None
    since_ms: int | None = None

    def matches(self, letter: DeadLetter) -> bool:
        return ((self.reason is None or letter.reason_code == self.reason)
                and (self.source is None or letter.source == self.source)
                and (self.since_ms is None or letter.dead_lettered_at >= self.since_ms))


@dataclass(frozen=True, slots=True)
class Resend:
    """One selected letter: where its bytes go and with which key, or why they cannot."""

    letter: DeadLetter
    topic: str | None
    key: bytes | None
    problem: str | None = None

    def where(self) -> str:
        """The letter's origin, without its content: `topic[partition]@offset (reason)`."""
        letter = self.letter
        return (f"{letter.source}[{letter.partition}]@{letter.position} "
                f"({letter.reason_code})")


def plan_resend(letter: DeadLetter, names: TopicNames, framing: WireFormat) -> Resend:
    """Where `letter`'s bytes go and their key, or the problem that prevents it."""
    inputs = set(names.inputs.values())
    if letter.source not in inputs and letter.source != names.correlate:
        return Resend(letter, None, None, f"its source {letter.source} is not a topic of "
                                          f"the pipeline {names.prefix}")
    try:
        event = framing.decode(letter.payload)
    except ConsentwatchError as exc:
        code = getattr(exc, "code", type(exc).__name__)
        return Resend(letter, None, None, f"its bytes do not decode ({code}), so its key "
                                          "cannot be derived")
    topic = letter.source if letter.source in inputs else names.inputs[event.TYPE]
    return Resend(letter, topic, event_key(event))


async def resend(connection: KafkaConnection, plans: Iterable[Resend]) -> int:
    """Send each plan's original bytes to its topic with its key; returns how many."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(acks="all", enable_idempotence=True,
                                **connection.aiokafka_options())
    await start_client(producer, connection)
    sent = 0
    try:
        for plan in plans:
            if plan.topic is None:
                continue
            await producer.send_and_wait(plan.topic, plan.letter.payload, key=plan.key)
            sent += 1
    finally:
        await producer.stop()
    return sent
