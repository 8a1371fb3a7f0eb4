"""streams.serde.avro: datums round-trip, container files, and bad input never raises."""

from __future__ import annotations

import io
import json
import os
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streams.serde.avro as avro_serde
from streams.errors import InvalidEvent, SchemaError
from streams.model.events import (
    EVENT_TYPES,
    ConsentChanged,
    EnrichmentRequested,
    Event,
    ParticipantJoined,
    ProfileViewed,
)
from streams.model.findings import Amendment, DeadLetter, Finding
from streams.model.validate import MAX_ID_CHARS, MAX_TEXT_CHARS
from streams.privacy.pseudonymise import Pseudonymiser
from streams.serde.avro import (
    CORRUPT_CONTAINER,
    EVENT_SCHEMA_NAMES,
    NAMESPACE,
    SCHEMA_DIR,
    SCHEMA_NAMES,
    amendment_to_record,
    dead_letter_to_record,
    event_to_record,
    event_union_schema,
    finding_to_record,
    load_schema,
    parsed_schema,
    read_event_container,
    record_to_amendment,
    record_to_dead_letter,
    record_to_event,
    record_to_finding,
    schema_history,
    write_event_container,
)
from streams.serde.dead_letter_limit import DeadLetterLimit
from tests.hypothesis_profiles import examples
from tests.strategies import EVENT_CLASSES, amendments, dead_letters, event_of, events, findings

SETTINGS = settings(
    max_examples=int(os.environ.get("N", examples(100))),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

PJ = ParticipantJoined("e-1", 1_700_000_000_000, "acct", "meet", "subj", "Night Owl", None, True)
ER = EnrichmentRequested(
    "e-2",
    1_700_000_000_500,
    "acct",
    "meet",
    "subj",
    "linkedin_sales_navigator",
    "third_party_sharing.enrichment",
    ("user.name", "user.contact.email"),
    "AUTOMATIC",
    None,
)
PV = ProfileViewed(
    "e-3",
    1_700_000_001_000,
    "acct",
    "meet",
    "subj",
    "viewer",
    "linkedin_sales_navigator",
    ("user.name",),
)
CC = ConsentChanged(
    "e-4",
    1_700_000_002_000,
    "subj",
    "c-1",
    "third_party_sharing",
    None,
    "WITHDRAWN",
    ("user",),
    1_800_000_000_000,
    "v2",
    "EU",
)
SAMPLE: list[Event] = [PJ, ER, PV, CC]


def _schemaless_round_trip(name: str, record: dict[str, Any]) -> Any:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed_schema(name), record)
    buffer.seek(0)
    decoded = fastavro.schemaless_reader(buffer, parsed_schema(name))
    assert buffer.read() == b"", "the reader must consume exactly what was written"
    return decoded


def _container(items: list[Event], codec: str = "null") -> bytes:
    buffer = io.BytesIO()
    assert write_event_container(buffer, items, codec=codec) == len(items)
    return buffer.getvalue()


def _read_all(data: bytes, source: str = "test.avro") -> list[tuple[int, Event | DeadLetter]]:
    return list(read_event_container(io.BytesIO(data), source))


# ----------------------------------------------------------------------------- schemas API


def test_schema_dir_holds_every_schema() -> None:
    assert SCHEMA_DIR.is_dir()
    assert Path(avro_serde.__file__).resolve().parents[2] / "schemas" == SCHEMA_DIR
    for name in SCHEMA_NAMES:
        assert load_schema(name)["name"] == name
    assert tuple(EVENT_TYPES) == EVENT_SCHEMA_NAMES


def test_load_schema_returns_a_fresh_copy() -> None:
    first = load_schema("ConsentChanged")
    first["fields"].clear()
    assert load_schema("ConsentChanged")["fields"]


def test_unknown_schema_name_is_a_schema_error() -> None:
    with pytest.raises(SchemaError):
        load_schema("NoSuchRecord")
    with pytest.raises(SchemaError):
        schema_history("../NoSuchRecord")


def test_parsed_schemas_are_cached() -> None:
    assert parsed_schema("Finding") is parsed_schema("Finding")
    assert event_union_schema() is event_union_schema()


def test_event_union_has_the_seven_records_in_spec_order() -> None:
    union = event_union_schema()
    assert [branch["name"] for branch in union] == [
        f"{NAMESPACE}.{name}" for name in EVENT_SCHEMA_NAMES
    ]


def test_schema_history_lists_versions_in_order() -> None:
    for name in SCHEMA_NAMES:
        history = schema_history(name)
        assert [version for version, _ in history] == list(range(1, len(history) + 1))
        assert history, f"{name} has no released version"


# ----------------------------------------------------------------------------- datums


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda cls: cls.TYPE)
@SETTINGS
@given(data=st.data())
def test_event_datum_round_trip(cls: type[Event], data: st.DataObject) -> None:
    event = data.draw(event_of(cls))
    record = event_to_record(event)
    assert list(record) == [f.name for f in fields(cls)]
    assert all(type(value) is not tuple for value in record.values())
    decoded = _schemaless_round_trip(cls.TYPE, record)
    assert record_to_event(cls.TYPE, decoded) == event
    assert record_to_event(f"{NAMESPACE}.{cls.TYPE}", decoded) == event


PSEUDONYMISER = Pseudonymiser(b"a test key of thirty-two bytes!!")


def _evidence_datum(item: dict[str, Any]) -> dict[str, Any]:
    head = ("type", "event_id", "occurred_at")
    return {**{name: item[name] for name in head},
            "fields": {name: value for name, value in item.items() if name not in head}}


@SETTINGS
@given(findings())
def test_finding_round_trip(finding: Finding) -> None:
    # A finding from the engine holds raw evidence events; its datum holds them pseudonymised.
    sealed = PSEUDONYMISER.finding(finding)
    record = finding_to_record(sealed)
    read = replace(finding, evidence=sealed.evidence)  # what a reader gives back
    expected = read.to_dict()
    expected["evidence"] = [_evidence_datum(item) for item in expected["evidence"]]
    assert record == expected
    assert len(record["evidence"]) == len(finding.evidence)
    assert record_to_finding(_schemaless_round_trip("Finding", record)) == read


@SETTINGS
@given(amendments())
def test_amendment_round_trip(amendment: Amendment) -> None:
    sealed = PSEUDONYMISER.amendment(amendment)
    record = amendment_to_record(sealed)
    read = replace(amendment, evidence=sealed.evidence, late_event=sealed.late_event)
    expected = read.to_dict()
    expected["evidence"] = [_evidence_datum(item) for item in expected["evidence"]]
    if expected["late_event"] is not None:
        expected["late_event"] = _evidence_datum(expected["late_event"])
    assert record == expected
    assert record_to_amendment(_schemaless_round_trip("Amendment", record)) == read


@SETTINGS
@given(dead_letters())
def test_dead_letter_round_trip(dead_letter: DeadLetter) -> None:
    record = dead_letter_to_record(dead_letter)
    assert record_to_dead_letter(_schemaless_round_trip("DeadLetter", record)) == dead_letter


def test_record_to_event_goes_through_the_validator() -> None:
    record = event_to_record(PJ) | {"event_id": ""}
    with pytest.raises(InvalidEvent) as caught:
        record_to_event("ParticipantJoined", record)
    assert caught.value.code == "invalid_field"
    with pytest.raises(InvalidEvent) as caught:
        record_to_event("com.example.Other", event_to_record(PJ))
    assert caught.value.code == "unknown_type"


def test_event_to_record_rejects_non_events() -> None:
    with pytest.raises(TypeError):
        event_to_record(object())  # type: ignore[arg-type]


def test_record_to_finding_rejects_malformed_records() -> None:
    finding = Finding(
        "f" * 64, "covert-profile-view", "HIGH", "s", "a", "m", "p", "t", ("t",), 1, 2, "x"
    )
    good = finding_to_record(PSEUDONYMISER.finding(finding))
    assert record_to_finding(good) == finding
    for change, code in [
        ({"severity": "SEVERE"}, "invalid_field"),
        ({"occurred_at": "yesterday"}, "invalid_field"),
        ({"evidence_event_ids": "t"}, "invalid_field"),
        ({"rule": None}, "missing_field"),
        ({"evidence": None}, "missing_field"),
        ({"evidence": "t"}, "invalid_field"),
        ({"evidence": [{"type": "ProfileViewed", "event_id": "t"}]}, "invalid_field"),
        ({"evidence": [{"type": "ProfileViewed", "event_id": "t", "occurred_at": 1,
                        "fields": {"event_id": "u"}}]}, "invalid_field"),
        ({"evidence": [{"type": "ProfileViewed", "event_id": "t", "occurred_at": 1,
                        "fields": {"viewer_id": {"a": 1}}}]}, "invalid_field"),
    ]:
        with pytest.raises(InvalidEvent) as caught:
            record_to_finding(good | change)
        assert caught.value.code == code
    with pytest.raises(InvalidEvent):
        record_to_finding([])  # type: ignore[arg-type]
    # A datum of version 1 has no evidence: it reads with the default, none.
    del good["evidence"]
    assert record_to_finding(good) == finding


# ----------------------------------------------------------------------------- containers


@SETTINGS
@given(st.lists(events(), max_size=30), st.sampled_from(["null", "deflate"]))
def test_container_round_trip(items: list[Event], codec: str) -> None:
    got = _read_all(_container(items, codec))
    assert [number for number, _ in got] == list(range(1, len(items) + 1))
    assert [item for _, item in got] == items


def test_container_round_trip_through_a_path(tmp_path: Path) -> None:
    path = tmp_path / "events.avro"
    assert write_event_container(path, SAMPLE) == len(SAMPLE)
    assert write_event_container(str(path), SAMPLE) == len(SAMPLE)
    with path.open("rb") as fo:
        assert [item for _, item in read_event_container(fo, str(path))] == SAMPLE


def test_container_schema_is_the_event_union() -> None:
    reader = fastavro.reader(io.BytesIO(_container(SAMPLE)))
    names = [branch["name"] for branch in reader.writer_schema]
    assert names == [f"{NAMESPACE}.{name}" for name in EVENT_SCHEMA_NAMES]
    # Timestamps are timestamp-millis for every other reader of the file.
    first = next(iter(reader))
    assert isinstance(first, dict)
    assert first["occurred_at"].timestamp() * 1000 == PJ.occurred_at


def test_container_with_a_single_record_schema() -> None:
    buffer = io.BytesIO()
    fastavro.writer(buffer, parsed_schema("ConsentChanged"), [event_to_record(CC)] * 3)
    got = _read_all(buffer.getvalue())
    assert got == [(1, CC), (2, CC), (3, CC)]


def test_container_written_by_another_library() -> None:
    import avro.datafile
    import avro.io
    import avro.schema

    schema = avro.schema.parse(json.dumps(load_schema("ProfileViewed")))
    buffer = io.BytesIO()
    writer = avro.datafile.DataFileWriter(buffer, avro.io.DatumWriter(), schema)
    record = event_to_record(PV)
    # apache avro wants aware datetimes for timestamp-millis
    occurred = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=PV.occurred_at)
    writer.append(record | {"occurred_at": occurred})
    writer.flush()
    assert _read_all(buffer.getvalue()) == [(1, PV)]


def test_invalid_event_becomes_a_dead_letter_and_the_rest_come_through() -> None:
    bad = event_to_record(ER) | {"event_id": ""}
    records = [
        (f"{NAMESPACE}.ParticipantJoined", event_to_record(PJ)),
        (f"{NAMESPACE}.EnrichmentRequested", bad),
        (f"{NAMESPACE}.ProfileViewed", event_to_record(PV)),
    ]
    buffer = io.BytesIO()
    fastavro.writer(buffer, event_union_schema(), records)
    got = _read_all(buffer.getvalue(), "in.avro")
    assert [number for number, _ in got] == [1, 2, 3]
    assert got[0][1] == PJ
    assert got[2][1] == PV
    letter = got[1][1]
    assert isinstance(letter, DeadLetter)
    assert letter.source == "in.avro"
    assert letter.partition is None
    assert letter.position == 2
    assert letter.reason_code == "invalid_field"
    assert "event_id" in letter.reason
    assert letter.dead_lettered_at > 1_600_000_000_000
    # The payload is the record, encoded with the writer's record schema.
    decoded = fastavro.schemaless_reader(
        io.BytesIO(letter.payload), parsed_schema("EnrichmentRequested")
    )
    assert decoded["event_id"] == ""
    assert decoded["data_sent"] == list(ER.data_sent)


@pytest.mark.parametrize("single", [False, True], ids=["union", "single-record"])
def test_a_dead_letters_payload_is_its_datum_byte_for_byte(single: bool) -> None:
    """The record is read as its values and checked field by field in place; its last
    field is invalid, so every field before it was checked (the enum and the array
    normalised) when it was refused: what is written again must still be its bytes."""
    bad = event_to_record(ER) | {"requested_by": "x" * (MAX_TEXT_CHARS + MAX_ID_CHARS + 1)}
    buffer = io.BytesIO()
    if single:
        fastavro.writer(buffer, parsed_schema("EnrichmentRequested"),
                        [event_to_record(ER), bad])
    else:
        fastavro.writer(buffer, event_union_schema(),
                        [(f"{NAMESPACE}.EnrichmentRequested", event_to_record(ER)),
                         (f"{NAMESPACE}.EnrichmentRequested", bad)])
    got = _read_all(buffer.getvalue())
    assert got[0] == (1, ER)
    letter = got[1][1]
    assert isinstance(letter, DeadLetter) and letter.reason_code == "invalid_field"
    assert "requested_by" in letter.reason
    datum = io.BytesIO()
    fastavro.schemaless_writer(datum, parsed_schema("EnrichmentRequested"), bad)
    assert letter.payload == datum.getvalue()


def test_timestamp_out_of_range_is_one_dead_letter_not_a_corrupt_file() -> None:
    # Microseconds by mistake: year 55,000. Would overflow datetime in a naive reader.
    wrong = event_to_record(PJ) | {"occurred_at": PJ.occurred_at * 1000_000}
    records = [
        (f"{NAMESPACE}.ParticipantJoined", wrong),
        (f"{NAMESPACE}.ParticipantJoined", event_to_record(PJ)),
    ]
    buffer = io.BytesIO()
    fastavro.writer(buffer, event_union_schema(), records)
    got = _read_all(buffer.getvalue())
    assert isinstance(got[0][1], DeadLetter)
    assert got[0][1].reason_code == "invalid_field"
    assert got[1] == (2, PJ)


def test_record_of_an_unknown_type_is_a_dead_letter() -> None:
    other = {
        "type": "record",
        "name": "Other",
        "namespace": "com.example",
        "fields": [{"name": "event_id", "type": "string"}],
    }
    schema = fastavro.parse_schema([other, load_schema("ParticipantJoined")])
    buffer = io.BytesIO()
    fastavro.writer(
        buffer,
        schema,
        [
            ("com.example.Other", {"event_id": "x"}),
            (f"{NAMESPACE}.ParticipantJoined", event_to_record(PJ)),
        ],
    )
    got = _read_all(buffer.getvalue())
    assert isinstance(got[0][1], DeadLetter)
    assert got[0][1].reason_code == "unknown_type"
    assert got[0][1].payload == b"\x02x"
    assert got[1] == (2, PJ)


def test_container_of_non_records_yields_dead_letters() -> None:
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema("string"), ["a", "b"])
    got = _read_all(buffer.getvalue())
    assert [(n, item.reason_code) for n, item in got if isinstance(item, DeadLetter)] == [
        (1, "not_an_object"),
        (2, "not_an_object"),
    ]


def test_a_record_that_is_an_array_is_dead_lettered_with_its_bytes() -> None:
    """Found by review: read as a list, it was taken for an event record read as its
    values, and its payload came out empty."""
    for schema, datum in ((fastavro.parse_schema({"type": "array", "items": "string"}),
                           ["x", "y"]),
                          (fastavro.parse_schema([load_schema("ConsentChanged"),
                                                  {"type": "array", "items": "string"}]),
                           ["x", "y"])):
        buffer = io.BytesIO()
        fastavro.writer(buffer, schema, [datum])
        (_, letter), = _read_all(buffer.getvalue())
        assert isinstance(letter, DeadLetter) and letter.reason_code == "not_an_object"
        expected = io.BytesIO()
        fastavro.schemaless_writer(expected, fastavro.parse_schema(
            {"type": "array", "items": "string"}), datum)
        assert letter.payload.endswith(expected.getvalue())


def test_a_writer_with_other_field_types_is_dead_lettered_with_its_bytes() -> None:
    """The validator converts what it checks (a timestamp written as a string becomes
    epoch ms): the record of a writer whose field types differ from the current schema's
    is read as a dict, so its dead letter's payload is its own bytes, not values the
    writer's schema no longer takes (found by review)."""
    schema = load_schema("EnrichmentRequested")
    for field in schema["fields"]:
        if field["name"] == "occurred_at":
            field["type"] = "string"
    record = event_to_record(ER) | {
        "occurred_at": "2023-11-14T22:13:20.500Z",
        "requested_by": "x" * (MAX_TEXT_CHARS + MAX_ID_CHARS + 1)}
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(schema), [record])
    (_, letter), = _read_all(buffer.getvalue())
    assert isinstance(letter, DeadLetter) and letter.reason_code == "invalid_field"
    datum = io.BytesIO()
    fastavro.schemaless_writer(datum, fastavro.parse_schema(schema), record)
    assert letter.payload == datum.getvalue()


def test_older_writer_gets_the_defaults_of_new_fields() -> None:
    # A v0 writer without the optional `email`: the current reader treats it as null.
    schema = load_schema("ParticipantJoined")
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "email"]
    record = event_to_record(PJ)
    del record["email"]
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(schema), [record])
    assert _read_all(buffer.getvalue()) == [(1, PJ)]


def test_truncated_container_yields_good_records_then_one_corrupt_dead_letter() -> None:
    items = [PJ, ER, PV, CC] * 500
    buffer = io.BytesIO()
    fastavro.writer(
        buffer,
        event_union_schema(),
        [(f"{NAMESPACE}.{e.TYPE}", event_to_record(e)) for e in items],
        sync_interval=4096,
    )
    data = buffer.getvalue()
    cut = len(data) * 2 // 3
    got = _read_all(data[:cut])
    *good, (number, last) = got
    assert good, "the blocks before the cut must come through"
    assert [item for _, item in good] == items[: len(good)]
    assert isinstance(last, DeadLetter)
    assert last.reason_code == CORRUPT_CONTAINER
    assert number == last.position == len(good) + 1
    assert f"record {len(good) + 1}" in last.reason
    # The payload is the file from the start of the block that could not be read.
    assert last.payload
    assert data[:cut].endswith(last.payload)


def test_corrupt_block_ends_the_file_with_one_dead_letter() -> None:
    data = bytearray(_container([PJ, ER, PV, CC] * 50))
    data[len(data) // 2 :] = b"\xff" * (len(data) - len(data) // 2)
    got = _read_all(bytes(data))
    letters = [item for _, item in got if isinstance(item, DeadLetter)]
    assert len(letters) >= 1
    assert letters[-1].reason_code == CORRUPT_CONTAINER
    assert got[-1][1] is letters[-1]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"Obj",
        b"Obj\x01",
        b"not avro at all",
        b"Obj\x01\x02\x16avro.schema\x02{\x00" + b"\x00" * 16,
    ],
)
def test_bad_header_is_one_dead_letter(data: bytes) -> None:
    got = _read_all(data)
    assert len(got) == 1
    number, letter = got[0]
    assert number == 1
    assert isinstance(letter, DeadLetter)
    assert letter.reason_code == CORRUPT_CONTAINER
    assert letter.payload == data


def test_unseekable_stream_is_read_and_corruption_still_reported() -> None:
    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            chunk = self._data.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    data = _container(SAMPLE)
    assert [item for _, item in read_event_container(Pipe(data), "-")] == SAMPLE  # type: ignore[arg-type]
    got = list(read_event_container(Pipe(data[:-7]), "-"))  # type: ignore[arg-type]
    assert isinstance(got[-1][1], DeadLetter)
    assert got[-1][1].reason_code == CORRUPT_CONTAINER


def test_reading_starts_where_the_stream_stands() -> None:
    data = b"prefix" + _container(SAMPLE)
    fo = io.BytesIO(data)
    fo.read(6)
    assert [item for _, item in read_event_container(fo, "x")] == SAMPLE
    fo = io.BytesIO(data[:-5])
    fo.read(6)
    last = list(read_event_container(fo, "x"))[-1][1]
    assert isinstance(last, DeadLetter)
    assert data[:-5].endswith(last.payload)
    assert not last.payload.startswith(b"prefix")


@SETTINGS
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise(data: bytes) -> None:
    for number, item in _read_all(data):
        assert isinstance(item, DeadLetter)
        assert number >= 1


@SETTINGS
@given(st.data())
def test_random_bytes_after_a_valid_header_never_raise(data: st.DataObject) -> None:
    valid = _container([PJ])
    header_end = valid.index(valid[-16:])  # the sync marker ends the header too
    body = data.draw(st.binary(max_size=512))
    for _, item in _read_all(valid[: header_end + 16] + body):
        assert isinstance(item, DeadLetter | ParticipantJoined)


@SETTINGS
@given(st.lists(events(), min_size=1, max_size=10), st.data())
def test_damaged_container_never_raises(items: list[Event], data: st.DataObject) -> None:
    container = bytearray(_container(items, data.draw(st.sampled_from(["null", "deflate"]))))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(container) - 1))
        container[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(container)))
    got = _read_all(bytes(container[:cut]))
    numbers = [number for number, _ in got]
    assert numbers == sorted(numbers)
    corrupt = [
        item
        for _, item in got
        if isinstance(item, DeadLetter) and item.reason_code == CORRUPT_CONTAINER
    ]
    assert len(corrupt) <= 1
    if corrupt:
        assert got[-1][1] is corrupt[0]


def test_block_claiming_more_records_than_bytes_ends_the_file() -> None:
    # A header for the schema "null" and one block that claims 2**40 records in 0 bytes:
    # without the guard this would yield dead letters for ever.
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema("null"), [None])
    data = buffer.getvalue()
    sync = data[-16:]
    header = data[: data.index(sync) + 16]
    block = b"\x80\x80\x80\x80\x80\x40" + b"\x00" + sync  # zigzag long 2**40, size 0
    got = _read_all(header + block)
    assert len(got) == 1
    assert isinstance(got[0][1], DeadLetter)
    assert got[0][1].reason_code == CORRUPT_CONTAINER


def _with_second_block_count(data: bytes, count: int) -> bytes:
    """`data` (a container of small blocks) with its second block's record count set."""
    sync = data[-16:]
    first = data.index(sync) + 16  # the header's end
    second = data.index(sync, first) + 16
    old_count, length = _zigzag_at(data, second)
    assert old_count > 2
    encoded = bytearray()
    value = (count << 1) ^ (count >> 63)
    while value > 0x7F:
        encoded.append((value & 0x7F) | 0x80)
        value >>= 7
    encoded.append(value)
    return data[:second] + bytes(encoded) + data[second + length:]


def _zigzag_at(data: bytes, at: int) -> tuple[int, int]:
    value = shift = length = 0
    while True:
        byte = data[at + length]
        value |= (byte & 0x7F) << shift
        shift += 7
        length += 1
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), length


@pytest.mark.parametrize("count", [0, 1, -3])
def test_a_block_holding_more_records_than_it_declares_is_one_dead_letter(count: int) -> None:
    """Its records past the count must not vanish in silence: the block is one
    corrupt_container dead letter (its bytes), and the blocks after it are read."""
    items = [PJ, ER, PV, CC] * 200
    buffer = io.BytesIO()
    fastavro.writer(buffer, event_union_schema(),
                    [(f"{NAMESPACE}.{e.TYPE}", event_to_record(e)) for e in items],
                    sync_interval=2048)
    data = _with_second_block_count(buffer.getvalue(), count)
    got = _read_all(data)
    (letter,) = [item for _, item in got if isinstance(item, DeadLetter)]
    assert letter.reason_code == CORRUPT_CONTAINER
    assert "holds more records than it declares" in letter.reason
    assert letter.payload and letter.payload in data and letter.payload.endswith(data[-16:])
    events = [item for _, item in got if not isinstance(item, DeadLetter)]
    assert 0 < len(items) - len(events) < len(items) // 2  # the second block's only
    assert events[-1] == items[-1]  # the blocks after it are read
    numbers = [number for number, _ in got]
    assert numbers == sorted(set(numbers))  # the letter's number is its own


def test_a_record_that_does_not_decode_costs_its_block_only() -> None:
    """Bad UTF-8 inside one block's record: that block is one dead letter, the others
    come through, and record numbers go on counting the block's declared records."""
    items = [PJ, ER, PV, CC] * 200
    buffer = io.BytesIO()
    fastavro.writer(buffer, event_union_schema(),
                    [(f"{NAMESPACE}.{e.TYPE}", event_to_record(e)) for e in items],
                    sync_interval=2048)
    data = bytearray(buffer.getvalue())
    sync = bytes(data[-16:])
    second = data.index(sync, data.index(sync) + 16) + 16
    at = data.index(PJ.event_id.encode(), second)  # a string of the second block
    data[at] = 0xFF
    got = _read_all(bytes(data))
    letters = [(number, item) for number, item in got if isinstance(item, DeadLetter)]
    assert len(letters) == 1
    number, letter = letters[0]
    assert 1 < number < len(items) and letter.position == number
    assert letter.reason_code == CORRUPT_CONTAINER and "does not decode" in letter.reason
    assert letter.payload and letter.payload in data
    events = [(n, item) for n, item in got if not isinstance(item, DeadLetter)]
    assert events[-1] == (len(items), items[-1])  # numbering goes on as if all were read
    assert all(items[n - 1] == item for n, item in events)


def test_corrupt_payload_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(avro_serde, "_MAX_CORRUPT_PAYLOAD", 100)
    data = _container([PJ, ER, PV, CC] * 200)
    letter = _read_all(b"Obj\x01" + data[4:200])[-1][1]  # header cut short
    assert isinstance(letter, DeadLetter)
    assert letter.payload == data[:100]
    assert "first 100 bytes" in letter.reason


# ------------------------------------------------------------ codecs, deep schemas, limits

_CODECS = ["snappy", "zstandard", "bzip2", "xz", "lz4", "deflate"]


@pytest.mark.parametrize("codec", _CODECS)
def test_every_codec_reads_as_the_null_codec(codec: str) -> None:
    items = [PJ, ER, PV, CC] * 30
    assert _read_all(_container(items, codec)) == _read_all(_container(items))


def _header(meta: dict[str, bytes], sync: bytes = b"S" * 16) -> bytes:
    out = io.BytesIO()
    out.write(b"Obj\x01")
    fastavro.schemaless_writer(out, avro_serde._HEADER_REST, {"meta": meta, "sync": sync})
    return out.getvalue()


def _with_codec(data: bytes, codec: bytes) -> bytes:
    """`data` (a null-codec container) declaring another codec, blocks unchanged."""
    header = io.BytesIO(data[4:])
    meta = fastavro.schemaless_reader(header, avro_serde._HEADER_REST)
    assert isinstance(meta, dict)
    rest = data[4 + header.tell():]
    return _header({**meta["meta"], "avro.codec": codec}, meta["sync"]) + rest


def test_an_unknown_codec_is_named_not_called_corrupt() -> None:
    [(number, letter)] = _read_all(_with_codec(_container(SAMPLE), b"brotli"))
    assert number == 1 and isinstance(letter, DeadLetter)
    assert letter.reason_code == "unsupported_codec"
    assert "'brotli'" in letter.reason and "unknown" in letter.reason


def test_a_codec_whose_library_is_missing_is_named_not_called_corrupt(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(avro_serde._CODEC_MODULES, "snappy", "no_such_module.snappy")
    [(_, letter)] = _read_all(_container(SAMPLE, "snappy"))
    assert isinstance(letter, DeadLetter)
    assert letter.reason_code == "unsupported_codec"
    assert "'snappy'" in letter.reason and "no_such_module.snappy" in letter.reason


def _zigzag(value: int) -> bytes:
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _raw_container(schema: str, *blocks: tuple[int, bytes]) -> bytes:
    """A null-codec container of `schema` with hand-made blocks (count, data)."""
    sync = b"S" * 16
    body = b"".join(_zigzag(count) + _zigzag(len(data)) + data + sync for count, data in blocks)
    return _header({"avro.schema": schema.encode(), "avro.codec": b"null"}, sync) + body


def test_a_recursive_record_with_data_nested_10000_deep_is_refused_not_a_crash() -> None:
    # fastavro decodes by recursion in C: this datum overflowed the stack (exit 139).
    schema = '{"type": "record", "name": "L", "fields": [{"name": "next", "type": ["null", "L"]}]}'
    [(_, letter)] = _read_all(_raw_container(schema, (1, b"\x02" * 10_000 + b"\x00")))
    assert isinstance(letter, DeadLetter)
    assert letter.reason_code == "schema_too_deep"
    assert "'L' contains itself" in letter.reason


def _nested_arrays(depth: int) -> str:
    schema = '"string"'
    for _ in range(depth):
        schema = '{"type": "array", "items": ' + schema + "}"
    return schema


def _chained_records(length: int) -> str:
    """A union of records, each with a field of the record before it, by name."""
    records = ['{"type": "record", "name": "R0", "fields": []}']
    records += [json.dumps({"type": "record", "name": f"R{i}",
                            "fields": [{"name": "f", "type": f"R{i - 1}"}]})
                for i in range(1, length)]
    return "[" + ", ".join(records) + "]"


@pytest.mark.parametrize("schema", [_nested_arrays(10_000), _nested_arrays(101),
                                    _chained_records(200)], ids=["10000", "101", "chained"])
def test_a_writer_schema_nested_too_deep_is_refused(schema: str) -> None:
    [(_, letter)] = _read_all(_raw_container(schema))
    assert isinstance(letter, DeadLetter)
    assert letter.reason_code == "schema_too_deep"
    assert "deeper than 100 levels" in letter.reason


@pytest.mark.parametrize("schema", [_nested_arrays(99), _chained_records(99)])
def test_a_writer_schema_nested_within_the_bound_is_read(schema: str) -> None:
    assert _read_all(_raw_container(schema)) == []


def _junk_and_events(junk_per_block: int, blocks: int) -> bytes:
    """A deflate container of the event union and a `Junk` record: in each block, the
    sample events then `junk_per_block` one-byte junk records."""
    schema = [*(load_schema(name) for name in EVENT_SCHEMA_NAMES),
              {"type": "record", "name": "Junk", "fields": [{"name": "x", "type": "boolean"}]}]
    out = io.BytesIO()
    writer = fastavro.write.Writer(out, fastavro.parse_schema(schema), codec="deflate",
                                   sync_interval=1 << 30)
    for _ in range(blocks):
        for event in SAMPLE:
            writer.write((f"{NAMESPACE}.{event.TYPE}", event_to_record(event)))
        for _ in range(junk_per_block):
            writer.write(("Junk", {"x": False}))
        writer.flush()
    writer.flush()
    return out.getvalue()


def test_invalid_records_past_the_limit_are_counted_not_yielded() -> None:
    data = _junk_and_events(junk_per_block=500, blocks=3)
    limit = DeadLetterLimit(per_run=250, per_block=100)
    got = list(read_event_container(io.BytesIO(data), "test.avro", limit))
    events_read = [item for _, item in got if not isinstance(item, DeadLetter)]
    letters = [item for _, item in got if isinstance(item, DeadLetter)]
    assert events_read == SAMPLE * 3
    assert len(letters) == 250  # 100, 100, then the run's last 50
    assert limit.dropped == 3 * 500 - 250
    assert dict(limit.dropped_by_block) == {1: 400, 2: 400, 3: 400}
    assert limit.dropped_past_run == 50
    assert dict(limit.dropped_by_reason) == {"unknown_type": 1250}
