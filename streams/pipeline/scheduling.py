"""Hand the route stage its input records in event-time order across topics.

The route stage reads the seven input topics at once. Each fetch brings up to a
megabyte per partition, and a sparse topic (feature toggles) covers hours of event
time in one fetch where a busy one (notices) covers seconds. Handed over as they
come (Faust round-robins between topics), the toggles of the whole backlog would
reach the correlate partitions first, push their watermarks hours ahead, and make
every other event late.

So this scheduler does what Kafka Streams does for a task's input partitions: it
buffers the fetched records per partition and always hands over the record with
the smallest event time, but
only while every input partition that is still receiving data has a record
buffered, since the next record of an empty partition could be older. An empty
partition known to hold more data (its fetched position is below its high
watermark) is always waited for, up to `stall_ms`; one that is caught up is waited
for only `idle_ms` (Kafka Streams' `max.task.idle.ms`), so a quiet topic does not
hold the others back.
Each partition's own order is kept. Records of other topics (the correlate topic,
changelogs) pass straight through.

The event time of a record is its `occurred-at` header (8 bytes, big-endian epoch
ms), which `consentwatch produce` sets; without it, the record's Kafka timestamp,
which a live platform's producer sets when the event happens. The Kafka timestamp
itself is left to the producer's clock: set to the event time, topic retention
would delete replayed history at once, and the broker refuses times more than an
hour ahead.

Records held here have not reached the agent, so they are not acknowledged and
their offsets are not committed: a crash loses none of them.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

__all__ = ["EVENT_TIME_HEADER", "EventTimeScheduler", "event_time", "event_time_scheduler"]

EVENT_TIME_HEADER = "occurred-at"


def event_time(record: Any) -> int:
    """The record's event time: its `occurred-at` header, else its Kafka timestamp."""
    for key, value in record.headers or ():
        if key == EVENT_TIME_HEADER and len(value) == 8:
            return int.from_bytes(value, "big", signed=True)
    return int(record.timestamp)


class EventTimeScheduler:
    """A Faust `ConsumerScheduler`; `merge_topics` names the topics to merge by time."""

    merge_topics: ClassVar[frozenset[str]] = frozenset()
    idle_ms: ClassVar[int] = 500
    stall_ms: ClassVar[int] = 30_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buffers: dict[Any, deque[Any]] = {}
        self._last_fetch: dict[Any, float] = {}
        self._fetched_to: dict[Any, int] = {}

    def iterate(self, records: Mapping[Any, list[Any]]) -> Iterator[tuple[Any, Any]]:
        now = self._clock()
        for tp, messages in records.items():
            if tp.topic not in self.merge_topics:
                for record in messages:
                    yield tp, record
                continue
            if messages:
                self._buffers.setdefault(tp, deque()).extend(messages)
                self._last_fetch[tp] = now
                self._fetched_to[tp] = messages[-1].offset + 1
        yield from self._release(now)

    def highwater(self, tp: Any) -> int | None:
        """The partition's high watermark as last fetched (None when unknown)."""
        return None

    def _must_wait(self, tp: Any, now: float) -> bool:
        """Should an empty partition hold the others back? Its next record may be older."""
        quiet = now - self._last_fetch.get(tp, now)
        highwater = self.highwater(tp)
        if highwater is not None and self._fetched_to.get(tp, 0) < highwater:
            return quiet < self.stall_ms / 1000  # more data is there: wait for it
        return quiet < self.idle_ms / 1000

    def _release(self, now: float) -> Iterator[tuple[Any, Any]]:
        heads = [(event_time(buffer[0]), index, tp)
                 for index, (tp, buffer) in enumerate(self._buffers.items()) if buffer]
        heapq.heapify(heads)
        waiting_for = {tp for tp, buffer in self._buffers.items()
                       if not buffer and self._must_wait(tp, now)}
        while heads and not waiting_for:
            _, index, tp = heapq.heappop(heads)
            buffer = self._buffers[tp]
            yield tp, buffer.popleft()
            if buffer:
                heapq.heappush(heads, (event_time(buffer[0]), index, tp))
            elif self._must_wait(tp, now):
                waiting_for.add(tp)

    def forget_all(self) -> None:
        """Drop every held record: after a rebalance Faust seeks back to the committed
        offsets, so they will be fetched again."""
        self._buffers.clear()
        self._last_fetch.clear()
        self._fetched_to.clear()


def event_time_scheduler(
    topics: set[str] | frozenset[str],
    idle_ms: int = 500,
    highwater: Callable[[Any], int | None] | None = None,
) -> type[EventTimeScheduler]:
    """An EventTimeScheduler class bound to the input topics (Faust instantiates it)."""
    attributes: dict[str, Any] = {"merge_topics": frozenset(topics), "idle_ms": idle_ms}
    if highwater is not None:
        attributes["highwater"] = lambda self, tp: highwater(tp)
    return type("InputEventTimeScheduler", (EventTimeScheduler,), attributes)
