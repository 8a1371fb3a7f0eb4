"""A finding from the engine straight to its Avro datum, its evidence pseudonymised as
it is written.

The general path seals a finding first (`Pseudonymiser.finding`: each evidence event as
its pseudonymised JSON form, a dict), turns each form into the `EvidenceEvent` datum
(another dict) and writes that through the map of the plan: two dicts built per evidence
event only to be read again, and a union dispatch and a key encoding per field. The
worker writes a finding for about one event in three under a backlog; this writer
takes the fields of the engine's event in their order (one `attrgetter` call), writes
each key from bytes encoded once per event class, and pseudonymises the fields that
`pseudonymised_fields` names, as the JSON form does.

The bytes are the general path's, byte for byte: `encode_output(pseudonymiser.finding(f))`
(tests/serde/test_finding_writer.py, over generated findings of every event type).
A record's encoding is its fields' encodings in order, so the finding is its head (every
field but the last, `evidence`, through the schema's own plan) followed by the evidence
array written here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from operator import attrgetter
from typing import Any

from streams.errors import SchemaError
from streams.model.events import EVENT_TYPES, Event
from streams.model.findings import Finding
from streams.privacy.pseudonymise import NAMES_IN_CLEAR_FOR, Pseudonymiser, pseudonymised_fields
from streams.serde.datum_codec import Plan, plan_for, write_long, write_text

__all__ = ["FindingWriter"]

# The EvidenceEvent record: these, then the map of every other field of the event.
_HEAD = ("type", "event_id", "occurred_at", "fields")
_END_OF_BLOCKS = b"\x00"


class FindingWriter:
    """Writes findings of the `Finding` schema given (parsed, logical types stripped)."""

    def __init__(self, schema: Any) -> None:
        names = [field["name"] for field in schema["fields"]]
        finding_names = [field.name for field in fields(Finding)]
        if names != finding_names or names[-1] != "evidence":
            raise SchemaError("the Finding schema's fields are not the Finding's, in order, "
                              "ending with its evidence")
        self._head = plan_for({**schema, "fields": schema["fields"][:-1]}, as_values=True)
        self._head_values = attrgetter(*names[:-1])
        evidence = schema["fields"][-1]["type"]["items"]
        if [field["name"] for field in evidence["fields"]] != list(_HEAD):
            raise SchemaError("the EvidenceEvent schema's fields are not "
                              f"{', '.join(_HEAD)}")
        value = plan_for(evidence["fields"][3]["type"]["values"])
        self._writers = tuple(
            {cls: _EvidenceWriter(cls, pseudonymised_fields(cls, clear), value)
             for cls in EVENT_TYPES.values()}
            for clear in (False, True))

    def encode(self, finding: Finding, pseudonymiser: Pseudonymiser) -> bytes:
        """The datum of `pseudonymiser.finding(finding)` (schema `Finding`)."""
        out: list[bytes] = []
        self._head.write(out, self._head_values(finding))
        evidence: Sequence[Any] = finding.evidence
        if evidence:
            writers = self._writers[finding.rule in NAMES_IN_CLEAR_FOR]
            write_long(out, len(evidence))
            for item in evidence:
                writer = writers.get(type(item))
                if writer is None:
                    raise TypeError(f"evidence {type(item).__name__} is not an event")
                writer.write(out, item, pseudonymiser)
        out.append(_END_OF_BLOCKS)
        return b"".join(out)


class _EvidenceWriter:
    """Writes one event of a class as an EvidenceEvent datum, the fields in `hashed` as
    their pseudonym (when not null)."""

    def __init__(self, cls: type[Event], hashed: frozenset[str], value: Plan) -> None:
        names = [field.name for field in fields(cls) if field.name not in _HEAD]
        if {field.name for field in fields(cls)} & {"type", "fields"}:
            # The JSON form writes `type` as the class's and such a field's own value
            # after it; the datum's head and its map would take one of the two.
            raise SchemaError(f"{cls.__name__}: a field named type or fields")
        if len(names) < 2:  # an attrgetter of one name returns the value, not a tuple
            raise SchemaError(f"{cls.__name__}: too few fields for an evidence writer")
        self._values = attrgetter(*names)
        self._keys = [_text(name) for name in names]
        self._hashed = [name in hashed for name in names]
        self._start = _text(cls.TYPE)
        count: list[bytes] = []
        write_long(count, len(names))
        self._count = b"".join(count)
        self._value = value

    def write(self, out: list[bytes], event: Any, pseudonymiser: Pseudonymiser) -> None:
        keys, hashed, value = self._keys, self._hashed, self._value
        out.append(self._start)
        write_text(out, event.event_id)
        write_long(out, event.occurred_at)
        out.append(self._count)
        items = self._values(event)
        for n in range(len(keys)):
            out.append(keys[n])
            item = items[n]
            if hashed[n] and item is not None:
                item = pseudonymiser.pseudonym(item)
            value.write(out, item)
        out.append(_END_OF_BLOCKS)


def _text(value: str) -> bytes:
    out: list[bytes] = []
    write_text(out, value)
    return b"".join(out)
