"""Avro on the wire: one record per Kafka message.

Default framing is the Avro specification's single-object encoding: the marker
`C3 01`, the writer schema's 8-byte CRC-64-AVRO fingerprint (little-endian), then
the Avro binary datum. A reader finds the writer's schema among `schemas/`
(current and every released version) by that fingerprint, with no registry, and
resolves it into the current schema.

For platforms that run a Confluent Schema Registry, `ConfluentFraming` writes and
reads its framing: a zero magic byte and the 4-byte big-endian schema id. It takes
the id <-> schema mapping from a `SchemaIds` resolver (a dict in tests, the
registry's REST API in production). A registry that cannot answer is a transient
fault (`RegistryUnavailable`), never a reason to dead-letter a record; only an id the
registry says does not exist is one (`unknown_schema_id`). The worker resolves a
batch's ids off the event loop before decoding it (`await_schemas`).
"""

from __future__ import annotations

import asyncio
import io
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from streams.errors import InvalidEvent, RegistryUnavailable, SchemaError
from streams.model.events import Event
from streams.model.findings import Amendment, DeadLetter, Finding
from streams.model.validate import Validator, validator_for
from streams.privacy.pseudonymise import Pseudonymiser
from streams.privacy.sealed import SealedAmendment, SealedFinding
from streams.serde import avro
from streams.serde.avro import (
    EVENT_SCHEMA_NAMES,
    NAMESPACE,
    event_to_record,
    load_schema,
    record_to_event,
    schema_history,
    strip_timestamp_millis,
)
from streams.serde.datum_codec import DatumError, Plan, TrailingBytes, plan_for
from streams.serde.finding_writer import FindingWriter

__all__ = [
    "SINGLE_OBJECT_MARKER",
    "ConfluentFraming",
    "DictSchemaIds",
    "RegistrySchemaIds",
    "SchemaIds",
    "SingleObjectFraming",
    "WireFormat",
    "await_schemas",
    "decode_output",
    "encode_finding",
    "encode_output",
    "finding_writer",
    "fingerprint_of",
    "wire_format",
]

SINGLE_OBJECT_MARKER = b"\xc3\x01"
_CONFLUENT_MAGIC = 0


def fingerprint_of(schema: Mapping[str, Any] | list[Any]) -> bytes:
    """The CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form, as 8 bytes LE."""
    canonical = to_parsing_canonical_form(dict(schema) if isinstance(schema, Mapping) else schema)
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


@dataclass(frozen=True, slots=True)
class _Known:
    """A writer schema this build can read, ready for fastavro."""

    name: str
    writer: Any  # parsed, timestamps as plain longs
    reader: Any  # the current schema of `name`, parsed the same way

    @property
    def plan(self) -> Plan | None:
        """The compiled reader of the current schema; None for another writer schema
        (fastavro resolves it into the current one)."""
        return _event_plan(self.name) if self.writer is self.reader else None


def _known(name: str, schema: Mapping[str, Any]) -> _Known:
    """How to read datums written with `schema`: the current schema of `name` is itself
    (read as it is, no resolution), an older one is resolved into it."""
    current = _current(name)
    if fingerprint_of(schema) == _current_fingerprint(name):
        return _Known(name, current, current)
    return _Known(name, fastavro.parse_schema(strip_timestamp_millis(dict(schema))), current)


@cache
def _current(name: str) -> Any:
    return fastavro.parse_schema(strip_timestamp_millis(load_schema(name)))


@cache
def _plan(name: str) -> Plan:
    return plan_for(_current(name))


@cache
def _values_plan(name: str) -> Plan:
    """The current schema's datums written from (and read as) their field values."""
    return plan_for(_current(name), as_values=True)


@cache
def _event_plan(name: str) -> Plan:
    """The current schema's datums read as the list of their field values, which the
    event's validator takes by position (its fields are the schema's, in its order)."""
    schema = _current(name)
    if [field["name"] for field in schema["fields"]] != _validator(name).names:
        raise SchemaError(f"{name}: the schema's fields are not the validator's")
    return _values_plan(name)


@cache
def _validator(name: str) -> Validator:
    validator = validator_for(name)
    if validator is None:
        raise SchemaError(f"{name} is not an event of the contract")
    return validator


@cache
def _known_by_fingerprint() -> dict[bytes, _Known]:
    known: dict[bytes, _Known] = {}
    for name in EVENT_SCHEMA_NAMES:
        versions = [schema for _, schema in schema_history(name)] + [load_schema(name)]
        for schema in versions:
            known[fingerprint_of(schema)] = _known(name, schema)
    return known


@cache
def _current_fingerprint(name: str) -> bytes:
    return fingerprint_of(load_schema(name))


def _decode_datum(payload: bytes, offset: int, known: _Known) -> Event:
    plan = known.plan
    if plan is not None:
        try:
            values = plan.decode(payload, offset)
        except TrailingBytes as exc:
            raise InvalidEvent("trailing_bytes", f"{exc.count} bytes follow the Avro datum "
                               f"of {known.name}") from None
        except DatumError as exc:
            raise InvalidEvent("truncated_avro", f"the Avro datum of {known.name} is "
                               f"truncated or corrupt ({exc})") from None
        return _validator(known.name).validate_values(values)
    # another writer schema: fastavro resolves it into the current one
    stream = io.BytesIO(payload)
    stream.seek(offset)
    try:
        record = fastavro.schemaless_reader(stream, known.writer, known.reader)
    except (EOFError, StopIteration, IndexError, ValueError, UnicodeDecodeError, OverflowError,
            struct.error) as exc:
        raise InvalidEvent("truncated_avro",
                           f"the Avro datum of {known.name} is truncated or corrupt "
                           f"({type(exc).__name__})") from None
    except fastavro.read.SchemaResolutionError:
        raise InvalidEvent("schema_mismatch",
                           f"the writer schema of {known.name} cannot be read as the current "
                           "one") from None
    if stream.tell() != len(payload):
        raise InvalidEvent("trailing_bytes", f"{len(payload) - stream.tell()} bytes follow the "
                           f"Avro datum of {known.name}")
    if not isinstance(record, Mapping):
        raise InvalidEvent("not_an_object", f"the Avro datum of {known.name} is not a record")
    return record_to_event(known.name, record)


def _encode_datum(event: Event) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, _current(event.TYPE), event_to_record(event))
    return out.getvalue()


class WireFormat(Protocol):
    def encode(self, event: Event) -> bytes: ...
    def decode(self, payload: bytes) -> Event: ...


class SingleObjectFraming:
    """The Avro specification's single-object encoding (the default)."""

    name = "single-object"

    def encode(self, event: Event) -> bytes:
        return SINGLE_OBJECT_MARKER + _current_fingerprint(event.TYPE) + _encode_datum(event)

    def decode(self, payload: bytes) -> Event:
        """The event in `payload`; raises InvalidEvent with a bounded reason code."""
        if type(payload) is not bytes:
            payload = bytes(payload)
        if payload[:2] != SINGLE_OBJECT_MARKER:
            raise InvalidEvent("bad_marker", "the message does not start with the Avro "
                               "single-object marker C3 01")
        if len(payload) < 10:
            raise InvalidEvent("truncated_avro", "the message ends inside the schema fingerprint")
        known = _known_by_fingerprint().get(payload[2:10])
        if known is None:
            raise InvalidEvent("unknown_fingerprint", "the writer schema's fingerprint "
                               f"{payload[2:10].hex()} is not among the known schemas")
        return _decode_datum(payload, 10, known)


class SchemaIds(Protocol):
    """Where Confluent schema ids come from (a registry, or a dict in tests)."""

    def id_for(self, subject: str, schema: Mapping[str, Any]) -> int: ...
    def schema_for(self, schema_id: int) -> Mapping[str, Any] | None: ...


class DictSchemaIds:
    """Schema ids kept in memory: for tests and for pinned deployments."""

    def __init__(self) -> None:
        self._by_id: dict[int, Mapping[str, Any]] = {}
        self._by_fingerprint: dict[bytes, int] = {}

    def id_for(self, subject: str, schema: Mapping[str, Any]) -> int:
        key = fingerprint_of(schema)
        if key not in self._by_fingerprint:
            schema_id = len(self._by_id) + 1
            self._by_id[schema_id] = schema
            self._by_fingerprint[key] = schema_id
        return self._by_fingerprint[key]

    def schema_for(self, schema_id: int) -> Mapping[str, Any] | None:
        return self._by_id.get(schema_id)


class ConfluentFraming:
    """Confluent Schema Registry framing: magic byte 0, 4-byte big-endian id, Avro binary.

    `subject_for` names the subject a schema is registered under (see subjects.py; the
    command line's default is Confluent's TopicNameStrategy, `<topic>-value`); without
    it, RecordNameStrategy: the record's full name, whatever the topic.
    """

    name = "confluent"

    def __init__(self, ids: SchemaIds,
                 subject_for: Callable[[str], str] | None = None) -> None:
        self._ids = ids
        self._subject_for = subject_for or (lambda name: f"{NAMESPACE}.{name}")
        self._encode_ids: dict[str, int] = {}
        self._decode_known: dict[int, _Known | None] = {}

    def encode(self, event: Event) -> bytes:
        schema_id = self._encode_ids.get(event.TYPE)
        if schema_id is None:
            schema_id = self._ids.id_for(self._subject_for(event.TYPE), load_schema(event.TYPE))
            self._encode_ids[event.TYPE] = schema_id
        return struct.pack(">bI", _CONFLUENT_MAGIC, schema_id) + _encode_datum(event)

    def decode(self, payload: bytes) -> Event:
        if type(payload) is not bytes:
            payload = bytes(payload)
        if len(payload) < 5 or payload[0] != _CONFLUENT_MAGIC:
            raise InvalidEvent("bad_marker", "the message does not start with the Confluent "
                               "magic byte and a 4-byte schema id")
        (schema_id,) = struct.unpack_from(">I", payload, 1)
        if schema_id not in self._decode_known:
            self._decode_known[schema_id] = self._resolve(schema_id)
        known = self._decode_known[schema_id]
        if known is None:
            raise InvalidEvent("unknown_schema_id",
                               f"schema id {schema_id} is not an event schema known here")
        return _decode_datum(payload, 5, known)

    async def fetch_schemas(self, payloads: Iterable[bytes]) -> None:
        """Resolve the schema ids of `payloads` not resolved yet, in a thread (the
        registry client blocks), so that decoding them never waits on the registry.
        RegistryUnavailable if it cannot answer; an id it did not answer stays unresolved."""
        for schema_id in self._unresolved_ids(payloads):
            self._decode_known[schema_id] = await asyncio.to_thread(self._resolve, schema_id)

    def _unresolved_ids(self, payloads: Iterable[bytes]) -> list[int]:
        ids: dict[int, None] = {}  # in order of first use, once each
        for payload in payloads:
            if len(payload) >= 5 and payload[0] == _CONFLUENT_MAGIC:
                (schema_id,) = struct.unpack_from(">I", payload, 1)
                if schema_id not in self._decode_known:
                    ids[schema_id] = None
        return list(ids)

    def _resolve(self, schema_id: int) -> _Known | None:
        """The event schema of `schema_id`; None (its records are dead letters) for none,
        or for one that is not an event record schema fastavro can use. Only
        RegistryUnavailable (try again later) propagates."""
        schema = self._ids.schema_for(schema_id)
        if not isinstance(schema, Mapping):
            return None
        name = str(schema.get("name", "")).rsplit(".", 1)[-1]
        if name not in EVENT_SCHEMA_NAMES:
            return None
        try:
            return _known(name, schema)
        except Exception:  # an unknown type name, a malformed field: not a usable schema
            return None


# -- outputs: findings, amendments and dead letters on their topics ----------------------

_OUTPUT_NAMES = ("Finding", "Amendment", "DeadLetter")


@cache
def _outputs() -> dict[bytes, _Known]:
    """Every released version of the output schemas, by fingerprint: a finding written
    before its schema gained a field still reads (with that field's default)."""
    known: dict[bytes, _Known] = {}
    for name in _OUTPUT_NAMES:
        for _, schema in schema_history(name):
            known[fingerprint_of(schema)] = _Known(
                name, fastavro.parse_schema(strip_timestamp_millis(schema)), _current(name))
        known[_current_fingerprint(name)] = _Known(name, _current(name), _current(name))
    return known


@cache
def finding_writer() -> FindingWriter:
    """The writer of `encode_finding`, built once (the worker builds it at start, so a
    schema it cannot write stops the worker before it reads anything)."""
    return FindingWriter(_current("Finding"))


def encode_finding(finding: Finding, pseudonymiser: Pseudonymiser) -> bytes:
    """`encode_output(pseudonymiser.finding(finding))`, byte for byte, written without the
    sealed copy and its dicts (`finding_writer`): the worker's path for its findings."""
    return (SINGLE_OBJECT_MARKER + _current_fingerprint("Finding")
            + finding_writer().encode(finding, pseudonymiser))


def encode_output(item: SealedFinding | SealedAmendment | DeadLetter) -> bytes:
    """A sealed finding, sealed amendment or dead letter in single-object encoding."""
    if isinstance(item, SealedFinding):
        return (SINGLE_OBJECT_MARKER + _current_fingerprint("Finding")
                + _values_plan("Finding").encode(avro.finding_values(item)))
    if isinstance(item, SealedAmendment):
        return (SINGLE_OBJECT_MARKER + _current_fingerprint("Amendment")
                + _values_plan("Amendment").encode(avro.amendment_values(item)))
    return (SINGLE_OBJECT_MARKER + _current_fingerprint("DeadLetter")
            + _plan("DeadLetter").encode(avro.dead_letter_to_record(item)))


def decode_output(payload: bytes) -> Finding | Amendment | DeadLetter:
    """The finding, amendment or dead letter in `payload`; raises InvalidEvent."""
    if payload[:2] != SINGLE_OBJECT_MARKER or len(payload) < 10:
        raise InvalidEvent("bad_marker", "not an Avro single-object message")
    known = _outputs().get(payload[2:10])
    if known is None:
        raise InvalidEvent("unknown_fingerprint", "not a finding, amendment or dead letter")
    name = known.name
    stream = io.BytesIO(payload)
    stream.seek(10)
    try:
        if known.writer is known.reader:
            record = fastavro.schemaless_reader(stream, known.writer, None)
        else:
            record = fastavro.schemaless_reader(stream, known.writer, known.reader)
    except (EOFError, ValueError, UnicodeDecodeError, IndexError, OverflowError) as exc:
        raise InvalidEvent("truncated_avro", f"truncated {name} ({type(exc).__name__})") from None
    if not isinstance(record, Mapping):
        raise InvalidEvent("not_an_object", f"the {name} datum is not a record")
    if name == "Finding":
        return avro.record_to_finding(record)
    if name == "Amendment":
        return avro.record_to_amendment(record)
    return avro.record_to_dead_letter(record)


class RegistrySchemaIds:
    """Schema ids from a Confluent Schema Registry's REST API (the client side only).

    `id_for` registers the schema under its subject (the registry returns the existing
    id when it is already there); `schema_for` fetches a writer schema by id. Both are
    cached for the life of the process.
    """

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self._url = url.rstrip("/")
        self._timeout = timeout_s
        self._ids: dict[tuple[str, bytes], int] = {}
        self._schemas: dict[int, Mapping[str, Any] | None] = {}

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        import json
        import urllib.error
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        try:
            request = urllib.request.Request(  # ValueError: not a URL (caught below)
                self._url + path, data=data, method=method,
                headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # no such schema id or subject (Confluent error 40403, 40401)
                return None
            raise RegistryUnavailable(f"the schema registry answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:  # OSError: timeouts too
            raise RegistryUnavailable(
                f"the schema registry is unreachable ({type(exc).__name__})") from exc

    def id_for(self, subject: str, schema: Mapping[str, Any]) -> int:
        import json
        from urllib.parse import quote

        key = (subject, fingerprint_of(schema))
        if key not in self._ids:
            answer = self._call("POST", f"/subjects/{quote(subject, safe='')}/versions",
                                {"schema": json.dumps(schema)})
            if not answer or "id" not in answer:
                raise InvalidEvent("registry_error", "the registry did not return a schema id")
            self._ids[key] = int(answer["id"])
        return self._ids[key]

    def schema_for(self, schema_id: int) -> Mapping[str, Any] | None:
        """The registry's schema of `schema_id`; None when there is none, or when it is
        not an Avro record schema that is safe to read (JSON, nested too deep, a record
        that contains itself, another schema type): its records are then dead letters."""
        from streams.serde.schema_depth import check_schema_depth

        if schema_id not in self._schemas:
            answer = self._call("GET", f"/schemas/ids/{schema_id}")
            schema: Any = None
            if isinstance(answer, dict) and answer.get("schemaType", "AVRO") == "AVRO":
                try:
                    schema = check_schema_depth(str(answer.get("schema", "")))
                except ValueError:  # not JSON, or UnsafeSchema
                    schema = None
            self._schemas[schema_id] = schema if isinstance(schema, Mapping) else None
        return self._schemas[schema_id]


async def await_schemas(framing: WireFormat, payloads: Iterable[bytes],
                        on_unavailable: Callable[[RegistryUnavailable, float], None],
                        first_delay_s: float = 0.5, max_delay_s: float = 30.0) -> None:
    """Return once `framing` can decode `payloads` without asking a registry.

    While the registry cannot answer, wait and ask again, `first_delay_s` doubling up to
    `max_delay_s`; `on_unavailable(error, delay)` is called before each wait. A framing
    without a registry returns at once (`payloads` is then not read).
    """
    if not isinstance(framing, ConfluentFraming):
        return
    pending = list(payloads)
    delay = first_delay_s
    while True:
        try:
            await framing.fetch_schemas(pending)
            return
        except RegistryUnavailable as error:
            on_unavailable(error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)


def wire_format(name: str, registry_url: str | None = None,
                subject_name_strategy: str = "record",
                topics: Mapping[str, str] | None = None) -> WireFormat:
    """`single-object` (default) or `confluent` (needs the registry's URL; its subjects
    named by `subject_name_strategy` from `topics`, event type -> input topic: see
    subjects.py)."""
    if name == "single-object":
        return SingleObjectFraming()
    if name == "confluent":
        if not registry_url:
            from streams.errors import ConfigError

            raise ConfigError("the confluent wire format needs --schema-registry URL")
        from streams.serde.subjects import subject_namer

        return ConfluentFraming(RegistrySchemaIds(registry_url),
                                subject_namer(subject_name_strategy, topics or {}))
    from streams.errors import ConfigError

    raise ConfigError(f"unknown wire format {name!r}")
