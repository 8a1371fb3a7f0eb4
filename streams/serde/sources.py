"""Open a file of events in whichever form it is: Avro object container or JSON Lines."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

from streams.model.events import Event
from streams.model.findings import DeadLetter
from streams.serde.dead_letter_limit import DeadLetterLimit
from streams.serde.jsonl import read_jsonl

__all__ = ["AVRO_MAGIC", "detect_format", "read_events"]

AVRO_MAGIC = b"Obj\x01"


def detect_format(stream: IO[bytes]) -> str:
    """`avro` for an Avro object container file, else `jsonl`; reads nothing off the stream."""
    head = stream.peek(4)[:4] if hasattr(stream, "peek") else b""
    return "avro" if head == AVRO_MAGIC else "jsonl"


def read_events(
    stream: IO[bytes], source: str, fmt: str | None = None, limit: DeadLetterLimit | None = None,
    max_future_skew_ms: int | None = None,
) -> Iterator[tuple[int, Event | DeadLetter]]:
    """Yield (record number, event or dead letter); bad records never stop the reading.

    With `limit`, the invalid records it does not admit are counted there, not yielded.
    With `max_future_skew_ms`, an event later than the wall clock when it is read plus
    that skew is a dead letter (`future_timestamp`, spec: "Time from the future").
    """
    if (fmt or detect_format(stream)) == "avro":
        from streams.serde.avro import read_event_container

        return read_event_container(stream, source, limit, max_future_skew_ms)
    return read_jsonl(stream, source, limit, max_future_skew_ms)
