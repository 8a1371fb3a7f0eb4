"""One contract: the event schemas in `schemas/` state it, the rest follows or is checked.

The validator's checks and the pseudonymised fields are derived from the schemas
(`streams.model.contract`); the dataclasses of `streams.model.events` are written by
hand and checked here against the schemas: field names and order, types, optionality,
enum symbols, logical types and defaults. Each check is shown to catch a drift.
"""

from __future__ import annotations

import copy
import inspect
import re
from dataclasses import MISSING, field, fields, make_dataclass
from pathlib import Path
from typing import Any

import pytest

import streams
from streams.errors import InvalidEvent, SchemaError
from streams.model import contract
from streams.model.contract import EVENT_FIELDS, PSEUDONYMISED_FIELDS, FieldContract, event_fields
from streams.model.events import EVENT_TYPES
from streams.model.validate import Validator, event_from_record
from streams.privacy.pseudonymise import HASHED_FIELDS, Pseudonymiser
from streams.serde.avro import load_schema

# -------------------------------------------------------------------- the dataclasses

_ANNOTATIONS = {"string": "str", "enum": "str", "boolean": "bool", "long": "int",
                "timestamp": "int", "array": "tuple[str, ...]"}
# An enum field of a dataclass says its symbols in a comment: `status: str  # "A" | "B"`.
_ENUM_COMMENT = re.compile(r"^\s+(\w+): str  # (.*)$")


def _enum_comments(cls: type[Any]) -> dict[str, tuple[str, ...]]:
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # a class made at run time (the self-tests below)
        return getattr(cls, "ENUM_COMMENTS", {})
    found: dict[str, tuple[str, ...]] = {}
    for line in source.splitlines():
        match = _ENUM_COMMENT.match(line)
        if match:
            found[match.group(1)] = tuple(re.findall(r'"([A-Z_]+)"', match.group(2)))
    return found


def drift(schema: tuple[FieldContract, ...], cls: type[Any]) -> list[str]:
    """How the dataclass `cls` differs from the event its schema describes (empty: none)."""
    problems: list[str] = []
    names = [f.name for f in schema]
    model = fields(cls)
    if names != [f.name for f in model]:
        problems.append(f"fields: schema {names}, dataclass {[f.name for f in model]}")
    comments = _enum_comments(cls)
    by_name = {f.name: f for f in model}
    for avro in schema:
        mine = by_name.get(avro.name)
        if mine is None:
            continue
        where = f"{cls.__name__}.{avro.name}"
        expected = _ANNOTATIONS[avro.kind] + (" | None" if avro.optional else "")
        if str(mine.type) != expected:
            problems.append(f"{where}: annotated {mine.type}, the schema says {expected}")
        if avro.kind == "enum" and comments.get(avro.name) != avro.symbols:
            problems.append(f"{where}: symbols {comments.get(avro.name)} in the dataclass, "
                            f"{avro.symbols} in the schema")
        if mine.default is not MISSING or mine.default_factory is not MISSING:
            problems.append(f"{where}: a default in the dataclass (the schema's default "
                            "is the validator's to apply)")
        if avro.optional and not (avro.has_default and avro.default is None):
            problems.append(f"{where}: optional without a null default")
    return problems


@pytest.mark.parametrize("name", list(EVENT_TYPES))
def test_the_dataclass_matches_the_schema(name: str) -> None:
    assert drift(EVENT_FIELDS[name], EVENT_TYPES[name]) == []


def _schema_with(name: str, change: Any) -> tuple[FieldContract, ...]:
    schema = copy.deepcopy(load_schema(name))
    change(schema["fields"])
    return event_fields(schema)


def _field_named(fields_: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(f for f in fields_ if f["name"] == name)


_DRIFTS = {
    "field added to the schema only": lambda f: f.append(
        {"name": "region", "type": ["null", "string"], "default": None, "doc": "new"}),
    "field removed from the schema only": lambda f: f.pop(),
    "fields reordered": lambda f: f.insert(2, f.pop(3)),
    "optional in the schema only": lambda f: _field_named(f, "channel").update(
        type=["null", "string"], default=None),
    "type changed": lambda f: _field_named(f, "channel").update(type="boolean"),
    "timestamp became a plain string": lambda f: _field_named(f, "occurred_at").update(
        type="string"),
    "enum symbol added": lambda f: _field_named(f, "notice_kind")["type"]["symbols"].append(
        "DATA_EXPORT"),
    "optional without a null default": lambda f: _field_named(f, "provider").pop("default"),
}


@pytest.mark.parametrize("change", list(_DRIFTS))
def test_a_schema_side_drift_is_caught(change: str) -> None:
    changed = _schema_with("NoticeDelivered", _DRIFTS[change])
    assert drift(changed, EVENT_TYPES["NoticeDelivered"]) != []


def test_a_dataclass_side_drift_is_caught() -> None:
    cls = EVENT_TYPES["FeatureToggled"]
    base = [(f.name, f.type) for f in fields(cls)]
    schema = EVENT_FIELDS["FeatureToggled"]

    def variant(spec: list[Any], **namespace: Any) -> type[Any]:
        made = make_dataclass("FeatureToggled", spec, frozen=True, slots=True)
        for key, value in namespace.items():
            setattr(made, key, value)
        return made

    assert drift(schema, variant(base)) == []  # the rebuilt class itself agrees
    assert drift(schema, variant([*base, ("region", "str | None")]))  # a field added
    assert drift(schema, variant(base[:-1]))  # a field dropped
    assert drift(schema, variant([(n, "str" if n == "enabled" else t) for n, t in base]))
    assert drift(schema, variant([(n, "str | None" if n == "provider" else t)
                                  for n, t in base]))
    assert drift(schema, variant([*base[:-1], ("actor_id", "str", field(default="x"))]))
    enum_schema = EVENT_FIELDS["ConsentChanged"]
    consent = [(f.name, f.type) for f in fields(EVENT_TYPES["ConsentChanged"])]
    made = variant(consent, ENUM_COMMENTS={"status": ("GRANTED", "WITHDRAWN")})
    assert drift(enum_schema, made) == []
    made = variant(consent, ENUM_COMMENTS={"status": ("GRANTED", "WITHDRAWN", "PAUSED")})
    assert drift(enum_schema, made)


# -------------------------------------------------------------------- the validator


def _good_value(avro: dict[str, Any]) -> Any:
    """A valid JSON value for the field `avro` of a raw schema (non-null branch)."""
    kind = avro["type"]
    if isinstance(kind, list):
        kind = kind[1]
    if isinstance(kind, dict):
        if kind.get("logicalType") == "timestamp-millis":
            return 1_772_445_600_000
        if kind["type"] == "enum":
            return kind["symbols"][-1]
        return ["user.contact.email"]  # an array of strings
    return {"string": "user.contact.email", "boolean": True, "long": 7}[kind]


# Per format of a string: a value a plain string check accepts and the format refuses.
_REFUSED_BY_FORMAT = {"id": "", "taxonomy-key": "user..email", "provider": "linked in"}


def _record(name: str) -> dict[str, Any]:
    return {"type": name, **{f["name"]: _good_value(f) for f in load_schema(name)["fields"]}}


@pytest.mark.parametrize("name", list(EVENT_TYPES))
def test_the_validator_checks_what_the_raw_schema_says(name: str) -> None:
    # Read from the schema's JSON here, not through streams.model.contract.
    good = _record(name)
    event = event_from_record(good)
    for avro in load_schema(name)["fields"]:
        field_name, kind = avro["name"], avro["type"]
        where = f"{name}.{field_name}"
        optional = isinstance(kind, list)
        kind = kind[1] if optional else kind
        without = {**good, field_name: None}
        if optional:
            assert getattr(event_from_record(without), field_name) is None, where
        else:
            with pytest.raises(InvalidEvent, match=f"'{field_name}' is missing") as missing:
                event_from_record(without)
            assert missing.value.code == "missing_field", where
        wrong = 1.5  # a number no field of the contract takes
        with pytest.raises(InvalidEvent, match=f"'{field_name}'") as invalid:
            event_from_record({**good, field_name: wrong})
        assert invalid.value.code == "invalid_field", where
        text_format = avro.get("format")
        if text_format:
            refused = _REFUSED_BY_FORMAT[text_format]
            bad = [refused] if isinstance(kind, dict) else refused
            with pytest.raises(InvalidEvent, match=f"'{field_name}'"):
                event_from_record({**good, field_name: bad})
        elif kind == "string":
            assert getattr(event_from_record({**good, field_name: ""}), field_name) == ""
        if isinstance(kind, dict) and kind.get("type") == "enum":
            for symbol in kind["symbols"]:
                assert getattr(event_from_record({**good, field_name: symbol}),
                               field_name) == symbol
            with pytest.raises(InvalidEvent, match="must be one of"):
                event_from_record({**good, field_name: kind["symbols"][0].lower()})
        if isinstance(kind, dict) and kind.get("logicalType") == "timestamp-millis":
            # timestamp-millis: epoch milliseconds, and RFC 3339 in JSON Lines.
            parsed = event_from_record({**good, field_name: "2026-03-02T10:00:00.5Z"})
            assert getattr(parsed, field_name) == 1_772_445_600_500, where
        if isinstance(kind, dict) and kind.get("type") == "array":
            assert getattr(event, field_name) == ("user.contact.email",), where


def test_a_schema_change_reaches_the_validator() -> None:
    name = "NoticeDelivered"
    good = _record(name)
    without_version = {k: v for k, v in good.items() if k != "notice_version"}
    with pytest.raises(InvalidEvent):
        event_from_record(without_version)
    with pytest.raises(InvalidEvent):
        event_from_record({**good, "notice_kind": "DATA_EXPORT"})
    assert event_from_record({**good, "channel": ""}).channel == ""

    def change(fields_: list[dict[str, Any]]) -> None:
        _field_named(fields_, "notice_version").update(type=["null", "string"], default=None)
        _field_named(fields_, "notice_kind")["type"]["symbols"].append("DATA_EXPORT")
        _field_named(fields_, "channel")["format"] = "id"

    validator = Validator(name, _schema_with(name, change))
    assert validator.validate(without_version).notice_version is None  # type: ignore[union-attr]
    assert validator.validate({**good, "notice_kind": "DATA_EXPORT"}
                              ).notice_kind == "DATA_EXPORT"  # type: ignore[union-attr]
    with pytest.raises(InvalidEvent, match="'channel' must be a non-empty string"):
        validator.validate({**good, "channel": ""})


def test_a_required_field_with_a_default_takes_it_when_absent() -> None:
    name = "NoticeDelivered"
    validator = Validator(name, _schema_with(
        name, lambda f: _field_named(f, "channel").update(default="in_meeting")))
    good = _record(name)
    absent = {k: v for k, v in good.items() if k != "channel"}
    assert validator.validate(absent).channel == "in_meeting"  # type: ignore[union-attr]
    with pytest.raises(InvalidEvent, match="'channel' is missing or null"):
        validator.validate({**good, "channel": None})
    with pytest.raises(SchemaError, match="the default must be a provider key"):
        Validator(name, _schema_with(name, lambda f: _field_named(f, "channel").update(
            format="provider", default="not a provider")))


def test_a_field_in_the_schema_only_stops_the_validator() -> None:
    changed = _schema_with("FeatureToggled", _DRIFTS["field added to the schema only"])
    with pytest.raises(SchemaError, match=r"region.*not those of the dataclass"):
        Validator("FeatureToggled", changed)


@pytest.mark.parametrize(("field_name", "attributes", "message"), [
    ("actor_id", {"type": "double"}, "no check for the type"),
    ("actor_id", {"type": ["string", "null"]}, "union"),
    ("actor_id", {"format": "email"}, "unknown format"),
    ("enabled", {"format": "id"}, "unknown format"),
    ("enabled", {"pseudonymised": True}, "only a string"),
    ("actor_id", {"pseudonymised": "yes"}, "only a string"),
])
def test_a_field_the_validator_cannot_check_is_refused(field_name: str,
                                                       attributes: dict[str, Any],
                                                       message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        _schema_with("FeatureToggled",
                     lambda f: _field_named(f, field_name).update(attributes))


# -------------------------------------------------------------------- personal data


def test_the_pseudonymised_fields_are_those_the_schemas_mark() -> None:
    marked = {name: tuple(f["name"] for f in load_schema(name)["fields"]
                          if f.get("pseudonymised") is True) for name in EVENT_TYPES}
    assert HASHED_FIELDS == PSEUDONYMISED_FIELDS == marked
    # The floor: who a person is (names, email, the other users) never goes out in clear.
    assert {name for names in marked.values() for name in names} >= {
        "display_name", "email", "requested_by", "profile_name", "viewer_id", "actor_id"}


@pytest.mark.parametrize("name", list(EVENT_TYPES))
def test_evidence_pseudonymises_exactly_the_marked_fields(name: str) -> None:
    event = event_from_record(_record(name))
    pseudonymiser = Pseudonymiser(b"k" * 32)
    shown = pseudonymiser.event(event)
    for key, value in shown.items():
        hashed = key in PSEUDONYMISED_FIELDS[name]
        assert (type(value) is str and value.startswith("hmac-sha256:")) == hashed, key


# -------------------------------------------------------------------- where the schemas are


def test_the_schemas_are_found_in_the_source_tree_and_in_a_wheel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "streams"
    package.mkdir(parents=True)
    monkeypatch.setattr(streams, "__file__", str(package / "__init__.py"))
    assert contract._schema_dir() == tmp_path / "site" / "schemas"  # editable: the repo's
    (package / "_schemas").mkdir()
    assert contract._schema_dir() == package / "_schemas"  # pyproject's force-include
    repository = Path(__file__).resolve().parents[2]
    assert repository / "schemas" == contract.SCHEMA_DIR  # this checkout's, as it runs


@pytest.mark.parametrize("name", list(EVENT_TYPES))
def test_every_text_and_array_field_has_a_size_limit(name: str) -> None:
    """At the limit an event is valid; one character or item past it, invalid_field:
    an event is copied into findings, its subject's state and Kafka records, whose size
    is bounded (streams.model.validate)."""
    from streams.model.validate import MAX_ID_CHARS, MAX_ITEMS, MAX_KEY_CHARS, MAX_TEXT_CHARS

    good = _record(name)
    for field_contract in EVENT_FIELDS[name]:
        value = good[field_contract.name]
        if field_contract.kind == "array":
            item = value[0] if value else "user"
            limit, at, past = MAX_ITEMS, [item] * MAX_ITEMS, [item] * (MAX_ITEMS + 1)
        elif field_contract.kind == "string" and field_contract.format in ("", "id"):
            limit = MAX_ID_CHARS if field_contract.format == "id" else MAX_TEXT_CHARS
            at, past = "x" * limit, "x" * (limit + 1)
        elif field_contract.kind == "string" and field_contract.format in ("taxonomy-key",
                                                                          "provider"):
            limit = MAX_KEY_CHARS
            at, past = "k" * limit, "k" * (limit + 1)
        else:
            continue
        where = f"{name}.{field_contract.name} ({limit})"
        assert event_from_record({**good, field_contract.name: at}) is not None, where
        with pytest.raises(InvalidEvent, match=f"'{field_contract.name}'") as invalid:
            event_from_record({**good, field_contract.name: past})
        assert invalid.value.code == "invalid_field", where
