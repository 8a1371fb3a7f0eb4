"""A Schema Registry outage is waited out, never a reason to dead-letter (issue 14, item 5).

A local HTTP server plays the registry: it answers from a script of responses, one per
request (the last one repeats).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from streams.errors import InvalidEvent, RegistryUnavailable
from streams.model.events import FeatureToggled
from streams.serde.avro import load_schema
from streams.serde.wire import ConfluentFraming, DictSchemaIds, RegistrySchemaIds, await_schemas

SCHEMA_ID = 7
NOT_FOUND = (404, {"error_code": 40403, "message": "Schema not found"})


class FakeRegistry:
    """`responses`: (status, JSON body) per request, the last one repeated. The first
    request waits for `gate` (at most `gate_timeout_s`) when `hold_first` is set."""

    def __init__(self, responses: list[tuple[int, Any]], hold_first: bool = False) -> None:
        self.responses = responses
        self.paths: list[str] = []
        self.hold_first = hold_first
        self.gate = threading.Event()
        self.gate_opened_in_time: bool | None = None
        self.gate_timeout_s = 2.0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _answer(self, path: str) -> tuple[int, Any]:
        if not self.paths and self.hold_first:
            self.gate_opened_in_time = self.gate.wait(self.gate_timeout_s)
        self.paths.append(path)
        return self.responses[min(len(self.paths), len(self.responses)) - 1]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = registry._answer(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[FakeRegistry] = []

    def start(responses: list[tuple[int, Any]], hold_first: bool = False) -> FakeRegistry:
        registry = FakeRegistry(responses, hold_first)
        threading.Thread(target=registry.server.serve_forever, args=(0.01,),
                         daemon=True).start()
        started.append(registry)
        return registry

    yield start
    for registry in started:
        registry.gate.set()
        registry.server.shutdown()
        registry.server.server_close()


def event() -> FeatureToggled:
    return FeatureToggled(event_id="7d9f4a52-6c1e-4b8e-9a51-3f2d1c0b9e8a",
                          occurred_at=1_700_000_000_000, account_id="account-1",
                          meeting_id=None, provider="notetaker", enabled=True,
                          actor_id="host-1")


def confluent_payload() -> bytes:
    """The event as a producer with schema id SCHEMA_ID writes it."""
    body = ConfluentFraming(DictSchemaIds()).encode(event())[5:]
    return struct.pack(">bI", 0, SCHEMA_ID) + body


SCHEMA_FOUND = (200, {"schema": json.dumps(load_schema("FeatureToggled"))})


def test_a_registry_outage_is_waited_out_without_blocking_the_event_loop(serve: Any) -> None:
    registry = serve([(503, {"error_code": 50301, "message": "unavailable"})] * 2
                     + [SCHEMA_FOUND], hold_first=True)
    framing = ConfluentFraming(RegistrySchemaIds(registry.url, timeout_s=5))
    waits: list[float] = []

    async def main() -> None:
        async def open_gate() -> None:  # runs only if the loop is free during the fetch
            registry.gate.set()

        opener = asyncio.ensure_future(open_gate())
        await await_schemas(framing, [confluent_payload()],
                            lambda error, delay: waits.append(delay), first_delay_s=0.001)
        await opener

    asyncio.run(main())
    assert registry.gate_opened_in_time is True
    assert waits == [0.001, 0.002]
    assert registry.paths == [f"/schemas/ids/{SCHEMA_ID}"] * 3
    assert framing.decode(confluent_payload()) == event()


def test_the_backoff_is_bounded(serve: Any) -> None:
    registry = serve([(500, {})] * 6 + [SCHEMA_FOUND])
    framing = ConfluentFraming(RegistrySchemaIds(registry.url, timeout_s=5))
    waits: list[float] = []
    asyncio.run(await_schemas(framing, [confluent_payload()],
                              lambda error, delay: waits.append(delay),
                              first_delay_s=0.001, max_delay_s=0.004))
    assert waits == [0.001, 0.002, 0.004, 0.004, 0.004, 0.004]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_server_error_is_registry_unavailable_not_a_poison_record(serve: Any,
                                                                     status: int) -> None:
    registry = serve([(status, {"error_code": status * 100, "message": "down"})])
    framing = ConfluentFraming(RegistrySchemaIds(registry.url))
    with pytest.raises(RegistryUnavailable, match=f"HTTP {status}") as info:
        framing.decode(confluent_payload())
    assert not isinstance(info.value, InvalidEvent)  # never a dead letter


def test_connection_refused_is_registry_unavailable() -> None:
    framing = ConfluentFraming(RegistrySchemaIds(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(RegistryUnavailable, match="unreachable") as info:
        framing.decode(confluent_payload())
    assert not isinstance(info.value, InvalidEvent)
    with pytest.raises(RegistryUnavailable):
        asyncio.run(ConfluentFraming(RegistrySchemaIds(
            f"http://127.0.0.1:{free_port()}")).fetch_schemas([confluent_payload()]))


def test_a_timeout_is_registry_unavailable(serve: Any) -> None:
    registry = serve([SCHEMA_FOUND], hold_first=True)  # the gate opens only at teardown
    framing = ConfluentFraming(RegistrySchemaIds(registry.url, timeout_s=0.05))
    with pytest.raises(RegistryUnavailable, match="unreachable") as info:
        framing.decode(confluent_payload())
    assert not isinstance(info.value, InvalidEvent)
    registry.gate.set()
    # nothing was cached for the id: once the registry answers, the record decodes
    assert framing.decode(confluent_payload()) == event()


def _is_a_dead_letter_at_once(registry: FakeRegistry) -> None:
    """The registry's answer for SCHEMA_ID makes the record a dead letter (no retry)."""
    framing = ConfluentFraming(RegistrySchemaIds(registry.url))
    waits: list[float] = []
    asyncio.run(await_schemas(framing, [confluent_payload()],
                              lambda error, delay: waits.append(delay)))
    assert waits == []
    with pytest.raises(InvalidEvent) as info:
        framing.decode(confluent_payload())
    assert info.value.code == "unknown_schema_id"


@pytest.mark.parametrize("answer", [NOT_FOUND, (404, {})], ids=["40403", "plain-404"])
def test_an_id_the_registry_does_not_know_is_a_dead_letter(serve: Any,
                                                             answer: tuple[int, Any]) -> None:
    registry = serve([answer])
    _is_a_dead_letter_at_once(registry)
    assert len(registry.paths) == 1  # the answer is kept


_DEEP = {"type": "record", "name": "FeatureToggled", "fields": [
    {"name": "x", "type": "string"}]}
for _ in range(150):
    _DEEP = {"type": "record", "name": "FeatureToggled", "fields": [
        {"name": "x", "type": {"type": "array", "items": _DEEP["fields"][0]["type"]}}]}


@pytest.mark.parametrize("answer", [
    (200, {"schema": json.dumps(["null", "string"])}),  # a union, not a record
    (200, {"schema": json.dumps({"type": "record", "name": "FeatureToggled",
                                 "fields": [{"name": "x", "type": "NoSuchType"}]})}),
    (200, {"schemaType": "PROTOBUF", "schema": "syntax = \"proto3\";"}),
    (200, {"schema": "not json"}),
    (200, {"schema": json.dumps(_DEEP)}),
    (200, ["not", "an", "object"]),
], ids=["union", "unknown-type", "protobuf", "not-json", "too-deep", "list-answer"])
def test_a_schema_that_is_not_a_usable_event_schema_is_a_dead_letter(
        serve: Any, answer: tuple[int, Any]) -> None:
    # Resolved ahead of decoding now, outside the decoder's own guard: an unusable schema
    # once raised there, and the worker, stopping on a failed batch, read it again for ever.
    registry = serve([answer])
    _is_a_dead_letter_at_once(registry)
