"""The event contract as the Avro schemas in `schemas/` state it, read once.

Each event's fields, in order, with what the validator checks and what evidence
pseudonymises, come from its schema: the Avro type (string, boolean, long with
logicalType timestamp-millis, enum, array of strings), a null union for an optional
field, the default, and two attributes of our own on a field (Avro keeps attributes it
does not define as metadata; neither changes the schema's canonical form):

- `"format"`: what a string (or each string of an array) must be beyond a string:
  `"id"` a non-empty string, `"taxonomy-key"` a dotted key such as
  user.contact.email, `"provider"` a provider key without spaces;
- `"pseudonymised": true`: personal data a regulator does not need, shown
  pseudonymised in the evidence of findings (`streams.evidence.pseudonymise`).

The event types are the dataclasses of `streams.model.events`; a test
(`tests/test_contract.py`) checks those against the schemas.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import streams
from streams.errors import SchemaError
from streams.model.events import EVENT_TYPES

__all__ = [
    "EVENT_FIELDS",
    "FORMATS",
    "KINDS",
    "PSEUDONYMISED_FIELDS",
    "SCHEMA_DIR",
    "FieldContract",
    "event_fields",
]


def _schema_dir() -> Path:
    package = Path(streams.__file__).resolve().parent
    installed = package / "_schemas"  # a wheel: pyproject's force-include
    if installed.is_dir():
        return installed
    return package.parent / "schemas"  # the source tree (an editable install)


SCHEMA_DIR: Final[Path] = _schema_dir()
# The field kinds the validator has a check for, and the formats of a string.
KINDS: Final = ("string", "boolean", "long", "timestamp", "enum", "array")
FORMATS: Final = ("", "id", "taxonomy-key", "provider")
_NO_DEFAULT: Final[Any] = object()


@dataclass(frozen=True, slots=True)
class FieldContract:
    """One field of an event, as its schema states it.

    `kind` is one of KINDS ("timestamp": a long of logicalType timestamp-millis,
    epoch milliseconds; "array": an array of strings); `format` one of FORMATS, for a
    string or the strings of an array; `symbols` those of an enum; `has_default`
    and `default` the schema's default (a null union's is None).
    """

    name: str
    kind: str
    optional: bool
    format: str = ""
    symbols: tuple[str, ...] = ()
    has_default: bool = False
    default: Any = None
    pseudonymised: bool = False


def _field(record: str, field: Mapping[str, Any]) -> FieldContract:
    name = field.get("name")
    where = f"{record}.{name}"
    kind: Any = field.get("type")
    optional = False
    if isinstance(kind, list):
        if len(kind) != 2 or kind[0] != "null":
            raise SchemaError(f"{where}: a union must be [\"null\", T]")
        optional, kind = True, kind[1]
    symbols: tuple[str, ...] = ()
    if isinstance(kind, dict):
        if kind.get("type") == "long" and kind.get("logicalType") == "timestamp-millis":
            kind = "timestamp"
        elif kind.get("type") == "enum":
            symbols = tuple(kind.get("symbols", ()))
            kind = "enum"
        elif kind.get("type") == "array" and kind.get("items") == "string":
            kind = "array"
        else:
            kind = kind.get("type")
    if kind not in KINDS:
        raise SchemaError(f"{where}: the validator has no check for the type {kind!r}")
    text_format = field.get("format", "")
    if text_format not in FORMATS or (text_format and kind not in ("string", "array")):
        raise SchemaError(f"{where}: unknown format {text_format!r} for a {kind}")
    pseudonymised = field.get("pseudonymised", False)
    if type(pseudonymised) is not bool or (pseudonymised and kind != "string"):
        raise SchemaError(f"{where}: only a string can be pseudonymised (true or false)")
    default = field.get("default", _NO_DEFAULT)
    return FieldContract(
        name=str(name), kind=kind, optional=optional, format=text_format, symbols=symbols,
        has_default=default is not _NO_DEFAULT,
        default=None if default is _NO_DEFAULT else default, pseudonymised=pseudonymised,
    )


def event_fields(schema: Mapping[str, Any]) -> tuple[FieldContract, ...]:
    """The fields of the event record `schema` (its parsed JSON), in order."""
    record = str(schema.get("name"))
    fields = schema.get("fields")
    if schema.get("type") != "record" or not isinstance(fields, list):
        raise SchemaError(f"schema {record} is not a record with fields")
    return tuple(_field(record, field) for field in fields)


def _read(name: str) -> Mapping[str, Any]:
    path = SCHEMA_DIR / f"{name}.avsc"
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SchemaError(f"cannot read schema file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise SchemaError(f"schema file {path} is not valid JSON: {exc}") from exc
    if not isinstance(schema, dict):
        raise SchemaError(f"schema {name} is not a JSON object")
    return schema


# Per event type, in the order of EVENT_TYPES: its fields as its schema states them.
EVENT_FIELDS: Final[dict[str, tuple[FieldContract, ...]]] = {
    name: event_fields(_read(name)) for name in EVENT_TYPES
}
# Per event type: the fields evidence shows pseudonymised (when not null).
PSEUDONYMISED_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    name: tuple(field.name for field in fields if field.pseudonymised)
    for name, fields in EVENT_FIELDS.items()
}
