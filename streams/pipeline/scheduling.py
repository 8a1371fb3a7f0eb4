"""Hand fetched records to the agents in event-time order across topics.

The route stage reads seven input topics at once. Faust's default scheduler
round-robins between topics, so a topic with small records (whose fetch covers
more event time) can run far ahead of the others, and the correlate partitions
would then see events out of order by more than the allowed lateness. This
scheduler merges the records of one fetch by their timestamps (the producer sets
each message's timestamp to the event's `occurred_at`), keeping every partition's
own order: the merge only ever compares the heads of the partitions' lists.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["EventTimeScheduler"]


class EventTimeScheduler:
    """A Faust `ConsumerScheduler`: a k-way merge of each fetch by record timestamp."""

    def iterate(self, records: Mapping[Any, list[Any]]) -> Iterator[tuple[Any, Any]]:
        if len(records) == 1:
            for tp, messages in records.items():
                for record in messages:
                    yield tp, record
            return
        streams = [_keyed(index, tp, messages)
                   for index, (tp, messages) in enumerate(records.items())]
        for _, _, _, tp, record in heapq.merge(*streams):
            yield tp, record


def _keyed(index: int, tp: Any, messages: list[Any]) -> Iterator[tuple[int, int, int, Any, Any]]:
    # (timestamp, partition index, position): unique, so records are never compared
    for position, record in enumerate(messages):
        yield record.timestamp, index, position, tp, record
