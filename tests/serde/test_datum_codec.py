"""The planned Avro codec reads and writes exactly what fastavro does, for our schemas."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.serde.avro as avro_serde
from streams.privacy.pseudonymise import Pseudonymiser
from streams.serde.avro import (
    EVENT_SCHEMA_NAMES,
    NAMESPACE,
    amendment_to_record,
    dead_letter_to_record,
    event_to_record,
    finding_to_record,
    load_schema,
    strip_timestamp_millis,
)
from streams.serde.datum_codec import (
    DatumError,
    TrailingBytes,
    Unplannable,
    container_plan,
    plan_for,
)
from streams.serde.wire import SINGLE_OBJECT_MARKER, encode_output, fingerprint_of
from tests.hypothesis_profiles import examples
from tests.strategies import amendments, dead_letters, events, findings

PSEUDONYMISER = Pseudonymiser(b"a test key of thirty-two bytes!!")
_PARSED = {name: fastavro.parse_schema(strip_timestamp_millis(load_schema(name)))
           for name in (*EVENT_SCHEMA_NAMES, "Finding", "Amendment", "DeadLetter")}
_PLANS = {name: plan_for(schema) for name, schema in _PARSED.items()}
_VALUE_PLANS = {name: plan_for(_PARSED[name], as_values=True) for name in EVENT_SCHEMA_NAMES}


def _fastavro_bytes(name: str, record: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, _PARSED[name], record)
    return out.getvalue()


def _fastavro_read(name: str, payload: bytes) -> Any:
    stream = io.BytesIO(payload)
    record = fastavro.schemaless_reader(stream, _PARSED[name], None)
    if stream.tell() != len(payload):
        raise ValueError("trailing bytes")
    return record


def test_every_schema_of_ours_is_planned_from_the_schema_files_as_fastavro_parses_them() -> None:
    assert set(_PLANS) == {*EVENT_SCHEMA_NAMES, "Finding", "Amendment", "DeadLetter"}
    # and from the schema files as they are (not parsed by fastavro)
    for name in _PLANS:
        plan_for(strip_timestamp_millis(load_schema(name)))


@settings(max_examples=examples(400), deadline=None)
@given(events())
def test_events_encode_and_decode_as_fastavro_does(event: Any) -> None:
    record = event_to_record(event)
    payload = _fastavro_bytes(event.TYPE, record)
    plan = _PLANS[event.TYPE]
    assert plan.encode(record) == payload
    assert plan.decode(payload) == _fastavro_read(event.TYPE, payload)
    assert plan.decode(b"\x00\x01" + payload, 2) == plan.decode(payload)
    # read as its values: the same, in the schema's order
    values = _VALUE_PLANS[event.TYPE].decode(payload)
    assert values == list(plan.decode(payload).values())
    assert _VALUE_PLANS[event.TYPE].encode(values) == payload


def test_only_a_record_is_planned_as_its_values() -> None:
    with pytest.raises(Unplannable):
        plan_for(["null", "string"], as_values=True)
    with pytest.raises(TypeError):
        _VALUE_PLANS["ParticipantJoined"].encode([1, 2])


@settings(max_examples=examples(200), deadline=None)
@given(findings())
def test_findings_are_written_as_fastavro_writes_them(finding: Any) -> None:
    record = finding_to_record(PSEUDONYMISER.finding(finding))
    payload = _PLANS["Finding"].encode(record)
    assert payload == _fastavro_bytes("Finding", record)
    # the worker's: written from the finding's values, the same bytes
    sealed = PSEUDONYMISER.finding(finding)
    assert encode_output(sealed) == (SINGLE_OBJECT_MARKER + fingerprint_of(
        load_schema("Finding")) + payload)
    assert _PLANS["Finding"].decode(payload) == _fastavro_read("Finding", payload)


@settings(max_examples=examples(200), deadline=None)
@given(amendments())
def test_amendments_are_written_as_fastavro_writes_them(amendment: Any) -> None:
    record = amendment_to_record(PSEUDONYMISER.amendment(amendment))
    payload = _PLANS["Amendment"].encode(record)
    assert payload == _fastavro_bytes("Amendment", record)
    sealed = PSEUDONYMISER.amendment(amendment)
    assert encode_output(sealed) == (SINGLE_OBJECT_MARKER + fingerprint_of(
        load_schema("Amendment")) + payload)
    assert _PLANS["Amendment"].decode(payload) == _fastavro_read("Amendment", payload)


@settings(max_examples=examples(200), deadline=None)
@given(dead_letters())
def test_dead_letters_are_written_as_fastavro_writes_them(letter: Any) -> None:
    record = dead_letter_to_record(letter)
    payload = _PLANS["DeadLetter"].encode(record)
    assert payload == _fastavro_bytes("DeadLetter", record)
    assert _PLANS["DeadLetter"].decode(payload) == _fastavro_read("DeadLetter", payload)


@settings(max_examples=examples(300), deadline=None)
@given(events(), st.data())
def test_a_truncated_datum_is_refused_by_both(event: Any, data: st.DataObject) -> None:
    payload = _fastavro_bytes(event.TYPE, event_to_record(event))
    cut = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    with pytest.raises(DatumError):
        _PLANS[event.TYPE].decode(payload[:cut])
    with pytest.raises(Exception):  # noqa: B017 - fastavro raises several kinds
        _fastavro_read(event.TYPE, payload[:cut])


@settings(max_examples=examples(500), deadline=None)
@given(events(), st.data())
def test_a_damaged_datum_that_decodes_decodes_as_fastavro_reads_it(event: Any,
                                                                   data: st.DataObject) -> None:
    """Any byte changed: what the plan accepts, fastavro reads the same; what fastavro
    refuses, the plan refuses. (The plan may refuse more: a negative length, which
    fastavro reads as "the rest of the input".)"""
    payload = bytearray(_fastavro_bytes(event.TYPE, event_to_record(event)))
    at = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    payload[at] = data.draw(st.integers(min_value=0, max_value=255))
    damaged = bytes(payload)
    try:
        ours = _PLANS[event.TYPE].decode(damaged)
    except DatumError:
        ours = None
    try:
        theirs = _fastavro_read(event.TYPE, damaged)
    except Exception:
        theirs = None
    if ours is not None:
        assert ours == theirs
    if theirs is None:
        assert ours is None


def test_trailing_bytes_are_counted() -> None:
    plan = _PLANS["FeatureToggled"]
    with pytest.raises(TrailingBytes) as caught:
        plan.decode(b"\x00" * 64)
    assert caught.value.count > 0


@pytest.mark.parametrize("schema", [
    {"type": "float"},
    ["null", "string", {"type": "enum", "name": "E", "symbols": ["A"]}],
    ["long", "int"],
    {"type": "fixed", "name": "F", "size": 4},
])
def test_what_is_not_planned_is_refused_when_planning(schema: Any) -> None:
    with pytest.raises(Unplannable):
        plan_for(schema)


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x80" * 10 + b"\x01", "longer than 64 bits"),
    (b"\x01", "negative length"),
])
def test_bad_numbers_and_lengths(data: bytes, reason: str) -> None:
    with pytest.raises(DatumError, match=reason):
        plan_for("string").decode(data)


@pytest.mark.parametrize("value", [0, 63, 64, -1, -64, -65, 1 << 62, -(1 << 62), (1 << 62) - 1,
                                   (1 << 63) - 1, -(1 << 63)])
def test_longs_at_every_boundary_are_written_as_fastavro_writes_them(value: int) -> None:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, "long", value)
    assert plan_for("long").encode(value) == out.getvalue()
    assert plan_for("long").decode(out.getvalue()) == value


def test_a_value_that_does_not_fit_is_refused_when_writing() -> None:
    plan = _PLANS["DeadLetter"]
    with pytest.raises((TypeError, ValueError)):
        plan.encode({"source": 1})
    with pytest.raises(ValueError, match="32 bits"):
        plan_for("int").encode(1 << 31)
    for too_long in (1 << 63, -(1 << 63) - 1):
        with pytest.raises(ValueError, match="64 bits"):
            plan_for("long").encode(too_long)
    with pytest.raises(TypeError):
        plan_for(["null", "string"]).encode(3)


# -- container files: the blocks' datums ------------------------------------------------------


def _blocks(data: bytes) -> list[Any]:
    return list(fastavro.block_reader(io.BytesIO(data), return_record_name=True))


def _items(block: Any, datums: Any) -> Any:
    """The block's items by `datums` (None: fastavro), or the name of the error raised.

    A block is read from its bytes each time: fastavro's own iteration consumes them."""
    block.bytes_.seek(0)
    try:
        return list(avro_serde._block_items(block, datums))
    except Exception as exc:
        return type(exc).__name__


_UNION = strip_timestamp_millis([load_schema(name) for name in EVENT_SCHEMA_NAMES])


def _container_of(items: list[Any], codec: str, sync_interval: int) -> bytes:
    """Written with the timestamps as plain longs: the schema the reader rewrites the
    header to (`avro._open_container`)."""
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(_UNION),
                    [(f"{NAMESPACE}.{e.TYPE}", event_to_record(e)) for e in items],
                    codec=codec, sync_interval=sync_interval)
    return out.getvalue()


_CONTAINER_PLAN = container_plan(_UNION)
_AS_VALUES = frozenset(f"{NAMESPACE}.{name}" for name in sorted(EVENT_SCHEMA_NAMES)[::2])
_VALUES_CONTAINER_PLAN = container_plan(_UNION, _AS_VALUES)


@settings(max_examples=examples(150), deadline=None)
@given(st.lists(events(), min_size=1, max_size=40), st.sampled_from(["null", "deflate"]),
       st.integers(200, 4000))
def test_container_blocks_are_read_as_fastavro_reads_them(items: list[Any], codec: str,
                                                           sync_interval: int) -> None:
    data = _container_of(items, codec, sync_interval)
    for block in _blocks(data):
        ours = _items(block, _CONTAINER_PLAN)
        assert isinstance(ours, list)
        assert ours == _items(block, None)
        # the records of the names asked for, read as their values, in the fields' order
        as_values = _items(block, _VALUES_CONTAINER_PLAN)
        assert as_values == [(name, list(record.values()) if name in _AS_VALUES else record)
                             for name, record in ours]
    # and through the whole reader: every event comes back
    got = [item for _, item in avro_serde.read_event_container(io.BytesIO(data), "t.avro")]
    assert got == items


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(events(), min_size=1, max_size=20), st.data())
def test_a_damaged_block_is_refused_or_read_as_fastavro_reads_it(items: list[Any],
                                                                  data: st.DataObject) -> None:
    """Never more lenient than fastavro: what the plan reads from damaged bytes, fastavro
    reads alike."""
    for block in _blocks(_container_of(items, "null", 100_000)):
        raw = bytearray(block.bytes_.getvalue())
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        block.bytes_ = io.BytesIO(bytes(raw))
        ours = _items(block, _CONTAINER_PLAN)
        if isinstance(ours, list):
            assert ours == _items(block, None)


@pytest.mark.parametrize("schema", [
    ["null", {"type": "record", "name": "A", "fields": []}],  # not only records on top
    {"type": "record", "name": "B", "fields": [  # a union below that may hold a record
        {"name": "x", "type": ["null", {"type": "record", "name": "C", "fields": []}]}]},
    {"type": "record", "name": "D", "fields": [{"name": "y", "type": ["null", "D"]}]},
])
def test_a_container_schema_fastavro_reads_otherwise_is_not_planned(schema: Any) -> None:
    with pytest.raises(Unplannable):
        container_plan(schema)
