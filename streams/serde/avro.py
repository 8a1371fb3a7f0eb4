"""Avro for consentwatch: the schemas in `schemas/`, datums, and object container files.

Events are Avro records of the namespace `io.consentwatch.events`, one schema file
per record (spec: "Events"). A container file of events has the union of the seven
event records as its schema; a container whose schema is a single event record is
read too.

Every decoded event goes through `streams.model.validate.event_from_record`, the one
validator of every input. Reading never raises on bad input: a record that decodes
but is not a valid event becomes a DeadLetter, and a corrupt or truncated container
ends with one `corrupt_container` DeadLetter. A container that cannot be read safely is
one DeadLetter saying why: a codec not installed or unknown (`unsupported_codec`), a
writer schema nested too deep or recursive (`schema_too_deep`).
"""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import fields
from datetime import datetime
from operator import attrgetter
from pathlib import Path
from typing import IO, Any, TypeVar

import fastavro

from streams.errors import InvalidEvent, SchemaError
from streams.model import contract
from streams.model.events import EVENT_TYPES, Event
from streams.model.findings import Amendment, DeadLetter, Finding, file_dead_letter
from streams.model.timestamps import MAX_MS, MIN_MS, ms_from_datetime
from streams.model.validate import (
    BadValue,
    Validator,
    event_from_record,
    refuse_future,
    string_array,
    validator_for,
)
from streams.privacy.sealed import SealedAmendment, SealedFinding
from streams.serde.datum_codec import Plan, Unplannable, container_plan
from streams.serde.dead_letter_limit import DeadLetterLimit
from streams.serde.schema_depth import UnsafeSchema, check_schema_depth

__all__ = [
    "CORRUPT_CONTAINER",
    "EVENT_SCHEMA_NAMES",
    "NAMESPACE",
    "SCHEMA_DIR",
    "SCHEMA_NAMES",
    "SCHEMA_TOO_DEEP",
    "UNSUPPORTED_CODEC",
    "amendment_to_record",
    "dead_letter_to_record",
    "event_to_record",
    "event_union_schema",
    "finding_to_record",
    "load_schema",
    "parsed_schema",
    "read_event_container",
    "record_to_amendment",
    "record_to_dead_letter",
    "record_to_event",
    "record_to_finding",
    "schema_history",
    "strip_timestamp_millis",
    "write_event_container",
]


SCHEMA_DIR: Path = contract.SCHEMA_DIR
NAMESPACE = "io.consentwatch.events"
# The seven events, in the order of the spec (and of the container union).
EVENT_SCHEMA_NAMES: tuple[str, ...] = tuple(EVENT_TYPES)
SCHEMA_NAMES: tuple[str, ...] = (*EVENT_SCHEMA_NAMES, "Finding", "Amendment", "DeadLetter")
# reason_code of the one DeadLetter that ends a corrupt or truncated container.
CORRUPT_CONTAINER = "corrupt_container"
# reason_code of the one DeadLetter of a container read no further: its codec cannot be
# decoded here, or its writer schema could make fastavro overflow the C stack.
UNSUPPORTED_CODEC = "unsupported_codec"
SCHEMA_TOO_DEEP = "schema_too_deep"

_PREFIX = NAMESPACE + "."
_MAGIC = b"Obj\x01"
# A dead letter for a corrupt container keeps at most this much of the file.
_MAX_CORRUPT_PAYLOAD = 1 << 20
_VERSION_FILE = re.compile(r"v([1-9][0-9]*)\.avsc")
# The container header after the magic (Avro spec, "Object Container Files").
_HEADER_REST: dict[str, Any] = {
    "type": "record",
    "name": "org.apache.avro.file.HeaderRest",
    "fields": [
        {"name": "meta", "type": {"type": "map", "values": "bytes"}},
        {"name": "sync", "type": {"type": "fixed", "name": "Sync", "size": 16}},
    ],
}


# --------------------------------------------------------------------------- schemas


def _schema_path(name: str) -> Path:
    if name not in SCHEMA_NAMES:
        raise SchemaError(f"no schema named {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    return SCHEMA_DIR / f"{name}.avsc"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SchemaError(f"cannot read schema file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise SchemaError(f"schema file {path} is not valid JSON: {exc}") from exc


def load_schema(name: str) -> dict[str, Any]:
    """The schema `name` (e.g. "ConsentChanged") as raw JSON; a fresh copy each call."""
    schema = _read_json(_schema_path(name))
    if not isinstance(schema, dict):
        raise SchemaError(f"schema {name} is not a JSON object")
    return schema


@functools.cache
def parsed_schema(name: str) -> Any:
    """`fastavro.parse_schema` of `load_schema(name)`, cached: do not mutate it."""
    try:
        return fastavro.parse_schema(load_schema(name))
    except SchemaError:
        raise
    except Exception as exc:
        raise SchemaError(f"schema {name} does not parse: {exc}") from exc


@functools.cache
def event_union_schema() -> Any:
    """The parsed union of the seven event records (the schema of a container file)."""
    try:
        return fastavro.parse_schema([load_schema(name) for name in EVENT_SCHEMA_NAMES])
    except SchemaError:
        raise
    except Exception as exc:
        raise SchemaError(f"the event union does not parse: {exc}") from exc


def schema_history(name: str) -> list[tuple[int, dict[str, Any]]]:
    """Every released version of schema `name`, oldest first: `[(version, schema), ...]`.

    Versions live in `schemas/history/<name>/v<N>.avsc`.
    """
    _schema_path(name)  # validates the name
    folder = SCHEMA_DIR / "history" / name
    if not folder.is_dir():
        return []
    versions: list[tuple[int, dict[str, Any]]] = []
    for path in folder.iterdir():
        match = _VERSION_FILE.fullmatch(path.name)
        if match is None:
            continue
        schema = _read_json(path)
        if not isinstance(schema, dict):
            raise SchemaError(f"{path} is not a JSON object")
        versions.append((int(match.group(1)), schema))
    versions.sort(key=lambda item: item[0])
    return versions


# --------------------------------------------------------------------------- datums

_T = TypeVar("_T")
_ToRecord = Callable[[Any], dict[str, Any]]


def _record_maker(cls: type[Any]) -> _ToRecord:
    """A fast `obj -> Avro datum` for a frozen dataclass: tuples become lists."""
    names = tuple(field.name for field in fields(cls))
    getter = attrgetter(*names)
    arrays = tuple(field.name for field in fields(cls) if str(field.type).startswith("tuple"))

    if not arrays:

        def to_record(obj: Any) -> dict[str, Any]:
            return dict(zip(names, getter(obj), strict=True))

        return to_record

    def to_record_with_arrays(obj: Any) -> dict[str, Any]:
        record = dict(zip(names, getter(obj), strict=True))
        for name in arrays:
            record[name] = list(record[name])
        return record

    return to_record_with_arrays


_EVENT_TO_RECORD: dict[type[Any], _ToRecord] = {
    cls: _record_maker(cls) for cls in EVENT_TYPES.values()
}
_FULL_NAME: dict[type[Any], str] = {cls: _PREFIX + cls.TYPE for cls in EVENT_TYPES.values()}


def event_to_record(event: Event) -> dict[str, Any]:
    """The Avro datum of `event` (category tuples as lists, timestamps as epoch ms)."""
    try:
        to_record = _EVENT_TO_RECORD[type(event)]
    except KeyError:
        raise TypeError(f"not an event: {type(event).__name__}") from None
    return to_record(event)


def record_to_event(type_name: str, record: Mapping[str, Any]) -> Event:
    """The event a decoded datum describes; raises InvalidEvent when it is not valid.

    `type_name` is the record name, short ("ConsentChanged") or full
    ("io.consentwatch.events.ConsentChanged"). Validation is the project's one
    validator, `event_from_record`.
    """
    if type_name.startswith(_PREFIX):
        type_name = type_name[len(_PREFIX) :]
    return event_from_record(record, type_name)


def _ms(value: Any) -> int:
    if type(value) is int:
        ms: int = value
    elif isinstance(value, datetime) and value.tzinfo is not None:
        ms = ms_from_datetime(value)
    else:
        raise BadValue("must be epoch milliseconds")
    if not MIN_MS <= ms <= MAX_MS:
        raise BadValue("is outside the years 1 to 9999")
    return ms


def _checker(field_type: Any) -> tuple[Callable[[Any], Any], bool]:
    """(check, optional) for one field type of our own schemas."""
    optional = False
    if isinstance(field_type, list):
        branches = [branch for branch in field_type if branch != "null"]
        if len(branches) != 1 or len(field_type) != 2:
            raise SchemaError(f"unsupported union {field_type!r}")
        optional, field_type = True, branches[0]
    if field_type == _EVIDENCE:  # a reference to the record, in a union
        return _evidence_item, optional
    if isinstance(field_type, dict):
        if field_type.get("logicalType") == "timestamp-millis":
            return _ms, optional
        kind = field_type["type"]
        if kind == "enum":
            return _enum_check(tuple(field_type["symbols"])), optional
        if kind == "array" and field_type["items"] == "string":
            return string_array, optional
        items = field_type.get("items")
        if kind == "array" and isinstance(items, dict) and items.get("name") == _EVIDENCE:
            return _evidence_items, optional
        if kind == "record" and field_type.get("name") == _EVIDENCE:
            return _evidence_item, optional
        field_type = kind
    simple = _SIMPLE.get(field_type) if isinstance(field_type, str) else None
    if simple is None:
        raise SchemaError(f"unsupported field type {field_type!r}")
    return simple, optional


def _str(value: Any) -> str:
    if type(value) is not str:
        raise BadValue("must be a string")
    return value


def _int(value: Any) -> int:
    if type(value) is not int:
        raise BadValue("must be an integer")
    return value


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise BadValue("must be a boolean")
    return value


def _bytes(value: Any) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise BadValue("must be bytes")
    return bytes(value)


def _enum_check(symbols: tuple[str, ...]) -> Callable[[Any], str]:
    allowed = frozenset(symbols)
    message = "must be one of " + ", ".join(symbols)

    def check(value: Any) -> str:
        if type(value) is not str or value not in allowed:
            raise BadValue(message)
        return value

    return check


# The record of one evidence event in Finding and Amendment: type, event_id and
# occurred_at, then a map of the event's other fields (see streams.evidence).
_EVIDENCE = "EvidenceEvent"
_EVIDENCE_HEAD = frozenset({"type", "event_id", "occurred_at"})


def _evidence_value(value: Any) -> Any:
    if value is None or type(value) in (bool, int, str):
        return value
    if type(value) is list or type(value) is tuple:
        return list(string_array(value))
    raise BadValue("has an evidence field that is not null, a boolean, a long, a string or "
               "an array of strings")


def _evidence_item(value: Any) -> dict[str, Any]:
    """The JSON form of one evidence event from its Avro datum."""
    if not isinstance(value, Mapping) or not isinstance(value.get("fields"), Mapping):
        raise BadValue("must hold evidence event records")
    item: dict[str, Any] = {
        "type": _str(value.get("type")),
        "event_id": _str(value.get("event_id")),
        "occurred_at": _ms(value.get("occurred_at")),
    }
    for name, field_value in value["fields"].items():
        if type(name) is not str or name in _EVIDENCE_HEAD:
            raise BadValue("has an evidence event with a bad field name")
        item[name] = _evidence_value(field_value)
    return item


def _evidence_items(value: Any) -> tuple[dict[str, Any], ...]:
    if type(value) is not list and type(value) is not tuple:
        raise BadValue("must be an array of evidence event records")
    return tuple(_evidence_item(item) for item in value)


def _evidence_datum(item: Mapping[str, Any]) -> dict[str, Any]:
    """The Avro datum of one evidence event from its (pseudonymised) JSON form."""
    return {
        "type": item["type"],
        "event_id": item["event_id"],
        "occurred_at": item["occurred_at"],
        "fields": {name: value for name, value in item.items() if name not in _EVIDENCE_HEAD},
    }


_SIMPLE: dict[str, Callable[[Any], Any]] = {
    "string": _str,
    "int": _int,
    "long": _int,
    "boolean": _bool,
    "bytes": _bytes,
}


def _record_reader(name: str, cls: type[_T]) -> Callable[[Any], _T]:
    """A `datum -> cls` that checks each field against the schema `name`."""
    checks = []
    defaults: dict[str, Any] = {}
    for field in load_schema(name)["fields"]:
        check, optional = _checker(field["type"])
        checks.append((field["name"], check, optional))
        if field.get("default") is not None:  # a field added later: absent in older data
            defaults[field["name"]] = check(field["default"])

    def from_record(record: Any) -> _T:
        if not isinstance(record, Mapping):
            raise InvalidEvent("not_an_object", f"{name}: record is not an object")
        values: dict[str, Any] = {}
        for field_name, check, optional in checks:
            value = record.get(field_name)
            if value is None:
                if optional:
                    values[field_name] = None
                    continue
                if field_name in defaults and field_name not in record:
                    values[field_name] = defaults[field_name]
                    continue
                raise InvalidEvent(
                    "missing_field", f"{name}: field '{field_name}' is missing or null"
                )
            try:
                values[field_name] = check(value)
            except BadValue as bad:
                raise InvalidEvent(
                    "invalid_field", f"{name}: field '{field_name}' {bad.reason}"
                ) from None
        return cls(**values)

    return from_record


@functools.cache
def _reader_for(name: str) -> Callable[[Any], Any]:
    cls = {"Finding": Finding, "Amendment": Amendment, "DeadLetter": DeadLetter}[name]
    return _record_reader(name, cls)


_FINDING_TO_RECORD = _record_maker(Finding)
_AMENDMENT_TO_RECORD = _record_maker(Amendment)
_DEAD_LETTER_TO_RECORD = _record_maker(DeadLetter)


def _values_getter(cls: type[Any], name: str) -> Callable[[Any], tuple[Any, ...]]:
    """The field values of a `cls`, in the order of the schema `name` (checked to be the
    dataclass's)."""
    names = [field.name for field in fields(cls)]
    if names != [field["name"] for field in load_schema(name)["fields"]]:
        raise SchemaError(f"the fields of schema {name} are not those of {cls.__name__}, "
                          "in its order")
    return attrgetter(*names)


_FINDING_VALUES = _values_getter(Finding, "Finding")
_AMENDMENT_VALUES = _values_getter(Amendment, "Amendment")


def finding_values(sealed: SealedFinding) -> list[Any]:
    """The datum of a sealed finding as the list of its field values (schema `Finding`),
    for a plan that writes it from them (`datum_codec.plan_for(..., as_values=True)`):
    the dict of `finding_to_record` is built only to be looked up again."""
    values = list(_FINDING_VALUES(sealed.finding))
    values[-1] = [_evidence_datum(item) for item in sealed.evidence]  # evidence is last
    return values


def amendment_values(sealed: SealedAmendment) -> list[Any]:
    """The datum of a sealed amendment as its field values, as `finding_values`."""
    values = list(_AMENDMENT_VALUES(sealed.amendment))
    late = sealed.late_event
    values[-2] = [_evidence_datum(item) for item in sealed.evidence]  # then late_event
    values[-1] = None if late is None else _evidence_datum(late)
    return values


def finding_to_record(sealed: SealedFinding) -> dict[str, Any]:
    """The Avro datum of a sealed finding (schema `Finding`)."""
    record = _FINDING_TO_RECORD(sealed.finding)
    record["evidence"] = [_evidence_datum(item) for item in sealed.evidence]
    return record


def record_to_finding(record: Mapping[str, Any]) -> Finding:
    """A Finding from its datum; raises InvalidEvent (code, safe message) when malformed."""
    finding: Finding = _reader_for("Finding")(record)
    return finding


def amendment_to_record(sealed: SealedAmendment) -> dict[str, Any]:
    """The Avro datum of a sealed amendment (schema `Amendment`), as `finding_to_record`."""
    record = _AMENDMENT_TO_RECORD(sealed.amendment)
    record["evidence"] = [_evidence_datum(item) for item in sealed.evidence]
    late = sealed.late_event
    record["late_event"] = None if late is None else _evidence_datum(late)
    return record


def record_to_amendment(record: Mapping[str, Any]) -> Amendment:
    """An Amendment from its datum; raises InvalidEvent when malformed."""
    amendment: Amendment = _reader_for("Amendment")(record)
    return amendment


def dead_letter_to_record(dead_letter: DeadLetter) -> dict[str, Any]:
    """The Avro datum of a DeadLetter (schema `DeadLetter`)."""
    return _DEAD_LETTER_TO_RECORD(dead_letter)


def record_to_dead_letter(record: Mapping[str, Any]) -> DeadLetter:
    """A DeadLetter from its datum; raises InvalidEvent when malformed."""
    dead_letter: DeadLetter = _reader_for("DeadLetter")(record)
    return dead_letter


# --------------------------------------------------------------------------- containers


def write_event_container(
    fo_or_path: IO[bytes] | str | os.PathLike[str],
    events: Iterable[Event],
    codec: str = "null",
) -> int:
    """Write `events` as an Avro object container file; returns how many were written.

    The file's schema is the union of the seven event records; `codec` is any
    fastavro codec ("null", "deflate", ...).
    """
    count = 0
    to_record = _EVENT_TO_RECORD
    full_name = _FULL_NAME

    def datums() -> Iterator[tuple[str, dict[str, Any]]]:
        nonlocal count
        for event in events:
            kind = type(event)
            maker = to_record.get(kind)
            if maker is None:
                raise TypeError(f"not an event: {kind.__name__}")
            count += 1
            # Tuple notation names the union branch: no per-record branch matching.
            yield full_name[kind], maker(event)

    if isinstance(fo_or_path, str | os.PathLike):
        with open(fo_or_path, "wb") as fo:
            fastavro.writer(fo, event_union_schema(), datums(), codec=codec)
    else:
        fastavro.writer(fo_or_path, event_union_schema(), datums(), codec=codec)
    return count


class _Source:
    """The container's bytes for fastavro: a rewritten header, then the rest of `fo`.

    `tell()` is the number of bytes of `fo` consumed since the container began, so
    block offsets are offsets in the original file.
    """

    __slots__ = ("_fo", "_head", "consumed")

    def __init__(self, fo: IO[bytes]) -> None:
        self._fo = fo
        self._head = b""
        self.consumed = 0

    def replace_header(self, head: bytes) -> None:
        self._head = head

    def read(self, size: int = -1) -> bytes:
        head = self._head
        if head:
            if size is None or size < 0:
                self._head = b""
                return head + self._read_fo(-1)
            self._head = head[size:]
            head = head[:size]
            if len(head) == size:
                return head
            return head + self._read_fo(size - len(head))
        return self._read_fo(size)

    def _read_fo(self, size: int) -> bytes:
        data = self._fo.read(size)
        self.consumed += len(data)
        return data

    def tell(self) -> int:
        return self.consumed


def strip_timestamp_millis(schema: Any) -> Any:
    """`schema` with timestamp-millis longs as plain longs.

    They then decode as epoch-ms ints, which is what the events hold; it saves a
    datetime per timestamp, and a timestamp out of datetime's range becomes one
    invalid event instead of an exception that would end the file.
    """
    if isinstance(schema, list):
        return [strip_timestamp_millis(item) for item in schema]
    if isinstance(schema, dict):
        if schema.get("type") == "long" and schema.get("logicalType") == "timestamp-millis":
            return {key: value for key, value in schema.items() if key != "logicalType"}
        return {key: strip_timestamp_millis(value) for key, value in schema.items()}
    return schema


def _full_name(schema: Mapping[str, Any], namespace: str | None) -> str:
    name = str(schema.get("name", ""))
    if "." in name:
        return name
    namespace = schema.get("namespace", namespace)
    return f"{namespace}.{name}" if namespace else name


def _field_shapes(record: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    """A record schema's fields as (name, the shape of its type): what the bytes and the
    values read from them depend on."""
    return [(field.get("name"), _shape(field.get("type")))
            for field in record.get("fields", []) if isinstance(field, dict)]


# What does not change how a value is written or read (an enum's symbols do, its name
# does not: fastavro writes it with its full name, the schema files with a namespace).
_NOT_SHAPE = frozenset({"doc", "name", "namespace", "aliases", "default"})


def _shape(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {key: _shape(value) for key, value in schema.items() if key not in _NOT_SHAPE}
    if isinstance(schema, list):
        return [_shape(item) for item in schema]
    return schema


@functools.cache
def _current_field_shapes(name: str) -> list[tuple[Any, Any]]:
    return _field_shapes(load_schema(name))


@functools.cache
def _event_defaults() -> dict[str, dict[str, Any]]:
    """Per event: field name -> default, from the current schemas (for older writers)."""
    return {
        name: {field["name"]: field.get("default") for field in load_schema(name)["fields"]}
        for name in EVENT_SCHEMA_NAMES
    }


class _Plan:
    """What reading a container needs per record name, worked out once per schema."""

    __slots__ = ("as_values", "by_name", "datums", "fast", "field_names", "named", "parsed",
                 "single", "stripped")

    def __init__(self, writer_schema: Any) -> None:
        self.stripped = strip_timestamp_millis(writer_schema)
        branches: list[Any]
        if isinstance(writer_schema, dict) and writer_schema.get("type") == "record":
            self.single: str = _full_name(writer_schema, None)
            branches = [writer_schema]
        else:
            self.single = ""  # not a record: the validator reports not_an_object
            branches = writer_schema if isinstance(writer_schema, list) else []
        defaults = _event_defaults()
        # full name -> (event type name for the validator, defaults to add or None)
        self.by_name: dict[str, tuple[str, dict[str, Any] | None]] = {}
        # full name -> its fields' names, in the writer's order
        self.field_names: dict[str, list[str]] = {}
        # the event records written with the current schema's fields (names and types)
        current_fields: set[str] = set()
        for branch in branches:
            if not isinstance(branch, dict) or branch.get("type") != "record":
                continue
            full = _full_name(branch, None)
            short = full[len(_PREFIX) :] if full.startswith(_PREFIX) else full
            if short not in EVENT_TYPES:
                self.by_name[full] = (full, None)  # the validator reports unknown_type
                continue
            self.field_names[full] = [str(field.get("name")) for field in branch.get("fields", [])
                                      if isinstance(field, dict)]
            if _field_shapes(branch) == _current_field_shapes(short):
                current_fields.add(full)
            written = set(self.field_names[full])
            # Schema evolution: a field the writer did not have takes the reader's default.
            fill = {
                name: value
                for name, value in defaults[short].items()
                if name not in written and value is not None
            }
            self.by_name[full] = (short, fill or None)
        # The common case, a union of event records that need no defaults: full name ->
        # the validator of that event, looked up once here instead of once per record.
        self.fast: dict[str, Validator] = {}
        # Of these, the records written with the current schema's fields (so the
        # validator's, in its order): their datums are read as lists of values, which it
        # takes by position. Only these: the validator converts values in place (a
        # timestamp written as a string becomes epoch ms), and a dead letter's payload is
        # its values written again with the writer's schema, which then must still take them.
        as_values: set[str] = set()
        for full, (short, defaults_to_add) in self.by_name.items():
            validate = validator_for(short) if defaults_to_add is None else None
            if validate is not None:
                self.fast[full] = validate
                if full in current_fields and self.field_names[full] == validate.names:
                    as_values.add(full)
        self.as_values = frozenset(as_values)
        self.parsed: Any = None
        self.named: dict[str, Any] = {}
        # The blocks' datums read by a plan (streams/serde/datum_codec.py: the same values
        # as fastavro's, a third of its time), or by fastavro where none can be made.
        self.datums: Plan | None
        try:
            self.datums = container_plan(self.stripped, self.as_values)
        except Unplannable:
            self.datums = None

    def payload(self, name: str, item: Any, record: Any) -> bytes:
        """The datum re-encoded against the writer's record schema (empty if it cannot be)."""
        try:
            if self.parsed is None:
                self.parsed = fastavro.parse_schema(self.stripped, self.named)
            out = io.BytesIO()
            branch = self.named.get(name) if name else None
            if type(record) is list and name in self.as_values:  # read as its values
                record = dict(zip(self.field_names[name], record, strict=True))
            if branch is not None and isinstance(record, Mapping):
                fastavro.schemaless_writer(out, branch, record)
            else:
                fastavro.schemaless_writer(out, self.parsed, item)
            return out.getvalue()
        except Exception:
            return b""


@functools.lru_cache(maxsize=64)
def _plan_for(schema_text: str) -> _Plan:
    return _Plan(check_schema_depth(schema_text))


# The codecs of the Avro specification and fastavro, and the module fastavro decodes
# each with (None: the standard library's).
_CODEC_MODULES: dict[str, str | None] = {
    "null": None,
    "deflate": None,
    "bzip2": None,
    "xz": None,
    "snappy": "cramjam",
    "zstandard": "compression.zstd" if sys.version_info >= (3, 14) else "backports.zstd",
    "lz4": "lz4.block",
}


class _Unreadable(Exception):
    """A container read no further, for a reason that is not corruption."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _check_codec(codec: str) -> None:
    if codec not in _CODEC_MODULES:
        raise _Unreadable(UNSUPPORTED_CODEC, f"Avro container uses the codec {codec!r}, "
                          f"which is unknown (known: {', '.join(_CODEC_MODULES)})")
    module = _CODEC_MODULES[codec]
    if module is not None and not _installed(module):
        raise _Unreadable(UNSUPPORTED_CODEC, f"Avro container uses the codec {codec!r}, "
                          f"which needs the Python module {module}, not installed here")


@functools.cache
def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # its parent package is missing
        return False


def _bytes_from(fo: IO[bytes], start: int | None, offset: int) -> bytes:
    """Up to _MAX_CORRUPT_PAYLOAD bytes of `fo` from `offset` (relative to `start`)."""
    if start is None:
        return b""
    try:
        fo.seek(start + offset)
        data = fo.read(_MAX_CORRUPT_PAYLOAD)
    except Exception:
        return b""
    return bytes(data) if isinstance(data, bytes | bytearray) else b""


def _corrupt(
    source: str,
    fo: IO[bytes],
    start: int | None,
    record_number: int,
    offset: int,
    what: str,
) -> DeadLetter:
    """The one DeadLetter that ends a container; its payload is the file from `offset`."""
    payload = _bytes_from(fo, start, offset)
    return file_dead_letter(source, record_number, CORRUPT_CONTAINER,
                   f"Avro container is corrupt or truncated: stopped at record {record_number}, "
                   f"{what}, payload from byte offset {offset}{_capped(payload)}", payload)


def _bad_block(source: str, fo: IO[bytes], start: int | None, record_number: int,
               block: Any, exc: Exception) -> DeadLetter:
    """The DeadLetter of one damaged block, whose payload is the block's bytes in the file
    (empty when `fo` cannot seek); reading goes on after it."""
    what = ("it holds more records than it declares" if isinstance(exc, CountMismatch)
            else f"a record does not decode ({type(exc).__name__})")
    payload = b""
    if start is not None:
        try:
            here = fo.tell()
            fo.seek(start + block.offset)
            data = fo.read(min(block.size, _MAX_CORRUPT_PAYLOAD))
            fo.seek(here)
            payload = bytes(data) if isinstance(data, bytes | bytearray) else b""
        except Exception:
            payload = b""
    return file_dead_letter(source, record_number, CORRUPT_CONTAINER,
                   f"Avro container block is corrupt: at record {record_number}, {what}; "
                   f"its records from there on are skipped, reading goes on with the next "
                   f"block; payload the block (byte offset {block.offset}, {block.size} "
                   f"bytes){_capped(payload)}", payload)


def _capped(payload: bytes) -> str:
    if len(payload) >= _MAX_CORRUPT_PAYLOAD:
        return f"; payload holds the first {_MAX_CORRUPT_PAYLOAD} bytes from there"
    return ""


def _open_container(source: _Source) -> tuple[_Plan, Any]:
    """Read the header, rewrite its schema for speed, and open fastavro on the rest."""
    magic = source.read(4)
    if magic != _MAGIC:
        raise ValueError("not an Avro object container file (bad magic)")
    header = fastavro.schemaless_reader(source, _HEADER_REST)
    if not isinstance(header, dict):
        raise ValueError("bad header")
    meta = header["meta"]
    _check_codec(meta.get("avro.codec", b"null").decode("utf-8", "replace"))
    schema_text = meta["avro.schema"].decode("utf-8")
    try:
        plan = _plan_for(schema_text)
    except UnsafeSchema as exc:
        raise _Unreadable(SCHEMA_TOO_DEEP, f"Avro container's writer schema is refused: "
                          f"{exc}") from exc
    meta["avro.schema"] = json.dumps(plan.stripped).encode("utf-8")
    out = io.BytesIO()
    out.write(_MAGIC)
    fastavro.schemaless_writer(out, _HEADER_REST, header)
    source.replace_header(out.getvalue())
    blocks = fastavro.block_reader(source, return_record_name=True)
    _intern_field_names(blocks.writer_schema)
    return plan, blocks


def _block_items(block: Any, datums: Plan | None) -> Iterator[Any]:
    """The datums of a fastavro block (its decompressed bytes), decoded by `datums`, or by
    fastavro without a plan."""
    if datums is None:
        yield from block
        stream = block.bytes_
        if stream.tell() != len(stream.getbuffer()):
            raise CountMismatch
        return
    data = block.bytes_.getvalue()
    position = 0
    read_next = datums.read_next
    for _ in range(block.num_records):
        item, position = read_next(data, position)
        yield item
    # Records the count leaves out would be lost in silence: the block is corrupt.
    if position != len(data):
        raise CountMismatch


def _intern_field_names(schema: Any) -> None:
    """Intern the field names of the schema fastavro decodes with, in place.

    fastavro keys each record dict with these very strings; interned, they are the
    validator's own field-name strings, so its lookups match by identity instead of
    comparing strings (a million records, ten fields each).
    """
    if isinstance(schema, list):
        for item in schema:
            _intern_field_names(item)
    elif isinstance(schema, dict):
        for field in schema.get("fields") or ():
            if isinstance(field, dict) and isinstance(field.get("name"), str):
                field["name"] = sys.intern(field["name"])
                _intern_field_names(field.get("type"))
        for key in ("items", "values"):
            _intern_field_names(schema.get(key))


def _position(fo: IO[bytes]) -> int | None:
    try:
        return fo.tell()
    except Exception:
        return None


def _unreadable(source: str, fo: IO[bytes], start: int | None, exc: _Unreadable) -> DeadLetter:
    """The one DeadLetter of a container read no further; its payload is the file."""
    payload = _bytes_from(fo, start, 0)
    return file_dead_letter(source, 1, exc.code, f"{exc.reason}{_capped(payload)}",
                            payload)


class CountMismatch(ValueError):
    """A block whose bytes hold more records than its count declares (or whose count is
    negative): the records past the count would be lost in silence."""


def _check_block_size(block: Any) -> None:
    """Every event takes bytes: a block claiming more records than it has bytes is
    corrupt (and would otherwise yield dead letters for ever)."""
    data = getattr(block, "bytes_", None)
    if block.num_records < 0:
        raise CountMismatch
    if isinstance(data, io.BytesIO) and block.num_records > len(data.getbuffer()):
        raise ValueError("block declares more records than it has bytes")


def _open_or_dead_letter(reader_source: _Source, fo: IO[bytes], source: str, start: int | None
                         ) -> Any:
    """(plan, blocks) of the container, or the one DeadLetter that says why not."""
    try:
        return _open_container(reader_source)
    except _Unreadable as unreadable:  # (one name per type: mypyc types each name once)
        return _unreadable(source, fo, start, unreadable)
    except Exception as exc:
        return _corrupt(source, fo, start, 1, 0, f"bad header ({type(exc).__name__})")


def read_event_container(  # noqa: PLR0915 (one loop over the records, kept whole)
    fo: IO[bytes], source: str, limit: DeadLetterLimit | None = None,
    max_future_skew_ms: int | None = None,
) -> Iterator[tuple[int, Event | DeadLetter]]:
    """Yield `(record number, event or dead letter)` for each record of a container file.

    Record numbers count from 1. A record that decodes but is not a valid event
    yields a DeadLetter (position = its record number, payload = the record
    re-encoded with the writer's schema), unless `limit` does not admit it (then it
    is only counted there, by block: blocks count from 1). A block whose records do not
    decode (or do not fill it exactly) is one `corrupt_container` DeadLetter whose
    payload is that block, and reading goes on with the next block (record numbers
    count the block's declared records). A container whose block structure breaks (a
    bad sync marker, a truncation) ends with one `corrupt_container` DeadLetter whose
    payload holds the file's bytes from where reading stopped (empty when `fo` cannot
    seek); a container
    that cannot be read safely is one DeadLetter saying why (`unsupported_codec`,
    `schema_too_deep`), whose payload holds the file. With `max_future_skew_ms`, an
    event from the future (see `refuse_future`) is an invalid record. Never raises on
    bad input.
    """
    start = _position(fo)
    reader_source = _Source(fo)
    opened = _open_or_dead_letter(reader_source, fo, source, start)
    if type(opened) is DeadLetter:
        yield 1, opened
        return
    plan, blocks = opened

    by_name = plan.by_name
    fast = plan.fast
    single = plan.single
    validate = event_from_record
    number = 0
    block_number = 0
    stood = reader_source.consumed  # where the first block starts
    block_iter = iter(blocks)
    while True:
        try:
            block = next(block_iter)
        except StopIteration:
            return
        except Exception as exc:
            yield (
                number + 1,
                _corrupt(
                    source, fo, start, number + 1, stood, f"unreadable block ({type(exc).__name__})"
                ),
            )
            return
        stood = block.offset
        block_number += 1
        first = number  # the record number before the block's first
        # The block's records are received together: one reading of the clock for all.
        received_ms = time.time_ns() // 1_000_000
        try:
            _check_block_size(block)
            for item in _block_items(block, plan.datums):
                number += 1
                if type(item) is tuple:
                    name, record = item
                else:
                    name, record = single, item
                # An event record that needs no defaults (the common case): its validator,
                # found once per schema. fastavro decodes a record to a dict, so this is
                # what `event_from_record` would call after its checks.
                quick = fast.get(name)
                try:
                    if quick is not None:
                        event = (quick.validate_values(record) if type(record) is list
                                 else quick.validate(record))
                    else:
                        type_name, fill = by_name.get(name) or (name, None)
                        event = validate(record if fill is None else {**fill, **record},
                                         type_name)
                    if max_future_skew_ms is not None:
                        refuse_future(event.occurred_at, max_future_skew_ms, received_ms)
                except InvalidEvent as exc:
                    if limit is None or limit.admit(exc.code, block_number):
                        yield number, file_dead_letter(source, number, exc.code, exc.message,
                                                       plan.payload(name, item, record))
                    continue
                yield number, event
        except Exception as exc:
            # The block was read whole and ends at its sync marker, so the damage is its
            # own: it is one dead letter (its bytes) and reading goes on with the next.
            yield number + 1, _bad_block(source, fo, start, number + 1, block, exc)
            # The letter took number + 1; the next block's records come after both it
            # and every record the block declared.
            number = max(number + 1, first + block.num_records)
        stood = block.offset + block.size
