"""The spec's JSON Lines form: events in, findings, amendments and dead letters out."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import fields
from typing import IO, Any

import orjson

from streams.errors import InvalidEvent
from streams.model.events import Event
from streams.model.findings import Amendment, DeadLetter, Finding
from streams.model.validate import event_from_record

__all__ = ["dump_line", "event_to_json", "read_jsonl", "write_events_jsonl"]


def read_jsonl(lines: Iterable[bytes], source: str) -> Iterator[tuple[int, Event | DeadLetter]]:
    """Yield (line number, event or dead letter) for every non-blank line."""
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            yield number, _dead(source, number, "not_json", "line is not valid UTF-8 JSON", line)
            continue
        try:
            yield number, event_from_record(record)
        except InvalidEvent as exc:
            yield number, _dead(source, number, exc.code, exc.message, line)


def _dead(source: str, number: int, code: str, reason: str, payload: bytes) -> DeadLetter:
    return DeadLetter(
        source=source,
        partition=None,
        position=number,
        reason_code=code,
        reason=reason,
        payload=bytes(payload),
        dead_lettered_at=time.time_ns() // 1_000_000,
    )


def event_to_json(event: Event) -> dict[str, Any]:
    """The spec's JSON form of an event: `type` first, then every field."""
    record: dict[str, Any] = {"type": event.TYPE}
    for field in fields(event):
        value = getattr(event, field.name)
        record[field.name] = list(value) if type(value) is tuple else value
    return record


def dump_line(item: Finding | Amendment | DeadLetter | dict[str, Any]) -> bytes:
    """One JSON line. orjson writes findings and amendments (slotted dataclasses,
    tuples as arrays) directly; dead letters go through `to_dict` for base64."""
    if type(item) is Finding or type(item) is Amendment or type(item) is dict:
        return orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE)
    return orjson.dumps(item.to_dict(), option=orjson.OPT_APPEND_NEWLINE)  # type: ignore[union-attr]


def write_events_jsonl(out: IO[bytes], events: Iterable[Event]) -> int:
    count = 0
    for event in events:
        out.write(orjson.dumps(event_to_json(event)) + b"\n")
        count += 1
    return count
