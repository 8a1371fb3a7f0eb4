"""Schema Registry subject names, as Confluent's serialisers choose them.

- `topic` (TopicNameStrategy, their default): `<topic>-value`, one schema line per topic;
- `record` (RecordNameStrategy): the record's full name, whatever the topic;
- `topic-record` (TopicRecordNameStrategy): `<topic>-<record full name>`.

Only a writer registers under a subject; a reader finds a schema by its id, whatever
the strategy that registered it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

__all__ = ["SUBJECT_NAME_STRATEGIES", "subject_namer"]

SUBJECT_NAME_STRATEGIES = ("topic", "record", "topic-record")
NAMESPACE = "io.consentwatch.events"


def subject_namer(strategy: str, topics: Mapping[str, str]) -> Callable[[str], str]:
    """Event type name -> subject; `topics`: event type name -> its input topic."""
    if strategy == "topic":
        return lambda name: f"{topics[name]}-value"
    if strategy == "record":
        return lambda name: f"{NAMESPACE}.{name}"
    if strategy == "topic-record":
        return lambda name: f"{topics[name]}-{NAMESPACE}.{name}"
    raise ValueError(f"unknown subject name strategy {strategy!r}")
