"""Writing a simulation out: events as JSON Lines or an Avro container, truth as JSON Lines.

Both forms are byte-identical for the same seed: JSON Lines has no varying part,
and the Avro container's sync marker (random by default) is derived from the seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import IO, Any

import orjson

from streams.model.events import Event
from streams.serde.jsonl import event_to_json
from streams.simulate.truth import Expected

__all__ = ["avro_sync_marker", "format_for", "write_events", "write_expected"]


def format_for(name: str) -> str:
    """`avro` for a file name ending in .avro, else `jsonl`."""
    return "avro" if name.lower().endswith(".avro") else "jsonl"


def avro_sync_marker(seed: int) -> bytes:
    """The container's 16-byte sync marker, fixed by the seed so the file is reproducible."""
    return hashlib.sha256(f"consentwatch simulate {seed}".encode()).digest()[:16]


def write_events(out: IO[bytes], events: Iterable[Event], fmt: str, seed: int) -> int:
    """Write `events` in `fmt` (`jsonl` or `avro`); returns how many were written."""
    if fmt == "avro":
        return _write_avro(out, events, avro_sync_marker(seed))
    count = 0
    dumps, write = orjson.dumps, out.write
    for event in events:
        write(dumps(event_to_json(event)) + b"\n")
        count += 1
    return count


def _write_avro(out: IO[bytes], events: Iterable[Event], sync_marker: bytes) -> int:
    import fastavro

    from streams.serde.avro import NAMESPACE, event_to_record, event_union_schema

    count = 0

    def datums() -> Iterator[tuple[str, dict[str, Any]]]:
        nonlocal count
        for event in events:
            count += 1
            yield f"{NAMESPACE}.{event.TYPE}", event_to_record(event)

    schema = _sorted_keys(event_union_schema())
    fastavro.writer(out, schema, datums(), sync_marker=sync_marker)
    return count


def _sorted_keys(value: Any) -> Any:
    """The parsed schema with every object's keys sorted: fastavro writes it into the
    header in its key order, which otherwise varies with the hash seed."""
    if isinstance(value, dict):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value


def write_expected(out: IO[bytes], expected: Expected) -> None:
    out.write(orjson.dumps(expected.to_dict()) + b"\n")
