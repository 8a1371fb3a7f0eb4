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
from tests.hypothesis_profiles import examples

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


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_a_number_that_is_not_finite_is_a_one_line_usage_error(value: str) -> None:
    result = run_cli("replay", str(SEED), "--allowed-lateness", value)
    assert result.returncode == 2
    assert "--allowed-lateness" in _one_line(result.stderr)


@pytest.mark.parametrize("broker", ["127.0.0.1:99999", "127.0.0.1:abc", "127.0.0.1:0",
                                    ":9092", "h:1,h:x", "[::1]:x", "[::1"])
def test_a_malformed_broker_address_is_a_one_line_usage_error(broker: str) -> None:
    result = run_cli("topics", "create", "--broker", broker)
    assert result.returncode == 2
    assert "--broker" in _one_line(result.stderr)


@pytest.mark.parametrize("url", ["notaurl", "http://", "ftp://registry:8081",
                                 "http://registry:port"])
@pytest.mark.parametrize("command", ["produce", "worker"])
def test_a_registry_that_is_not_a_url_is_a_one_line_usage_error(command: str,
                                                                 url: str) -> None:
    args = [str(SEED)] if command == "produce" else []
    result = run_cli(command, *args, "--broker", "127.0.0.1:1", "--wire-format", "confluent",
                     "--schema-registry", url)
    assert result.returncode == 2
    assert "--schema-registry" in _one_line(result.stderr)


@pytest.mark.parametrize("broker", ["localhost", "a-b.example:9092", "[::1]:9092", "[::1]",
                                    "h1:9092,h2:9093,", "PLAINTEXT://h:9092"])
def test_broker_addresses_kafka_clients_take_pass_the_check(broker: str) -> None:
    from streams.cli.options import broker_address

    assert broker_address(None, None, broker) == broker  # type: ignore[arg-type]


def test_devices_named_twice_are_not_the_same_file(tmp_path: Path) -> None:
    result = run_cli("replay", str(SEED), "--out", "/dev/null", "--dead-letter", "/dev/null",
                     "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("args", [
    ("{events}", "--out", "{events}"),
    ("{events}", "--out", "{tmp}/a.jsonl", "--dead-letter", "{tmp}/./a.jsonl"),
    ("{events}", "--dead-letter", "{events}"),
])
def test_two_options_naming_one_file_are_refused_before_anything_is_written(
        tmp_path: Path, args: tuple[str, ...]) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(SEED.read_bytes())
    result = run_cli("replay", *(a.format(events=events, tmp=tmp_path) for a in args))
    assert result.returncode == 2
    assert "name the same file" in _one_line(result.stderr)
    assert events.read_bytes() == SEED.read_bytes()


def test_simulate_refuses_one_file_for_events_and_truth(tmp_path: Path) -> None:
    same = tmp_path / "x.jsonl"
    result = run_cli("simulate", "--events", "10", "--out", str(same), "--truth", str(same))
    assert result.returncode == 2
    assert "name the same file" in _one_line(result.stderr)


def test_a_file_name_that_is_not_utf8_is_named_with_an_escape(tmp_path: Path) -> None:
    events = Path(os.fsdecode(bytes(tmp_path) + b"/bad\xffname.jsonl"))
    events.write_bytes(SEED.read_bytes() + b'{"not": "an event"}\n')
    dead = tmp_path / "dead.jsonl"
    result = run_cli("replay", str(events), "--out", str(tmp_path / "f.jsonl"),
                     "--dead-letter", str(dead), "-q")
    assert result.returncode == 1, result.stderr
    (letter,) = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    assert letter["source"].endswith("bad\\xffname.jsonl")
    assert base64.b64decode(letter["payload"]) == b'{"not": "an event"}'


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


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
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


@settings(max_examples=examples(300), deadline=None)
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
    ("worker", "--store", "memory", "--web-port", str(_free_port()), "--data-dir"),
    ("findings",), ("produce", str(SEED)),
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
                               "--web-port", str(_free_port()), "--data-dir",
                               str(tmp_path / "data"))
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert line.startswith(f"consentwatch: error: cannot reach the broker at {broker}"), line


# -- operators get told what is wrong (issue 19) ------------------------------------------


def test_a_worker_whose_web_port_is_in_use_exits_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The broker is never asked: the port is checked first, on this machine.
        result = run_cli("worker", "--broker", "127.0.0.1:9", "--web-port", str(port),
                         "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1
    assert _one_line(result.stderr) == (f"consentwatch: error: the web port {port} is in use "
                                        "(--web-port)")


def _topics(partitions: int = 4, **counts: int) -> dict[str, int]:
    from streams.kafka.topics import TopicNames

    found = dict.fromkeys(TopicNames("p").all(), partitions)
    found.update(counts)
    return found


def test_topic_problem_names_what_is_missing_or_counted_differently() -> None:
    from streams.kafka.kafka_io import topic_problem
    from streams.kafka.topics import TopicNames

    names = TopicNames("p")
    assert topic_problem(names, 4, _topics()) is None
    assert topic_problem(names, 4, {}) == (
        "the topics of prefix p do not exist: run `consentwatch topics create`")
    some = {k: v for k, v in _topics().items() if k != "p.findings"}
    assert topic_problem(names, 4, some) == (
        "topics of prefix p are missing: p.findings: run `consentwatch topics create`")
    problem = topic_problem(names, 4, {**_topics(), "p.correlate": 8})
    assert problem is not None and "p.correlate has 8 partitions, but --partitions is 4" in problem
    # Input topics may have another count: the worker reads them through the correlate
    # topic then (`input_path`).
    assert topic_problem(names, 2, _topics(2, **{"p.events.consent-changed": 3})) is None
    # Output topics may have any count: they are keyed by id, not read by partition.
    assert topic_problem(names, 4, {**_topics(), "p.findings": 1}) is None


def test_inputs_are_read_directly_only_when_every_subject_keyed_one_is_co_partitioned() -> None:
    from streams.kafka.kafka_io import input_path
    from streams.kafka.topics import TopicNames

    names = TopicNames("p")
    assert input_path(names, 4, _topics())[0] is True
    direct, why = input_path(names, 4, _topics(**{"p.events.consent-changed": 6}))
    assert direct is False and "p.events.consent-changed: 6" in why
    assert input_path(names, 2, _topics(4, **{"p.correlate": 2}))[0] is False
    # Toggles are account-wide, broadcast to every correlate partition whatever their count.
    assert input_path(names, 4, _topics(**{"p.events.feature-toggled": 1}))[0] is True


def test_library_info_lines_are_dropped_and_the_projects_own_kept() -> None:
    import logging

    from streams.cli.kafka_cmds import _QuietLibraries

    quiet = _QuietLibraries()

    def passes(name: str, level: int, message: str = "x") -> bool:
        return quiet.filter(logging.LogRecord(name, level, __file__, 1, message, None, None))

    assert not passes("faust.worker", logging.INFO)
    assert not passes("abc", logging.INFO)  # Faust services built with type() log here
    assert passes("faust.worker", logging.WARNING)
    assert passes("consentwatch.worker", logging.INFO)
    coordinator = "aiokafka.consumer.group_coordinator"
    retried = "Group Coordinator Request failed: %s"
    assert not passes(coordinator, logging.ERROR, retried)
    assert passes(coordinator, logging.ERROR, "Heartbeat failed")
    quiet.starting = False  # once the worker is ready, a lookup that fails is news
    assert passes(coordinator, logging.ERROR, retried)


# A worker's /metrics page, captured (trimmed of the histogram buckets).
CAPTURED_METRICS = """\
# HELP consentwatch_events_consumed_total Valid events consumed by the engine, by event type.
# TYPE consentwatch_events_consumed_total counter
consentwatch_events_consumed_total{type="ParticipantJoined"} 2.0
consentwatch_events_consumed_total{type="ConsentChanged"} 1.0
# HELP consentwatch_dead_letters_total Records that could not be used, by reason code.
# TYPE consentwatch_dead_letters_total counter
consentwatch_dead_letters_total{reason="bad_marker"} 1.0
consentwatch_dead_letters_total{reason="not_avro"} 3.0
# HELP consentwatch_build_info Always 1; the running version and rule catalogue.
# TYPE consentwatch_build_info gauge
consentwatch_build_info{rules_version="2026.12.1",version="0.1.0"} 1.0
# HELP consentwatch_watermark_timestamp_seconds Event-time watermark of each correlation \
partition (Unix time).
# TYPE consentwatch_watermark_timestamp_seconds gauge
consentwatch_watermark_timestamp_seconds{partition="1"} 1.7648928e+09
# HELP consentwatch_watermark_lag_seconds Wall clock minus the partition's watermark.
# TYPE consentwatch_watermark_lag_seconds gauge
consentwatch_watermark_lag_seconds{partition="1"} 185.5
# HELP consentwatch_pending_decisions Trigger decisions waiting for the watermark.
# TYPE consentwatch_pending_decisions gauge
consentwatch_pending_decisions{partition="0"} 0.0
consentwatch_pending_decisions{partition="1"} 4.0
# HELP consentwatch_state_subjects Subjects held in the partition's correlation state.
# TYPE consentwatch_state_subjects gauge
consentwatch_state_subjects{partition="0"} 4.0
consentwatch_state_subjects{partition="1"} 5.0
# HELP consentwatch_consumer_lag_records Records in the topic partition not yet consumed.
# TYPE consentwatch_consumer_lag_records gauge
consentwatch_consumer_lag_records{partition="0",topic="op3.correlate"} 0.0
consentwatch_consumer_lag_records{partition="1",topic="op3.correlate"} 7.0
consentwatch_consumer_lag_records{partition="0",topic="op3.events.consent-changed"} 2.0
consentwatch_consumer_lag_records{partition="3",topic="op3.events.profile-viewed"} 5.0
"""


def test_status_reads_a_captured_metrics_page() -> None:
    from streams.metrics.reader import PartitionStatus, parse_status

    status = parse_status(CAPTURED_METRICS)
    assert status.version == "0.1.0"
    assert status.partitions == {
        0: PartitionStatus(0, None, None, pending=0, subjects=4, consumer_lag=0),
        1: PartitionStatus(1, 1.7648928e9, 185.5, pending=4, subjects=5, consumer_lag=7),
    }
    assert status.input_lag == {("op3.events.consent-changed", 0): 2,
                                ("op3.events.profile-viewed", 3): 5}
    assert status.dead_letters == {"bad_marker": 1, "not_avro": 3}


def test_status_reads_what_the_metrics_module_writes() -> None:
    """The names the reader looks for are the ones streams/metrics exports."""
    from prometheus_client import CollectorRegistry

    from streams.metrics import PipelineMetrics, exposition
    from streams.metrics.reader import parse_status

    class Part:
        watermark_ms, pending, subjects = 1_764_892_800_000, 3, 9
        stats = None

    class View:
        def partitions(self) -> dict[int, Part]:
            return {2: Part()}

        def consumer_lag(self) -> dict[tuple[str, int], int]:
            return {("x.correlate", 2): 6, ("x.events.profile-viewed", 1): 4}

    metrics = PipelineMetrics(CollectorRegistry(), view=None, clock=lambda: 1_764_892_860.0)
    metrics.view = View()  # type: ignore[assignment]
    metrics.sync = lambda: None  # type: ignore[method-assign]  # no engines behind the view
    metrics.observe_dead_letter("not_avro")
    body, _ = exposition(metrics)
    status = parse_status(body.decode())
    part = status.partitions[2]
    assert (part.watermark_s, part.watermark_lag_s, part.pending, part.subjects,
            part.consumer_lag) == (1_764_892_800.0, 60.0, 3, 9, 6)
    assert status.input_lag == {("x.events.profile-viewed", 1): 4}
    assert status.dead_letters == {"not_avro": 1}


def test_status_renders_a_row_per_correlate_partition() -> None:
    from streams.cli.status_cmd import render_status
    from streams.metrics.reader import parse_status

    text = render_status(parse_status(CAPTURED_METRICS), "http://w/metrics", 0.0)
    rows = {line.split()[1]: line.split() for line in text.splitlines()
            if line.startswith("│") and line.split()[1].isdigit()}
    assert rows["0"][1:] == ["0", "│", "-", "│", "-", "│", "0", "│", "4", "│", "0", "│"]
    assert "2025-12-05 00:00:00Z" in " ".join(rows["1"])
    assert "3m 05s" in " ".join(rows["1"])  # the worker's watermark lag, not this clock's
    assert "input lag: 7 records on 2 input partitions" in text
    assert "not_avro" in text and "bad_marker" in text


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (59.9, "59s"), (184, "3m 04s"), (7_500, "2h 05m"), (273_600, "3d 04h"),
    (-5, "-5s"),
])
def test_ages_read_in_their_two_largest_units(seconds: float, text: str) -> None:
    from streams.cli.status_cmd import format_age

    assert format_age(seconds) == text


def test_status_of_a_worker_that_is_not_there_is_one_line() -> None:
    url = f"http://127.0.0.1:{_free_port()}/metrics"
    result = run_cli("status", "--url", url)
    assert result.returncode == 1
    assert _one_line(result.stderr).startswith(
        f"consentwatch: error: cannot reach the worker at {url}: connection refused")


def test_status_of_a_page_that_is_not_a_workers_is_one_line() -> None:
    import http.server

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"up 1\n")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run_cli("status", "--url", f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1
    assert "not a consentwatch worker's metrics page" in _one_line(result.stderr)


@pytest.mark.parametrize("args", [
    ("ledger", "findings", "--ledger", "{tmp}/none.db", "--from", "99999999999999999999999"),
    ("ledger", "findings", "--ledger", "{tmp}/none.db", "--to", "9223372036854775808"),
    ("status", "--url", "http://[::1"),
    ("desk", "serve", "--ledger", "{tmp}/none.db", "--tls-cert", "{tmp}/bad.pem",
     "--tls-key", "{tmp}/bad.pem"),
])
def test_more_bad_values_are_one_line_and_no_traceback(tmp_path: Path,
                                                       args: tuple[str, ...]) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    result = run_cli(*(a.format(tmp=tmp_path) for a in args))
    assert result.returncode in (1, 2)
    _one_line(result.stderr)


def test_a_full_disk_under_simulate_is_one_line() -> None:
    result = run_cli("simulate", "--events", "10", "--out", "/dev/full")
    assert result.returncode == 1
    assert "No space left on device" in _one_line(result.stderr)


def test_out_dash_is_standard_output(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "streams.cli.app", "replay", str(SEED),
                             "--out", "-", "-q"], capture_output=True, cwd=tmp_path,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(b"\n") >= 1 and not (tmp_path / "-").exists()


def test_every_command_is_listed_and_loads_under_its_own_name() -> None:
    import click

    from streams.cli.app import _COMMANDS, cli

    context = click.Context(cli)
    assert cli.list_commands(context) == sorted(_COMMANDS)
    for name in _COMMANDS:
        command = cli.get_command(context, name)
        assert isinstance(command, click.Command) and command.name == name
    assert cli.get_command(context, "no-such-command") is None


def test_replay_imports_neither_the_kafka_nor_the_web_stack(tmp_path: Path) -> None:
    """Commands are imported when run: `replay` of a small file would otherwise spend a
    tenth of its run importing what it never uses."""
    probe = ("import sys\n"
             "from streams.cli.app import main\n"
             f"status = main(['replay', {str(SEED)!r}, '--out', {str(tmp_path / 'f')!r}, '-q'])\n"
             "print(sorted(m for m in ('aiokafka', 'faust', 'prometheus_client', 'ssl', "
             "'jinja2', 'asyncio', 'streams.cli.kafka_cmds', 'streams.cli.desk_cmd') "
             "if m in sys.modules), status)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120,
                            check=True)
    assert result.stdout.decode().split() == ["[]", "0"]
    assert (tmp_path / "f").stat().st_size > 0
