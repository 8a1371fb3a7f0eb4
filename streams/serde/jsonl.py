"""The spec's JSON Lines form: events in, findings, amendments and dead letters out."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import fields
from operator import attrgetter
from typing import IO, Any, Final

import orjson

from streams.errors import InvalidEvent
from streams.model.events import EVENT_TYPES, Event
from streams.model.findings import Amendment, DeadLetter, file_dead_letter
from streams.model.json_form import JsonForm, json_form
from streams.model.validate import event_from_record, refuse_future
from streams.privacy.sealed import SealedAmendment, SealedFinding
from streams.serde.dead_letter_limit import DeadLetterLimit

__all__ = [
    "amendment_json",
    "dump_line",
    "event_to_json",
    "finding_json",
    "read_jsonl",
    "write_events_jsonl",
]


# orjson refuses a line nested deeper than this; its error message says which it was.
MAX_JSON_DEPTH = 1024
_TOO_DEEP_MESSAGES = ("depth limit", "recursion limit")


def read_jsonl(
    lines: Iterable[bytes], source: str, limit: DeadLetterLimit | None = None,
    max_future_skew_ms: int | None = None,
) -> Iterator[tuple[int, Event | DeadLetter]]:
    """Yield (line number, event or dead letter) for every non-blank line; an invalid line
    that `limit` does not admit is only counted there. With `max_future_skew_ms`, an
    event from the future (see `refuse_future`) is an invalid line."""
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            dead = _not_json(source, number, exc, line)
            if limit is None or limit.admit(dead.reason_code):
                yield number, dead
            continue
        if type(record) is dict:
            # Each key of an object is followed by one colon: a line with no more colons
            # than its object has keys repeats none (the common case costs one count).
            extra_colons = line.count(b":") - len(record)
            if extra_colons and _repeats_a_key(line, record, extra_colons):
                if limit is None or limit.admit("duplicate_key"):
                    yield number, file_dead_letter(source, number, "duplicate_key",
                                        "line repeats a key in a JSON object", line)
                continue
        try:
            event = event_from_record(record)
            if max_future_skew_ms is not None:
                refuse_future(event.occurred_at, max_future_skew_ms)
        except InvalidEvent as exc:
            if limit is None or limit.admit(exc.code):
                yield number, file_dead_letter(source, number, exc.code, exc.message, line)
            continue
        yield number, event


def _not_json(source: str, number: int, exc: orjson.JSONDecodeError, line: bytes) -> DeadLetter:
    if exc.msg.startswith(_TOO_DEEP_MESSAGES):
        return file_dead_letter(source, number, "too_deep",
                     f"line is JSON nested deeper than {MAX_JSON_DEPTH} levels", line)
    return file_dead_letter(source, number, "not_json", "line is not valid UTF-8 JSON",
                            line)


# Fields whose values are often RFC 3339 times, with colons of their own.
_TIME_FIELDS = ("occurred_at", "expires_at")


def _repeats_a_key(line: bytes, record: dict[str, Any], extra_colons: int) -> bool:
    """Whether some object of `line` repeats a key (orjson keeps the last value silently).

    `extra_colons`: the line's colons beyond one per key of `record`. When those are all
    in the time fields' values, no key repeats; an escape (`\\u003a`) could hide a colon
    from that count, so then, as for any other extra colon, the line is parsed again
    keeping every key (slower, and rare). A line too deep for that second parse counts as
    repeating a key: it cannot be shown not to.
    """
    if b"\\u003a" not in line.lower():  # the one escape that can hide a colon
        for name in _TIME_FIELDS:
            value = record.get(name)
            if type(value) is str:
                extra_colons -= value.count(":")
        if extra_colons == 0:
            return False
    try:
        json.loads(line, object_pairs_hook=_refuse_repeated_keys)
    except (_RepeatedKey, RecursionError):
        # RecursionError: nested deeper than Python's parser goes (orjson goes to 1024),
        # so its keys cannot be checked: such a line is refused too, never let through.
        return True
    except ValueError:
        return False  # orjson read it: its verdict stands
    return False


class _RepeatedKey(Exception):
    pass


def _refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _RepeatedKey
    return result


_PLAIN: dict[type[Any], JsonForm] = {cls: json_form(cls) for cls in EVENT_TYPES.values()}


def _unchanged(value: str) -> str:
    return value


def event_to_json(event: Event) -> dict[str, Any]:
    """The spec's JSON form of an event: `type` first, then every field (arrays as lists)."""
    return _PLAIN[type(event)](event, _unchanged)


# Every field of an Amendment before its evidence and late event (its last two), in order.
_AMENDMENT_HEAD: Final = tuple(f.name for f in fields(Amendment)
                               if f.name not in ("evidence", "late_event"))
_amendment_head: Final = attrgetter(*_AMENDMENT_HEAD)


def finding_json(sealed: SealedFinding) -> dict[str, Any]:
    """The JSON form of a sealed finding: the fields of Finding, in order
    (tests/privacy/test_evidence_in_findings.py checks), its evidence the sealed one."""
    finding = sealed.finding
    return {
        "finding_id": finding.finding_id,
        "rule": finding.rule,
        "severity": finding.severity,
        "subject_id": finding.subject_id,
        "account_id": finding.account_id,
        "meeting_id": finding.meeting_id,
        "provider": finding.provider,
        "trigger_event_id": finding.trigger_event_id,
        "evidence_event_ids": finding.evidence_event_ids,
        "occurred_at": finding.occurred_at,
        "detected_at": finding.detected_at,
        "explanation": finding.explanation,
        "evidence": sealed.evidence,
    }


def amendment_json(sealed: SealedAmendment) -> dict[str, Any]:
    """The JSON form of a sealed amendment: the fields of Amendment, in order."""
    form = dict(zip(_AMENDMENT_HEAD, _amendment_head(sealed.amendment), strict=True))
    form["evidence"] = sealed.evidence
    form["late_event"] = sealed.late_event
    return form


def dump_line(item: SealedFinding | SealedAmendment | DeadLetter | dict[str, Any]) -> bytes:
    """One JSON line (orjson writes tuples as arrays); dead letters go through `to_dict`
    for base64."""
    kind = type(item)
    if kind is SealedFinding:
        return orjson.dumps(finding_json(item), option=orjson.OPT_APPEND_NEWLINE)  # type: ignore[arg-type]
    if kind is SealedAmendment:
        return orjson.dumps(amendment_json(item),  # type: ignore[arg-type]
                            option=orjson.OPT_APPEND_NEWLINE)
    if kind is dict:
        return orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE)
    return orjson.dumps(item.to_dict(), option=orjson.OPT_APPEND_NEWLINE)  # type: ignore[union-attr]


def write_events_jsonl(out: IO[bytes], events: Iterable[Event]) -> int:
    count = 0
    for event in events:
        out.write(orjson.dumps(event_to_json(event)) + b"\n")
        count += 1
    return count
