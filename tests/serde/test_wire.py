"""Kafka message framing: Avro single-object encoding (default) and Confluent framing."""

from __future__ import annotations

import copy
import io
import struct
from typing import Any
from unittest.mock import patch

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.errors import InvalidEvent
from streams.model.events import ConsentChanged, Event
from streams.serde import wire
from streams.serde.avro import event_to_record, load_schema
from streams.serde.wire import (
    SINGLE_OBJECT_MARKER,
    ConfluentFraming,
    DictSchemaIds,
    SingleObjectFraming,
    fingerprint_of,
)
from tests.hypothesis_profiles import examples
from tests.strategies import event_of, events

SINGLE = SingleObjectFraming()


@settings(max_examples=examples(300), deadline=None)
@given(events())
def test_single_object_round_trip(event: Event) -> None:
    payload = SINGLE.encode(event)
    assert payload[:2] == SINGLE_OBJECT_MARKER
    assert payload[2:10] == fingerprint_of(load_schema(event.TYPE))
    assert SINGLE.decode(payload) == event


@settings(max_examples=examples(200), deadline=None)
@given(events())
def test_confluent_round_trip(event: Event) -> None:
    framing = ConfluentFraming(DictSchemaIds())
    payload = framing.encode(event)
    magic, schema_id = struct.unpack_from(">bI", payload)
    assert magic == 0
    assert schema_id >= 1
    assert framing.decode(payload) == event


def test_fingerprint_is_the_avro_spec_crc64() -> None:
    # CRC-64-AVRO of the canonical form "int" (the spec's reference algorithm), little-endian.
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in b'"int"':
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    assert fingerprint_of("int") == fp.to_bytes(8, "little")  # type: ignore[arg-type]


def test_a_single_object_written_by_fastavro_itself_decodes() -> None:
    # Independent writer: fastavro's schemaless writer plus the framing by hand.
    schema = load_schema("FeatureToggled")
    record = {"event_id": "t1", "occurred_at": 1_772_359_200_000, "account_id": "a",
              "meeting_id": None, "provider": "p", "enabled": True, "actor_id": "h"}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    payload = SINGLE_OBJECT_MARKER + fingerprint_of(schema) + body.getvalue()
    assert SINGLE.decode(payload).event_id == "t1"


@pytest.mark.parametrize(("payload", "code"), [
    (b"", "bad_marker"),
    (b"{\"type\": \"json\"}", "bad_marker"),
    (SINGLE_OBJECT_MARKER + b"\x00" * 4, "truncated_avro"),
    (SINGLE_OBJECT_MARKER + b"\x01" * 8 + b"\x02\x02", "unknown_fingerprint"),
])
def test_poison_messages_are_invalid_events(payload: bytes, code: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        SINGLE.decode(payload)
    assert info.value.code == code


@given(event_of(ConsentChanged), st.data())
def test_truncated_and_padded_datums_are_rejected(event: ConsentChanged, data: Any) -> None:
    payload = SINGLE.encode(event)
    cut = data.draw(st.integers(min_value=10, max_value=len(payload) - 1))
    with pytest.raises(InvalidEvent) as info:
        SINGLE.decode(payload[:cut])
    assert info.value.code in {"truncated_avro", "invalid_field", "missing_field"}
    with pytest.raises(InvalidEvent) as info:
        SINGLE.decode(payload + b"\x00")
    assert info.value.code == "trailing_bytes"


def test_schema_valid_but_invalid_event_is_rejected() -> None:
    schema = load_schema("FeatureToggled")
    record = {"event_id": "", "occurred_at": 1, "account_id": "a", "meeting_id": None,
              "provider": "p", "enabled": True, "actor_id": "h"}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    with pytest.raises(InvalidEvent) as info:
        SINGLE.decode(SINGLE_OBJECT_MARKER + fingerprint_of(schema) + body.getvalue())
    assert info.value.code in {"missing_field", "invalid_field"}


@settings(max_examples=examples(500), deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_never_escape_as_other_errors(payload: bytes) -> None:
    for framing in (SINGLE, ConfluentFraming(DictSchemaIds())):
        try:
            framing.decode(SINGLE_OBJECT_MARKER + payload[:8] + payload[8:])
            framing.decode(payload)
        except InvalidEvent:
            pass


def test_an_older_writer_schema_is_resolved_into_the_current_one() -> None:
    """A producer still on an older ConsentChanged (without `jurisdiction`) is readable."""
    current = load_schema("ConsentChanged")
    older = copy.deepcopy(current)
    older["fields"] = [f for f in older["fields"] if f["name"] != "jurisdiction"]
    ids = DictSchemaIds()
    old_id = ids.id_for("old", older)
    record = event_to_record(ConsentChanged(
        "c1", 5, "u1", "cr1", "third_party_sharing", None, "GRANTED", ("user.name",),
        None, "v1", None))
    del record["jurisdiction"]
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(older), record)
    decoded = ConfluentFraming(ids).decode(struct.pack(">bI", 0, old_id) + body.getvalue())
    assert isinstance(decoded, ConsentChanged)
    assert decoded.jurisdiction is None
    assert decoded.notice_version == "v1"


@settings(max_examples=examples(50), deadline=None)
@given(events())
def test_the_current_schema_is_read_by_the_plan_without_resolution(event: Event) -> None:
    """Both framings: a payload of the current schema never reaches fastavro's reader (its
    schema resolution cost more than the whole decode); an older one still does (above)."""
    ids = DictSchemaIds()
    schema_id = ids.id_for(event.TYPE, load_schema(event.TYPE))
    body = SINGLE.encode(event)[10:]
    with patch.object(wire.fastavro, "schemaless_reader", side_effect=AssertionError):
        assert SINGLE.decode(SINGLE.encode(event)) == event
        assert ConfluentFraming(ids).decode(struct.pack(">bI", 0, schema_id) + body) == event


def test_confluent_unknown_schema_id() -> None:
    with pytest.raises(InvalidEvent) as info:
        ConfluentFraming(DictSchemaIds()).decode(struct.pack(">bI", 0, 42) + b"\x00")
    assert info.value.code == "unknown_schema_id"


@settings(max_examples=examples(60), deadline=None)
@given(events(), events())
def test_an_amendment_round_trips_whatever_its_late_event_and_evidence(
        late: Event, cited: Event) -> None:
    # A late event with an array field (consent, request, match, view) crashed the
    # worker's encoder (fastavro could not place the tagged map inside the union).
    from streams.model.findings import Amendment
    from streams.privacy.pseudonymise import Pseudonymiser
    from streams.serde.wire import decode_output, encode_output

    amendment = Amendment(
        amendment_id="a" * 64, kind="RETRACTED", finding_id="f" * 64,
        rule="enrichment-without-consent", subject_id="u-1",
        trigger_event_id=cited.event_id, late_event_id=late.event_id,
        evidence_event_ids=(cited.event_id,), occurred_at=cited.occurred_at,
        detected_at=cited.occurred_at + 1, explanation="retracted",
        evidence=(cited,), late_event=late)
    back = decode_output(encode_output(Pseudonymiser(b"k" * 32).amendment(amendment)))
    assert isinstance(back, Amendment)
    assert back.late_event is not None and back.late_event_id == late.event_id
    assert dict(back.late_event)["event_id"] == late.event_id
    assert [dict(item)["type"] for item in back.evidence] == [type(cited).__name__]


@pytest.mark.parametrize(("strategy", "subject"), [
    ("topic", "consentwatch.events.consent-changed-value"),
    ("record", "io.consentwatch.events.ConsentChanged"),
    ("topic-record", "consentwatch.events.consent-changed-io.consentwatch.events.ConsentChanged"),
])
def test_schemas_are_registered_under_the_strategys_subject(strategy: str, subject: str) -> None:
    from streams.kafka.topics import TopicNames
    from streams.serde.subjects import subject_namer

    class Recording(DictSchemaIds):
        def __init__(self) -> None:
            super().__init__()
            self.subjects: list[str] = []

        def id_for(self, subject: str, schema: Any) -> int:
            self.subjects.append(subject)
            return super().id_for(subject, schema)

    ids = Recording()
    framing = ConfluentFraming(ids, subject_namer(strategy, TopicNames().inputs))
    event = ConsentChanged(event_id="c1", occurred_at=0, subject_id="u", consent_record_id="r",
                           data_use="third_party_sharing", provider=None, status="GRANTED",
                           data_categories=("user.name",), expires_at=None,
                           notice_version=None, jurisdiction=None)
    assert framing.decode(framing.encode(event)) == event
    assert ids.subjects == [subject]


def test_the_command_line_names_subjects_as_confluents_serialisers_do() -> None:
    from streams.cli.kafka_cmds import produce

    [option] = [p for p in produce.params if p.name == "subject_name_strategy"]
    assert option.default == "topic"
