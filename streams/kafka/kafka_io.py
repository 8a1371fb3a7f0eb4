"""Small Kafka clients for the command line: create topics, produce events, read outputs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from streams.errors import ConsentwatchError
from streams.kafka.connection import KafkaConnection
from streams.kafka.topics import TopicNames, replica_configs, replication_for, topic_configs
from streams.model.events import Event, FeatureToggled
from streams.model.findings import Amendment, DeadLetter, Finding
from streams.serde.wire import SingleObjectFraming, WireFormat, decode_output

__all__ = ["KafkaUnavailable", "TopicsNotReady", "check_broker", "check_topics", "create_topics",
           "event_key", "input_path", "produce_events", "read_outputs", "start_client",
           "topic_problem"]


class KafkaUnavailable(ConsentwatchError):
    """The broker could not be reached or refused the request."""


async def start_client(client: Any, connection: KafkaConnection, stop: str = "stop") -> None:
    """Start an aiokafka client, or close it and say in one line why it could not.

    A broker that accepts the connection and never answers would keep `start` waiting
    for ever: it gets `connection.connect_timeout` seconds.
    """
    from aiokafka.errors import KafkaError

    try:
        await asyncio.wait_for(client.start(), connection.connect_timeout)
    except KafkaError as exc:
        await getattr(client, stop)()
        raise KafkaUnavailable(f"cannot reach the broker at {connection.bootstrap}: "
                               f"{type(exc).__name__}") from None
    except TimeoutError:
        await getattr(client, stop)()
        raise KafkaUnavailable(await _no_answer(connection)) from None


async def _no_answer(connection: KafkaConnection) -> str:
    """Why the broker did not answer in time: silent on an open connection, or unreachable."""
    seconds = f"{connection.connect_timeout:g} s"
    if await _accepts_connections(connection.bootstrap):
        return (f"the broker at {connection.bootstrap} accepted the connection but did not "
                f"answer within {seconds}")
    return f"cannot reach the broker at {connection.bootstrap}: no connection within {seconds}"


async def _accepts_connections(bootstrap: str, timeout: float = 1.0) -> bool:
    host, _, port = bootstrap.split(",", maxsplit=1)[0].strip().rpartition(":")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port)), timeout)
    except (OSError, ValueError, TimeoutError):
        return False
    writer.close()
    return True


async def check_broker(connection: KafkaConnection) -> None:
    """Ask the broker for its metadata once, so that a worker fails fast and in one line."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**connection.aiokafka_options())
    await start_client(admin, connection, stop="close")
    await admin.close()


class TopicsNotCreated(ConsentwatchError):
    """The broker refused to create some of the pipeline's topics (message: one line)."""


_TOPIC_ALREADY_EXISTS = 36  # Kafka's error code


class TopicsNotReady(ConsentwatchError):
    """The pipeline's topics are missing, or their partition counts do not fit the worker."""


async def check_topics(connection: KafkaConnection, names: TopicNames, partitions: int
                       ) -> tuple[int, dict[str, int]]:
    """Make first contact with the broker and check the pipeline's topics, so that a worker
    started before `topics create`, or with another `--partitions`, stops with one line
    instead of waiting for ever on topics it cannot read. Returns the replication factor
    for the topics the worker creates itself (its changelogs, see `replication_for`) and
    the partition count of each topic."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**connection.aiokafka_options())
    await start_client(admin, connection, stop="close")
    try:
        existing = set(await admin.list_topics())
        # Only topics that exist are described: a metadata request naming an unknown
        # topic would have the broker create it (auto.create.topics.enable).
        wanted = [name for name in names.all() if name in existing]
        described = await admin.describe_topics(wanted) if wanted else []
        brokers = await _live_brokers(admin)
    finally:
        await admin.close()
    found = {topic["topic"]: len(topic["partitions"]) for topic in described
             if topic["error_code"] == 0}
    problem = topic_problem(names, partitions, found)
    if problem is not None:
        raise TopicsNotReady(problem)
    return replication_for(brokers), found


async def _live_brokers(admin: Any) -> int:
    return len((await admin.describe_cluster())["brokers"])


def topic_problem(names: TopicNames, partitions: int, found: dict[str, int]) -> str | None:
    """What is wrong with the topics `found` (name -> partition count) for a worker with
    `partitions` correlate partitions; None when nothing is."""
    missing = [name for name in names.all() if name not in found]
    if len(missing) == len(names.all()):
        return (f"the topics of prefix {names.prefix} do not exist: run "
                "`consentwatch topics create`")
    if missing:
        return (f"topics of prefix {names.prefix} are missing: {', '.join(missing)}: run "
                "`consentwatch topics create`")
    # Input topics may have any count: the worker reads them through the correlate
    # topic when they are not co-partitioned with it (`input_path`).
    if found[names.correlate] != partitions:
        return (f"topic {names.correlate} has {found[names.correlate]} partitions, but "
                f"--partitions is {partitions}: the correlate topic needs the worker's "
                "partition count")
    return None


def input_path(names: TopicNames, partitions: int, found: dict[str, int]) -> tuple[bool, str]:
    """Whether the worker reads the subject-keyed input topics directly (True) or through
    the correlate topic, and why; `found`: topic -> its partition count.

    Directly only when every one of them has the correlate topic's `partitions`: then
    the producers' default partitioner (murmur2 of the subject id) put each subject on
    the partition the correlate topic would, and Faust's assignor gives partition p of
    all of them to one worker (topics of one count, subscribed together).
    """
    others = sorted(topic for kind, topic in names.inputs.items()
                    if kind != FeatureToggled.TYPE and found.get(topic) != partitions)
    if others:
        return False, (f"{len(others)} subject-keyed input topics do not have {partitions} "
                       f"partitions (e.g. {others[0]}: {found.get(others[0])})")
    return True, f"every subject-keyed input topic has {partitions} partitions"


def event_key(event: Event) -> bytes:
    """Input topics are keyed by subject; toggles, which have none, by account."""
    if isinstance(event, FeatureToggled):
        return event.account_id.encode()
    return event.subject_id.encode()


async def create_topics(connection: KafkaConnection, names: TopicNames, partitions: int,
                        replication: int | None = None) -> dict[str, str]:
    """Create every topic of the pipeline; returns topic -> "created" | "exists".

    `replication` None: `replication_for` the brokers the cluster has now."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**connection.aiokafka_options())
    await start_client(admin, connection, stop="close")
    try:
        existing = set(await admin.list_topics())
        if replication is None:
            replication = replication_for(await _live_brokers(admin))
        configs = topic_configs(names)
        extra = replica_configs(replication)
        wanted = [NewTopic(name, partitions, replication,
                           topic_configs={**configs[name], **extra})
                  for name in names.all() if name not in existing]
        result = {name: "exists" for name in names.all() if name in existing}
        if wanted:  # errors come per topic in the response, never as an exception
            response = await admin.create_topics(wanted)
            result.update(_created(response, {topic.name for topic in wanted}))
        return result
    finally:
        await admin.close()


def _created(response: Any, wanted: set[str]) -> dict[str, str]:
    """topic -> "created" | "exists" from a CreateTopics response, whose errors come per
    topic (an impossible replication is no exception): TopicsNotCreated names them."""
    from aiokafka.errors import for_code

    result: dict[str, str] = {}
    refused: list[str] = []
    for topic, code, *message in response.topic_errors:
        if code == _TOPIC_ALREADY_EXISTS:  # lost a race: fine
            result[topic] = "exists"
        elif code:
            why = " ".join(str(message[0] if message and message[0] else "").split()) \
                or for_code(code).__name__
            refused.append(f"{topic}: {why}")
        else:
            result[topic] = "created"
    if refused:
        raise TopicsNotCreated(f"the broker refused to create {len(refused)} topics "
                               f"({refused[0]}" + (", ..." if len(refused) > 1 else "") + ")")
    result.update({topic: "created" for topic in wanted - result.keys()})
    return result


async def produce_events(connection: KafkaConnection, names: TopicNames,
                         events: Iterable[Event], framing: WireFormat | None = None,
                         rate: float | None = None) -> int:
    """Send events as Avro to their input topics, keyed; returns how many were sent."""
    from aiokafka import AIOKafkaProducer

    framing = framing or SingleObjectFraming()
    producer = AIOKafkaProducer(acks="all", linger_ms=5, enable_idempotence=True,
                                **connection.aiokafka_options())
    await start_client(producer, connection)
    topics = names.inputs
    sent = 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        pending = []
        for event in events:
            pending.append(await producer.send(topics[event.TYPE], framing.encode(event),
                                               key=event_key(event)))
            sent += 1
            if rate and sent % 100 == 0:
                ahead = sent / rate - (loop.time() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def read_outputs(connection: KafkaConnection, topic: str, follow: bool,
                       on_error: Callable[[Any, Exception], None] | None = None,
                       ) -> AsyncIterator[Finding | Amendment | DeadLetter]:
    """Every record of an output topic from the beginning; without `follow`, stop at its end."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.kafka.faust_adapter import refresh_metadata

    consumer = AIOKafkaConsumer(enable_auto_commit=False, auto_offset_reset="earliest",
                                **connection.aiokafka_options())
    await start_client(consumer, connection)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await refresh_metadata(consumer)
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise KafkaUnavailable(f"topic {topic} does not exist (run `consentwatch topics "
                                   "create`)")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        while True:
            if not follow:
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True)):
                    return
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    try:
                        yield decode_output(record.value)
                    except Exception as exc:
                        if on_error is not None:
                            on_error(record, exc)
    finally:
        await consumer.stop()
