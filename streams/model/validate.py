"""Turn a decoded record (JSON object or Avro datum) into an event, or say why not.

One validator serves every input (JSON Lines, Avro files, Kafka), so a record is
judged the same way wherever it comes from. Messages never echo field values:
they may be personal data and end up in logs.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import fields as dataclass_fields
from datetime import datetime
from typing import Any, Final

from streams.errors import InvalidEvent, SchemaError
from streams.model.contract import EVENT_FIELDS, FieldContract
from streams.model.events import EVENT_TYPES, Event, fast_constructor
from streams.model.timestamps import MAX_MS, MIN_MS, ms_from_datetime, parse_rfc3339_ms

__all__ = ["MAX_ID_CHARS", "MAX_ITEMS", "MAX_KEY_CHARS", "MAX_TEXT_CHARS", "BadValue",
           "Validator", "event_from_record", "refuse_future", "string_array", "validator_for"]

# How large a field may be. The contract sets no size, but each event is copied into
# the findings that cite it, the state of its subject and a Kafka record of its own, and
# a Kafka record has a size limit: a value past these is an invalid_field like any other
# (generous: ids are a few dozen characters, names and emails a few hundred).
# Final: the compiled build reads these as constants, not from the module's dict.
MAX_ID_CHARS: Final = 512
MAX_TEXT_CHARS: Final = 4096
MAX_KEY_CHARS: Final = 256  # taxonomy keys and providers
MAX_ITEMS: Final = 256  # arrays (data categories)

_TAXONOMY_KEY = re.compile(r"[^\s.]+(?:\.[^\s.]+)*")
_NO_SPACE = re.compile(r"\S+")

Check = Callable[[Any], Any]


class BadValue(Exception):
    """A field value is of the wrong kind; `reason` says which, without the value.

    Raised by the checks of a field (here, and in `streams.serde.avro` for findings,
    amendments and dead letters); the caller turns it into InvalidEvent naming the
    record and the field.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _id(value: Any) -> str:
    if type(value) is not str or not value:
        raise BadValue("must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise BadValue(f"is longer than {MAX_ID_CHARS} characters")
    return value


# Taxonomy keys, providers and category lists take few distinct values: each is
# checked once and shared (which also keeps a million stored events small).
_KNOWN_MAX = 65_536
_KNOWN_KEYS: dict[str, str] = {}
_KNOWN_PROVIDERS: dict[str, str] = {}
_KNOWN_CATEGORIES: dict[tuple[str, ...], tuple[str, ...]] = {}


def _remember(known: dict[Any, Any], value: Any, canonical: Any) -> Any:
    if len(known) >= _KNOWN_MAX:
        known.clear()
    known[value] = canonical
    return canonical


def _text(value: Any) -> str:
    if type(value) is not str:
        raise BadValue("must be a string")
    if len(value) > MAX_TEXT_CHARS:
        raise BadValue(f"is longer than {MAX_TEXT_CHARS} characters")
    return value


def _key(value: Any) -> str:
    if type(value) is not str:
        raise BadValue("must be a dotted taxonomy key such as user.contact.email")
    known = _KNOWN_KEYS.get(value)
    if known is not None:
        return known
    if not _TAXONOMY_KEY.fullmatch(value):
        raise BadValue("must be a dotted taxonomy key such as user.contact.email")
    if len(value) > MAX_KEY_CHARS:
        raise BadValue(f"is longer than {MAX_KEY_CHARS} characters")
    return _remember(_KNOWN_KEYS, value, sys.intern(value))  # type: ignore[no-any-return]


def _provider(value: Any) -> str:
    if type(value) is not str:
        raise BadValue("must be a provider key without spaces")
    known = _KNOWN_PROVIDERS.get(value)
    if known is not None:
        return known
    if not _NO_SPACE.fullmatch(value):
        raise BadValue("must be a provider key without spaces")
    if len(value) > MAX_KEY_CHARS:
        raise BadValue(f"is longer than {MAX_KEY_CHARS} characters")
    return _remember(_KNOWN_PROVIDERS, value,  # type: ignore[no-any-return]
                     sys.intern(value))


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise BadValue("must be a boolean")
    return value


_MIN_LONG, _MAX_LONG = -(1 << 63), (1 << 63) - 1


def _long(value: Any) -> int:
    if type(value) is not int or not _MIN_LONG <= value <= _MAX_LONG:
        raise BadValue("must be a 64-bit integer")
    return value


def _timestamp(value: Any) -> int:
    kind = type(value)
    if kind is int:
        ms: int = value
    elif kind is str:
        try:
            ms = parse_rfc3339_ms(value)
        except ValueError:
            raise BadValue(
                "must be epoch milliseconds or an RFC 3339 time with an offset") from None
    elif isinstance(value, datetime) and value.tzinfo is not None:
        ms = ms_from_datetime(value)
    else:
        raise BadValue("must be epoch milliseconds or an RFC 3339 time with an offset")
    if not MIN_MS <= ms <= MAX_MS:
        raise BadValue("is outside the years 1 to 9999")
    return ms


def _categories(value: Any) -> tuple[str, ...]:
    if type(value) is not list and type(value) is not tuple:
        raise BadValue("must be an array of taxonomy keys")
    for item in value:
        if type(item) is not str:
            raise BadValue("must be an array of dotted taxonomy keys")
    as_tuple = tuple(value)
    known = _KNOWN_CATEGORIES.get(as_tuple)
    if known is not None:
        return known
    if len(as_tuple) > MAX_ITEMS:
        raise BadValue(f"holds more than {MAX_ITEMS} items")
    for item in as_tuple:
        if not _TAXONOMY_KEY.fullmatch(item):
            raise BadValue("must be an array of dotted taxonomy keys")
        if len(item) > MAX_KEY_CHARS:
            raise BadValue(f"holds a key longer than {MAX_KEY_CHARS} characters")
    return _remember(_KNOWN_CATEGORIES, as_tuple,  # type: ignore[no-any-return]
                     tuple(sys.intern(item) for item in as_tuple))


def string_array(value: Any) -> tuple[str, ...]:
    """An Avro array of strings (a list, or a tuple already), as a tuple."""
    if type(value) is not list and type(value) is not tuple:
        raise BadValue("must be an array of strings")
    if len(value) > MAX_ITEMS:
        raise BadValue(f"holds more than {MAX_ITEMS} items")
    for item in value:
        if type(item) is not str:
            raise BadValue("must be an array of strings")
        if len(item) > MAX_TEXT_CHARS:
            raise BadValue(f"holds a string longer than {MAX_TEXT_CHARS} characters")
    return tuple(value)


class _Enum:
    """An enum field's check: one of `symbols`, returned as the canonical string."""

    def __init__(self, *symbols: str) -> None:
        self.canonical = {symbol: symbol for symbol in symbols}
        self.message = "must be one of " + ", ".join(symbols)

    def __call__(self, value: Any) -> str:
        if type(value) is not str or value not in self.canonical:
            raise BadValue(self.message)
        return self.canonical[value]


_FORMAT_CHECKS: dict[tuple[str, str], Check] = {
    ("string", ""): _text,
    ("string", "id"): _id,
    ("string", "taxonomy-key"): _key,
    ("string", "provider"): _provider,
    ("array", ""): string_array,
    ("array", "taxonomy-key"): _categories,
    ("boolean", ""): _bool,
    ("long", ""): _long,
    ("timestamp", ""): _timestamp,
}


def _check_of(field: FieldContract) -> Check:
    """The check of a field, from what its schema says (streams.model.contract)."""
    if field.kind == "enum":
        return _Enum(*field.symbols)
    check = _FORMAT_CHECKS.get((field.kind, field.format))
    if check is None:
        raise SchemaError(f"field {field.name}: no check for a {field.kind} of format "
                          f"{field.format!r}")
    return check


# A field the record does not have (as opposed to one it has as null).
_ABSENT: Final = object()

# How a field is checked on the common path; anything else goes to its Check.
_ANY: Final = 0
_ID: Final = 1
_TIMESTAMP: Final = 2
_TEXT: Final = 3
_BOOL: Final = 4
_ENUM: Final = 5
_KINDS: dict[Any, int] = {_id: _ID, _timestamp: _TIMESTAMP, _text: _TEXT, _bool: _BOOL}


class _Field:
    __slots__ = ("check", "default", "has_default", "invalid", "kind", "missing", "name",
                 "optional", "symbols")

    def __init__(self, type_name: str, contract: FieldContract) -> None:
        name = contract.name
        check = _check_of(contract)
        self.name = name
        self.check = check
        self.optional = contract.optional
        self.kind = _ENUM if isinstance(check, _Enum) else _KINDS.get(check, _ANY)
        self.symbols: dict[str, str] = check.canonical if isinstance(check, _Enum) else {}
        where = f"{type_name}: field '{name}'"
        self.missing = where + " is missing or null"
        self.invalid = where + " "
        # A required field with a default (one added to the schema later): records
        # without it take the default, as Avro's schema resolution would.
        self.has_default = contract.has_default and not contract.optional
        self.default: Any = None
        if self.has_default:
            try:
                self.default = check(contract.default)
            except BadValue as bad:
                raise SchemaError(f"{where}: the default {bad.reason}") from None


class Validator:
    """The validator of one event type, from its schema's fields (streams.model.contract).

    Its checks are those of each field's Check; the usual cases (a non-empty id, a
    timestamp in range, a known symbol) are decided here without calling it.
    Compiled with the engine (streams.native), for it runs once per record of every
    input. `contract`: the fields to check, by default those of the schema in
    `schemas/`; they must be the dataclass's, in its order (the event is built from
    their values by position).
    """

    def __init__(self, type_name: str,
                 contract: tuple[FieldContract, ...] | None = None) -> None:
        if contract is None:
            contract = EVENT_FIELDS[type_name]
        cls = EVENT_TYPES[type_name]
        expected = [field.name for field in dataclass_fields(cls)]
        if [field.name for field in contract] != expected:
            raise SchemaError(
                f"{type_name}: the schema's fields {[field.name for field in contract]} are "
                f"not those of the dataclass {cls.__module__}.{cls.__name__} {expected}")
        self.fields = [_Field(type_name, field) for field in contract]
        # The field names in the dataclass's order: a reader that has the values in this
        # order (an Avro record of the current schema) calls `validate_values`.
        self.names = [field.name for field in self.fields]
        # Builds the event like the dataclass's own constructor, only faster.
        self.make: Callable[..., Event] = fast_constructor(cls)

    def validate(self, record: Mapping[str, Any]) -> Event:
        """The event `record` describes; InvalidEvent says why not."""
        fields: dict[str, Any] = record if type(record) is dict else dict(record)
        return self.validate_values([fields.get(name, _ABSENT) for name in self.names])

    def validate_values(self, values: list[Any]) -> Event:
        """The event whose field values, in the order of `names`, are `values` (taken,
        and changed in place); a field the record does not have is `_ABSENT`."""
        fields = self.fields
        for n in range(len(fields)):
            field = fields[n]
            value = values[n]
            if value is None or value is _ABSENT:
                if field.optional:
                    values[n] = None
                    continue
                if field.has_default and value is _ABSENT:
                    values[n] = field.default
                    continue
                raise InvalidEvent("missing_field", field.missing)
            kind = field.kind
            if kind == _ID:
                ok = type(value) is str and 0 < len(value) <= MAX_ID_CHARS
            elif kind == _TIMESTAMP:
                ok = type(value) is int and MIN_MS <= value <= MAX_MS
            elif kind == _TEXT:
                ok = type(value) is str and len(value) <= MAX_TEXT_CHARS
            elif kind == _BOOL:
                ok = type(value) is bool
            elif kind == _ENUM:
                canonical = field.symbols.get(value) if type(value) is str else None
                ok = canonical is not None
                if ok:
                    values[n] = canonical
            else:
                ok = False
            if not ok:
                try:
                    values[n] = field.check(value)
                except BadValue as bad:
                    raise InvalidEvent("invalid_field", field.invalid + bad.reason) from None
        return self.make(*values)


_VALIDATORS = {name: Validator(name) for name in EVENT_TYPES}


def validator_for(type_name: str) -> Validator | None:
    """The validator `event_from_record` uses for records of `type_name`, or None.

    For a reader that already knows the type of a run of records and that they are
    mappings (fastavro's decoded records): the same checks, without looking the
    validator up again for each record.
    """
    return _VALIDATORS.get(type_name)


def event_from_record(record: Any, type_name: str | None = None) -> Event:
    """Build the event that `record` describes.

    `type_name` is the record name when the container already says it (Avro);
    otherwise the record's own `type` field names it (JSON Lines form).
    Raises InvalidEvent with a bounded `code` and a message safe to log.
    """
    if not isinstance(record, Mapping):
        raise InvalidEvent("not_an_object", "record is not an object")
    # `named` is typed object: a record's "type" may be anything (a list, a number), and
    # the compiled build checks every assignment to a `str | None` variable.
    named: object = type_name
    if named is None:
        named = record.get("type")
        if named is None:
            raise InvalidEvent("missing_type", "record has no 'type' field")
    validate = _VALIDATORS.get(named) if type(named) is str else None
    if validate is None:
        raise InvalidEvent("unknown_type", "'type' is not an event of the contract")
    return validate.validate(record)


def refuse_future(occurred_at: int, max_future_skew_ms: int, received_ms: int | None = None
                  ) -> None:
    """Raise InvalidEvent (`future_timestamp`) for an event whose time is later than its
    reception (`received_ms`, default: the wall clock now) plus the skew: it cannot be
    true, and would drag the watermark ahead (spec: "Time from the future")."""
    if received_ms is None:
        received_ms = time.time_ns() // 1_000_000
    if occurred_at > received_ms + max_future_skew_ms:
        raise InvalidEvent("future_timestamp", "occurred_at is more than "
                           f"{max_future_skew_ms / 1000:g} s after the record was received")
