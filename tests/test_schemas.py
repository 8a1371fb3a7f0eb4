"""The Avro schemas in `schemas/`: true to the spec and the model, and backward compatible.

Every released version kept in `schemas/history/<Record>/vN.avsc` must stay readable
by the current schema: a sample datum written with the old schema is read with the
current one (apache avro schema resolution, and fastavro's), and apache avro's
compatibility checker agrees. A self-test shows the check catches a breaking change.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
from collections import Counter
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import avro.errors
import avro.io
import avro.schema
import fastavro
import pytest

from streams.model.events import EVENT_TYPES
from streams.model.findings import Amendment, DeadLetter, Finding
from streams.serde.avro import (
    EVENT_SCHEMA_NAMES,
    NAMESPACE,
    SCHEMA_DIR,
    SCHEMA_NAMES,
    load_schema,
    schema_history,
)

try:
    from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
except ImportError:  # older apache avro: the datum round trip still checks resolution
    ReaderWriterCompatibilityChecker = None
    SchemaCompatibilityType = None

MODEL: dict[str, type[Any]] = {
    **EVENT_TYPES,
    "Finding": Finding,
    "Amendment": Amendment,
    "DeadLetter": DeadLetter,
}

# Enum name -> (record, field, symbols). The first three are the spec's.
ENUMS: dict[str, tuple[str, str, list[str]]] = {
    "Trigger": ("EnrichmentRequested", "trigger", ["USER_ACTION", "AUTOMATIC"]),
    "ConsentStatus": ("ConsentChanged", "status", ["GRANTED", "WITHDRAWN"]),
    "NoticeKind": ("NoticeDelivered", "notice_kind", ["ENRICHMENT", "PROFILE_VIEW"]),
    "Severity": ("Finding", "severity", ["CRITICAL", "HIGH", "MEDIUM", "LOW"]),
    "AmendmentKind": ("Amendment", "kind", ["RETRACTED", "EVIDENCE_CHANGED", "WOULD_RAISE"]),
}

TIMESTAMP = {"type": "long", "logicalType": "timestamp-millis"}
SPEC = (
    Path(os.environ.get("CONSENTWATCH_SPEC_DIR", SCHEMA_DIR.parent.parent / "shared" / "spec"))
    / "events.md"
)


# ----------------------------------------------------------------------------- files


def test_schema_files_are_exactly_the_known_records() -> None:
    on_disk = sorted(path.stem for path in SCHEMA_DIR.glob("*.avsc"))
    assert on_disk == sorted(SCHEMA_NAMES)
    assert sorted(path.name for path in (SCHEMA_DIR / "history").iterdir()) == sorted(SCHEMA_NAMES)
    assert (SCHEMA_DIR / "README.md").is_file()


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_a_documented_record_of_the_namespace(name: str) -> None:
    schema = load_schema(name)
    assert schema["type"] == "record"
    assert schema["name"] == name
    assert schema["namespace"] == NAMESPACE
    assert schema.get("doc")
    for field in schema["fields"]:
        assert field.get("doc"), f"{name}.{field['name']} has no doc"
    # Standalone-parseable by both libraries.
    fastavro.parse_schema(schema)
    avro.schema.parse(json.dumps(schema))


def _named_types(schema: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(schema, list):
        for item in schema:
            found += _named_types(item)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed"):
            found.append(schema)
        for key in ("fields", "type", "items", "values"):
            if key in schema:
                found += _named_types(schema[key])
    return found


def test_every_enum_is_defined_once_in_the_namespace() -> None:
    enums: list[dict[str, Any]] = []
    for name in SCHEMA_NAMES:
        enums += [t for t in _named_types(load_schema(name)) if t["type"] == "enum"]
    assert Counter(e["name"] for e in enums) == Counter(list(ENUMS))
    for enum in enums:
        assert enum["namespace"] == NAMESPACE
        record, field, symbols = ENUMS[enum["name"]]
        assert enum["symbols"] == symbols
        types = {f["name"]: f["type"] for f in load_schema(record)["fields"]}
        assert types[field] == enum, f"{enum['name']} belongs to {record}.{field}"


# ----------------------------------------------------------------------------- model


# One evidence event of a Finding or an Amendment (streams.evidence.pseudonymise): the
# event's type, id and time, then its other fields by name with their JSON values.
EVIDENCE_EVENT = {
    "type": "record",
    "name": "EvidenceEvent",
    "namespace": NAMESPACE,
    "fields": [
        {"name": "type", "type": "string"},
        {"name": "event_id", "type": "string"},
        {"name": "occurred_at", "type": TIMESTAMP},
        {"name": "fields", "type": {"type": "map", "values": [
            "null", "boolean", "long", "string", {"type": "array", "items": "string"}]}},
    ],
}


def _without_docs(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_without_docs(item) for item in schema]
    if isinstance(schema, dict):
        return {key: _without_docs(value) for key, value in schema.items() if key != "doc"}
    return schema


def _expected_type(name: str, annotation: str) -> Any:
    """The Avro type a dataclass field must have, from its annotation."""
    if annotation == "tuple[EvidenceItem, ...]":
        return {"type": "array", "items": EVIDENCE_EVENT}
    if annotation == "EvidenceItem | None":  # after `evidence`, which defines the record
        return ["null", "EvidenceEvent"]
    if annotation.endswith(" | None"):
        return ["null", _expected_type(name, annotation.removesuffix(" | None"))]
    if annotation == "tuple[str, ...]":
        return {"type": "array", "items": "string"}
    if annotation == "int":
        if name.endswith("_at"):
            return TIMESTAMP
        return {"partition": "int"}.get(name, "long")
    return {"str": "string", "bool": "boolean", "bytes": "bytes"}[annotation]


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_fields_match_the_dataclass(name: str) -> None:
    schema_fields = load_schema(name)["fields"]
    model_fields = fields(MODEL[name])
    assert [f["name"] for f in schema_fields] == [f.name for f in model_fields]
    first_release = {f["name"] for f in schema_history(name)[0][1]["fields"]}
    enum_fields = {(record, field) for record, field, _ in ENUMS.values()}
    for avro_field, model_field in zip(schema_fields, model_fields, strict=True):
        where = f"{name}.{model_field.name}"
        actual = avro_field["type"]
        if (name, model_field.name) in enum_fields:
            assert model_field.type == "str", where
            assert isinstance(actual, dict), where
            assert actual["type"] == "enum", where
            continue
        assert _without_docs(actual) == _expected_type(model_field.name,
                                                       str(model_field.type)), where
        if isinstance(actual, list):
            assert actual[0] == "null", f"{where}: null must come first"
            assert "default" in avro_field, where
            assert avro_field["default"] is None, where
        elif model_field.name in first_release:
            assert "default" not in avro_field, f"{where}: only optional fields have defaults"
        else:
            # Added after the first release (an array): old data reads as empty.
            assert avro_field.get("default") == [], f"{where}: a later field needs a default"


def _spec_events() -> dict[str, list[tuple[str, str]]]:
    """Per event of the spec: [(field, its parenthetical note)], in the spec's order."""
    text = SPEC.read_text(encoding="utf-8")
    section = text.split("## Events", 1)[1].split("\n## ", 1)[0]
    events: dict[str, list[tuple[str, str]]] = {}
    for paragraph in section.split("\n\n"):
        head = re.match(r"\*\*(\w+)\*\*:", paragraph.strip())
        if head is None:
            continue
        body = paragraph.strip()[head.end() :].split("\n", 1)[1]
        found: list[tuple[str, str]] = []
        for match in re.finditer(r"\(([^()]*)\)|`([a-z_]+)`", body):
            if match.group(2):
                found.append((match.group(2), ""))
            elif found and not found[-1][1]:
                found[-1] = (found[-1][0], match.group(1))
        events[head.group(1)] = found
    return events


def test_events_match_the_spec() -> None:
    spec = _spec_events()
    assert list(spec) == list(EVENT_SCHEMA_NAMES)
    for name, spec_fields in spec.items():
        schema_fields = load_schema(name)["fields"]
        assert [field for field, _ in spec_fields] == [f["name"] for f in schema_fields], name
        for (field, note), avro_field in zip(spec_fields, schema_fields, strict=True):
            optional = note.startswith("optional")
            assert optional == isinstance(avro_field["type"], list), f"{name}.{field}"
            if "timestamp-millis" in note or field == "occurred_at":
                assert TIMESTAMP in (avro_field["type"], *avro_field["type"]), f"{name}.{field}"
            if note.startswith("enum"):
                symbols = re.findall(r"`([A-Z_]+)`", note)
                assert avro_field["type"]["symbols"] == symbols, f"{name}.{field}"
            if note.startswith("array"):
                assert avro_field["type"] == {"type": "array", "items": "string"}


# ----------------------------------------------------------------------------- history


_T0 = datetime(2023, 11, 14, 22, 13, 20, 123_000, tzinfo=UTC)


def _sample(schema: Any, filled: bool, named: dict[str, Any]) -> Any:
    """A datum of `schema` for apache avro; `filled` picks non-null union branches."""
    if isinstance(schema, str):
        if schema in named:
            return _sample(named[schema], filled, named)
        return {
            "null": None,
            "string": "user.name",
            "long": 7,
            "int": 3,
            "boolean": True,
            "bytes": b"\x00\xff",
            "double": 1.5,
            "float": 0.5,
        }[schema]
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"] if filled else schema
        return _sample(branches[0], filled, named)
    if schema.get("logicalType") == "timestamp-millis":
        return _T0 + timedelta(days=365) if filled else _T0
    kind = schema["type"]
    if kind == "record":
        named[schema["name"]] = schema
        return {f["name"]: _sample(f["type"], filled, named) for f in schema["fields"]}
    if kind == "enum":
        named[schema["name"]] = schema
        return schema["symbols"][-1 if filled else 0]
    if kind == "array":
        return [_sample(schema["items"], filled, named)] if filled else []
    if kind == "map":
        return {"k": _sample(schema["values"], filled, named)} if filled else {}
    return _sample(kind, filled, named)


def _avro_round_trip(writer_json: dict[str, Any], reader_json: dict[str, Any], datum: Any) -> Any:
    writer = avro.schema.parse(json.dumps(writer_json))
    reader = avro.schema.parse(json.dumps(reader_json))
    buffer = io.BytesIO()
    avro.io.DatumWriter(writer).write(datum, avro.io.BinaryEncoder(buffer))
    buffer.seek(0)
    return avro.io.DatumReader(writer, reader).read(avro.io.BinaryDecoder(buffer))


def _fastavro_round_trip(
    writer_json: dict[str, Any], reader_json: dict[str, Any], datum: Any
) -> Any:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(writer_json), datum)
    buffer.seek(0)
    return fastavro.schemaless_reader(
        buffer, fastavro.parse_schema(writer_json), fastavro.parse_schema(reader_json)
    )


def assert_backward_compatible(reader_json: dict[str, Any], writer_json: dict[str, Any]) -> None:
    """Data written with `writer_json` (a released version) reads with `reader_json`."""
    if ReaderWriterCompatibilityChecker is not None:
        result = ReaderWriterCompatibilityChecker().get_compatibility(
            avro.schema.parse(json.dumps(reader_json)),
            avro.schema.parse(json.dumps(writer_json)),
        )
        assert result.compatibility is SchemaCompatibilityType.compatible, (
            f"incompatible: {sorted(result.messages)} at {sorted(result.locations)}"
        )
    reader_fields = {f["name"]: f for f in reader_json["fields"]}
    for filled in (False, True):
        datum = _sample(writer_json, filled, {})
        for round_trip in (_avro_round_trip, _fastavro_round_trip):
            try:
                read = round_trip(writer_json, reader_json, datum)
            except Exception as exc:
                raise AssertionError(
                    f"{round_trip.__name__}: cannot read {writer_json['name']}: {exc!r}"
                ) from exc
            assert set(read) == set(reader_fields)
            for name, field in reader_fields.items():
                if name in datum:
                    assert read[name] == datum[name], name
                else:
                    assert "default" in field, name


def _history_cases() -> list[tuple[str, int]]:
    return [(name, version) for name in SCHEMA_NAMES for version, _ in schema_history(name)]


@pytest.mark.parametrize(("name", "version"), _history_cases())
def test_current_schema_reads_every_released_version(name: str, version: int) -> None:
    released = dict(schema_history(name))[version]
    assert_backward_compatible(load_schema(name), released)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_schema_has_a_released_version(name: str) -> None:
    versions = [version for version, _ in schema_history(name)]
    assert versions, f"copy {name}.avsc to schemas/history/{name}/v1.avsc"
    assert versions == list(range(1, len(versions) + 1))


def test_a_compatible_change_passes_the_check() -> None:
    current = load_schema("ConsentChanged")
    evolved = copy.deepcopy(current)
    evolved["fields"].append(
        {"name": "region", "type": ["null", "string"], "default": None, "doc": "new, optional"}
    )
    evolved["fields"].append({"name": "tier", "type": "string", "default": "free", "doc": "new"})
    assert_backward_compatible(evolved, current)


def _breaking_changes() -> list[Any]:
    base = load_schema("ConsentChanged")
    new_required = copy.deepcopy(base)
    new_required["fields"].append({"name": "region", "type": "string", "doc": "no default"})
    retyped = copy.deepcopy(base)
    retyped["fields"][3]["type"] = "long"  # consent_record_id: string -> long
    fewer_symbols = copy.deepcopy(base)
    status = next(f for f in fewer_symbols["fields"] if f["name"] == "status")
    status["type"]["symbols"] = ["GRANTED"]
    renamed = copy.deepcopy(base)
    renamed["name"] = "ConsentUpdated"
    return [
        pytest.param(new_required, id="new field without default"),
        pytest.param(retyped, id="field type changed"),
        pytest.param(fewer_symbols, id="enum symbol removed"),
        pytest.param(renamed, id="record renamed"),
    ]


@pytest.mark.parametrize("reader", _breaking_changes())
def test_the_check_catches_a_breaking_change(reader: dict[str, Any]) -> None:
    released = dict(schema_history("ConsentChanged"))[1]
    with pytest.raises(AssertionError):
        assert_backward_compatible(reader, released)


def test_compatibility_checker_is_available() -> None:
    # The installed apache avro (>= 1.11) has it; if this fails the check above only
    # relies on datum round trips.
    assert ReaderWriterCompatibilityChecker is not None


def test_the_datum_round_trip_alone_catches_a_new_required_field() -> None:
    # Independent of the compatibility checker: resolution itself fails.
    released = dict(schema_history("ConsentChanged"))[1]
    reader = copy.deepcopy(released)
    reader["fields"].append({"name": "region", "type": "string", "doc": "no default"})
    datum = _sample(released, True, {})
    with pytest.raises(avro.errors.AvroException):
        _avro_round_trip(released, reader, datum)
    with pytest.raises(Exception, match="region"):
        _fastavro_round_trip(released, reader, datum)
