"""The worker's `_Pipeline` without Kafka: a fake app, consumer and producer (the I/O
boundary) around the real stages, clocks, watermarks, marker gate, engine and store.

The producer appends each batch to its partition's log at once, so the order of sends is
the order a reader of that partition sees. The wall clock is `clock.now` (tests set it).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from streams.engine import EngineParams
from streams.kafka.murmur2 import partition_for
from streams.model.validate import event_from_record
from streams.pipeline import worker
from streams.pipeline.watermarks import source_id
from streams.serde.wire import SingleObjectFraming

FRAMING = SingleObjectFraming()


class WallClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class _Builder:
    def __init__(self, clock: WallClock) -> None:
        self._clock = clock
        self.records: list[tuple[Any, Any, int]] = []

    def append(self, key: Any, value: Any, timestamp: Any) -> object:
        self.records.append((key, value, self._clock.now))  # the producer's CreateTime
        return object()

    def record_count(self) -> int:
        return len(self.records)


class FakeProducer:
    def __init__(self, clock: WallClock) -> None:
        self._clock = clock
        self.logs: dict[tuple[str, int], list[Any]] = {}

    def create_batch(self) -> _Builder:
        return _Builder(self._clock)

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(4))

    async def send_batch(self, builder: _Builder, topic: str, partition: int) -> Any:
        log = self.logs.setdefault((topic, partition), [])
        first = len(log)
        for key, value, timestamp in builder.records:
            log.append(SimpleNamespace(topic=topic, partition=partition, offset=len(log),
                                       key=key, value=value, timestamp=timestamp))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(SimpleNamespace(offset=first))
        return future


class FakeConsumer:
    def __init__(self) -> None:
        self.assigned: set[Any] = set()
        self.high: dict[Any, int] = {}
        self.next: dict[Any, int] = {}
        self.committed: dict[Any, int] = {}

    def assignment(self) -> set[Any]:
        return self.assigned

    def highwater(self, tp: Any) -> int:
        assert tp in self.assigned, "not assigned"  # as aiokafka
        return self.high.get(tp, 0)

    def next_offset(self, tp: Any) -> int:
        return self.next.get(tp, 0)

    def committed_offset(self, tp: Any) -> int | None:
        return self.committed.get(tp)


def make_pipeline(clock: WallClock, partitions: int = 2, direct: bool = False,
                  producer: FakeProducer | None = None) -> Any:
    """A `_Pipeline` on the memory store; its `producer` (shared by two workers of one
    cluster) and `consumer` are the fakes."""
    table = SimpleNamespace(data=SimpleNamespace(data={}),
                            changelog_topic=SimpleNamespace(get_topic_name=lambda: "changelog"))
    consumer = FakeConsumer()
    app = SimpleNamespace(topic=lambda *a, **k: SimpleNamespace(),
                          Table=lambda *a, **k: table, consumer=consumer)
    settings = worker.WorkerSettings(connection=None,  # type: ignore[arg-type]
                                     partitions=partitions, params=EngineParams(),
                                     direct=direct, store="memory")
    pipeline: Any = worker._Pipeline(app, settings)
    producer = producer or FakeProducer(clock)
    pipeline._producer = lambda: producer
    pipeline.producer = producer
    pipeline.consumer = consumer
    pipeline._expected = [source_id(topic, n) for topic in pipeline.input_topics
                          for n in range(partitions)]
    return pipeline


def assigned_direct_pipeline(clock: WallClock) -> tuple[Any, Any]:
    """A one-partition pipeline in direct mode holding partition 0 of every input topic
    and of the correlate topic: (the pipeline, the correlate partition)."""
    from faust.types import TP

    pipeline = make_pipeline(clock, partitions=1, direct=True)
    correlate = TP(pipeline.settings.topics.correlate, 0)
    tps = [TP(topic, 0) for topic in pipeline.input_topics] + [correlate]
    pipeline.consumer.assigned = set(tps)
    pipeline.assigned(tps)
    return pipeline, correlate


def input_record(topic: str, partition: int, offset: int, record: dict[str, Any],
                 timestamp: int) -> Any:
    return SimpleNamespace(topic=topic, partition=partition, offset=offset, key=None,
                           value=FRAMING.encode(event_from_record(record)),
                           timestamp=timestamp)


def subject_on(partition: int, partitions: int) -> str:
    """A subject id whose correlate partition is `partition`."""
    n = 0
    while partition_for(f"s{n}".encode(), partitions) != partition:
        n += 1
    return f"s{n}"
