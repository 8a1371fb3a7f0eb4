"""The command line: usage errors, invalid records, dead letters, and garbage input."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.model.findings import DeadLetter
from streams.replay import replay_records
from streams.serde.jsonl import read_jsonl
from tests.conftest import EXAMPLES_DIR, run_cli

SEED = EXAMPLES_DIR / "seed-scenario" / "events.jsonl"


def _one_line(stderr: bytes) -> str:
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


def test_missing_file_is_a_one_line_usage_error() -> None:
    result = run_cli("replay", "/nonexistent/events.jsonl")
    assert result.returncode == 2
    assert "does not exist" in _one_line(result.stderr)


def test_unknown_option_is_a_one_line_usage_error() -> None:
    result = run_cli("replay", str(SEED), "--no-such-option")
    assert result.returncode == 2
    assert "--no-such-option" in _one_line(result.stderr)


def test_bad_parameter_value_is_a_one_line_usage_error() -> None:
    result = run_cli("replay", str(SEED), "--allowed-lateness", "-5")
    assert result.returncode == 2
    _one_line(result.stderr)


def test_unknown_command_is_a_one_line_usage_error() -> None:
    result = run_cli("frobnicate")
    assert result.returncode == 2
    _one_line(result.stderr)


def test_unwritable_output_is_a_one_line_error(tmp_path: Path) -> None:
    result = run_cli("replay", str(SEED), "--out", str(tmp_path / "missing-dir" / "out.jsonl"))
    assert result.returncode == 2
    assert "cannot open" in _one_line(result.stderr)


def test_invalid_records_are_reported_dead_lettered_and_the_run_goes_on(tmp_path: Path) -> None:
    good = SEED.read_bytes().splitlines()
    bad_json = b'{"type": "ParticipantJoined", '
    unknown = b'{"type": "SomethingElse", "event_id": "x"}'
    missing = b'{"type": "ConsentChanged", "event_id": "c1", "occurred_at": 1}'
    naive_time = (b'{"type": "FeatureToggled", "event_id": "t1", "occurred_at": '
                  b'"2026-03-01T10:00:00", "account_id": "a", "provider": "p", '
                  b'"enabled": true, "actor_id": "h"}')
    lines = [good[0], bad_json, good[1], unknown, good[2], missing, naive_time, good[3]]
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    dead = tmp_path / "dead.jsonl"
    out = tmp_path / "findings.jsonl"
    result = run_cli("replay", str(events), "--out", str(out), "--dead-letter", str(dead))
    assert result.returncode == 1
    stderr = result.stderr.decode()
    for number, code in ((2, "not_json"), (4, "unknown_type"), (6, "missing_field"),
                         (7, "invalid_field")):
        assert f"line {number}: invalid event ({code})" in stderr
    letters = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    assert [(d["position"], d["reason_code"]) for d in letters] == [
        (2, "not_json"), (4, "unknown_type"), (6, "missing_field"), (7, "invalid_field")]
    assert [base64.b64decode(d["payload"]) for d in letters] == [bad_json, unknown, missing,
                                                                 naive_time]
    # the valid events around the bad ones still give the seed scenario's findings
    expected = (SEED.parent / "expected.jsonl").read_bytes().splitlines()
    assert len(out.read_bytes().splitlines()) == len(expected)


def test_rfc3339_timestamps_are_accepted(tmp_path: Path) -> None:
    records = [orjson.loads(line) for line in SEED.read_bytes().splitlines()]
    from streams.model.timestamps import format_ms

    for record in records:
        record["occurred_at"] = format_ms(record["occurred_at"]).replace("Z", "+00:00")
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(orjson.dumps(r) for r in records))
    result = run_cli("replay", str(events), "-q")
    assert result.returncode == 0, result.stderr
    expected = (SEED.parent / "expected.jsonl").read_bytes().splitlines()
    assert len(result.stdout.splitlines()) == len(expected)


def test_rules_lists_the_catalogue_as_json() -> None:
    result = run_cli("rules", "--json")
    assert result.returncode == 0
    rules = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert {r["id"] for r in rules} == {
        "enrichment-without-consent", "enrichment-exceeds-consent",
        "enrichment-without-notice", "covert-profile-view", "pseudonym-deanonymized",
        "automatic-egress-feature-inactive", "disclosure-without-consent"}
    assert all(r["regulations"] for r in rules)


def _replay_lines(lines: list[bytes]) -> tuple[int, list[DeadLetter]]:
    import io

    letters: list[DeadLetter] = []
    summary = replay_records(read_jsonl(lines, "test"), io.BytesIO(),
                             on_dead_letter=letters.append)
    return summary.records, letters


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_random_bytes_never_crash_replay(chunks: list[bytes]) -> None:
    lines = [c.replace(b"\n", b" ") for c in chunks]
    records, _ = _replay_lines(lines)
    assert records == len([line for line in lines if line.strip()])


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=20,
)
_field_names = st.sampled_from([
    "type", "event_id", "occurred_at", "subject_id", "account_id", "meeting_id", "provider",
    "data_use", "data_sent", "trigger", "status", "data_categories", "expires_at",
    "notice_kind", "enabled", "matched", "profile_name", "display_name", "viewer_id",
])
_event_types = st.sampled_from([
    "ParticipantJoined", "EnrichmentRequested", "EnrichmentMatched", "ProfileViewed",
    "ConsentChanged", "NoticeDelivered", "FeatureToggled", "Nope"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_json, st.dictionaries(_field_names, _json).flatmap(
    lambda d: _event_types.map(lambda t: {**d, "type": t}))), max_size=10))
def test_random_json_never_crashes_replay(values: list[object]) -> None:
    lines = [orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS) for v in values]
    records, letters = _replay_lines(lines)
    assert records == len(lines)
    for letter in letters:
        assert letter.reason_code
        assert letter.payload in lines


def test_a_worker_on_a_data_dir_in_use_exits_with_one_line(tmp_path: Path) -> None:
    from streams.pipeline.data_dir import lock_data_dir

    held = lock_data_dir(tmp_path / "data")
    try:
        result = run_cli("worker", "--broker", "127.0.0.1:9", "--data-dir", str(tmp_path / "data"))
    finally:
        held.close()
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "in use by another worker" in lines[0], lines
    assert f"pid {os.getpid()}" in lines[0]


@pytest.mark.parametrize("value", [b'["x"]', b"1", b"{}", b"true"])
def test_a_type_that_is_not_a_string_is_an_unknown_type_and_the_run_goes_on(
        tmp_path: Path, value: bytes) -> None:
    # The compiled validator crashed here (TypeError), losing every record after it.
    good = SEED.read_bytes().splitlines()
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join([b'{"type": ' + value + b"}", *good]) + b"\n")
    result = run_cli("replay", str(events), "-q")
    assert result.returncode == 1
    assert b"line 1: invalid event (unknown_type)" in result.stderr
    assert b"Traceback" not in result.stderr
    expected = (SEED.parent / "expected.jsonl").read_bytes().splitlines()
    assert len(result.stdout.splitlines()) == len(expected)


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A TCP server that accepts connections and never writes a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        for connection in accepted:
            connection.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_with_timeout(*args: str, seconds: str = "1") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "CONSENTWATCH_KAFKA_CONNECT_TIMEOUT": seconds}
    return subprocess.run([sys.executable, "-m", "streams.cli.app", *args],
                          capture_output=True, timeout=60, check=False, env=env)


@pytest.mark.parametrize("command", [
    ("worker", "--store", "memory", "--data-dir"), ("findings",), ("produce", str(SEED)),
])
def test_a_broker_that_never_answers_is_one_line_within_the_connect_timeout(
        tmp_path: Path, silent_broker: str, command: tuple[str, ...]) -> None:
    args = [*command, str(tmp_path / "data")] if command[0] == "worker" else list(command)
    result = _run_with_timeout(*args, "--broker", silent_broker)
    assert result.returncode == 1
    assert _one_line(result.stderr) == (f"consentwatch: error: the broker at {silent_broker} "
                                        "accepted the connection but did not answer within 1 s")


def test_a_worker_with_nothing_listening_is_one_line(tmp_path: Path) -> None:
    broker = f"127.0.0.1:{_free_port()}"
    result = _run_with_timeout("worker", "--broker", broker, "--store", "memory",
                               "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert line.startswith(f"consentwatch: error: cannot reach the broker at {broker}"), line
