"""The spec's JSON Lines form: events in, findings, amendments and dead letters out."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields
from typing import IO, TYPE_CHECKING, Any

import orjson

from streams.errors import InvalidEvent
from streams.model.events import EVENT_TYPES, Event
from streams.model.findings import Amendment, DeadLetter, Finding
from streams.model.validate import event_from_record

if TYPE_CHECKING:
    from streams.evidence.pseudonymise import Pseudonymiser

__all__ = [
    "JsonForm",
    "dump_line",
    "event_to_json",
    "json_form",
    "read_jsonl",
    "write_events_jsonl",
]


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


JsonForm = Callable[[Any, Callable[[str], str]], dict[str, Any]]


def json_form(cls: type[Any], transformed: Iterable[str] = ()) -> JsonForm:
    """A fast `(event, transform) -> the spec's JSON form` for the event class `cls`:
    `type` first, then every field in order, arrays as lists, and `transform` applied
    to the non-null values of the fields named in `transformed` (pseudonymisation).

    Generated once per class as one dict display: about twice as fast as building
    the dict field by field, and findings' evidence is built this way per event.
    """
    wanted = frozenset(transformed)
    parts = [f'"type": {cls.TYPE!r}']
    for field in fields(cls):
        name, annotation = field.name, str(field.type)
        if not name.isidentifier():
            raise TypeError(f"{cls.__name__}.{name} is not a plain field name")
        value = f"e.{name}"
        if name in wanted:
            value = (f"(None if {value} is None else t({value}))"
                     if annotation.endswith("| None") else f"t({value})")
        elif annotation.startswith("tuple"):
            value = f"list({value})"
        parts.append(f"{name!r}: {value}")
    source = "def form(e, t):\n    return {" + ", ".join(parts) + "}\n"
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    form: JsonForm = namespace["form"]
    form.__qualname__ = form.__name__ = f"json_form_{cls.__name__}"
    return form


_PLAIN: dict[type[Any], JsonForm] = {cls: json_form(cls) for cls in EVENT_TYPES.values()}


def _unchanged(value: str) -> str:
    return value


def event_to_json(event: Event) -> dict[str, Any]:
    """The spec's JSON form of an event: `type` first, then every field (arrays as lists)."""
    return _PLAIN[type(event)](event, _unchanged)


def dump_line(item: Finding | Amendment | DeadLetter | dict[str, Any],
              pseudonymiser: Pseudonymiser | None = None) -> bytes:
    """One JSON line. orjson writes findings and amendments (slotted dataclasses,
    tuples as arrays) directly, once `pseudonymiser` has pseudonymised their evidence
    (without one, the development key's, see `default_pseudonymiser`); dead letters
    go through `to_dict` for base64."""
    kind = type(item)
    if kind is Finding and pseudonymiser is not None:
        return orjson.dumps(pseudonymiser.finding_json(item),  # type: ignore[arg-type]
                            option=orjson.OPT_APPEND_NEWLINE)
    if kind is Finding or kind is Amendment:
        if pseudonymiser is not None:
            item = pseudonymiser.seal(item)
        else:
            from streams.evidence.pseudonymise import seal_output

            item = seal_output(item)
        return orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE)
    if kind is dict:
        return orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE)
    return orjson.dumps(item.to_dict(), option=orjson.OPT_APPEND_NEWLINE)  # type: ignore[union-attr]


def write_events_jsonl(out: IO[bytes], events: Iterable[Event]) -> int:
    count = 0
    for event in events:
        out.write(orjson.dumps(event_to_json(event)) + b"\n")
        count += 1
    return count
