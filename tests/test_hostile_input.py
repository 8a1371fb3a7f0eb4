"""Hostile input through the real `consentwatch replay`: each bad record gets its reason,
and the good records around it give exactly the findings they give alone."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.model.events import Event
from streams.model.findings import DeadLetter
from streams.serde.avro import (
    EVENT_SCHEMA_NAMES,
    NAMESPACE,
    event_to_record,
    load_schema,
    write_event_container,
)
from streams.serde.jsonl import read_jsonl
from tests.conftest import EXAMPLES_DIR, run_cli
from tests.hypothesis_profiles import examples

SEED = EXAMPLES_DIR / "seed-scenario" / "events.jsonl"
EXPECTED = SEED.parent / "expected.jsonl"


def _keys(lines: bytes) -> list[tuple[str, str, str]]:
    records = [orjson.loads(line) for line in lines.splitlines() if line.strip()]
    return sorted((r["rule"], r["subject_id"], r["trigger_event_id"]) for r in records)


def _seed_with(tmp_path: Path, hostile: bytes, at: int = 2) -> Path:
    """The seed scenario's events with `hostile` as line `at` (counting from 1)."""
    lines = SEED.read_bytes().splitlines()
    lines.insert(at - 1, hostile)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    return events


def _replay_refuses(tmp_path: Path, hostile: bytes, code: str) -> str:
    """Replay the seed with `hostile` as line 2; returns the stderr line about it."""
    result = run_cli("replay", str(_seed_with(tmp_path, hostile)), "-q")
    assert result.returncode == 1, result.stderr
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("consentwatch: line")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"consentwatch: line 2: invalid event ({code}): "), lines
    assert _keys(result.stdout) == _keys(EXPECTED.read_bytes())
    return lines[0]


def test_an_iso8601_week_date_is_not_an_rfc3339_time(tmp_path: Path) -> None:
    hostile = (b'{"type": "FeatureToggled", "event_id": "t1", "occurred_at": '
               b'"2026-W09-1T00:00:00Z", "account_id": "acct1", "provider": "p", '
               b'"enabled": true, "actor_id": "h"}')
    line = _replay_refuses(tmp_path, hostile, "invalid_field")
    assert "occurred_at" in line


def test_json_nested_too_deep_has_its_own_reason(tmp_path: Path) -> None:
    hostile = b'{"type": "ConsentChanged", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    line = _replay_refuses(tmp_path, hostile, "too_deep")
    assert "nested deeper than 1024 levels" in line


_JOINED = (b'{"type": "ParticipantJoined", "event_id": "dup1", "occurred_at": 1772445600500, '
           b'"account_id": "acct1", "meeting_id": "m1", "subject_id": "u-other", '
           b'"display_name": "A", "email": "a@example.com", "is_guest": false')


@pytest.mark.parametrize("repeat", [
    b', "subject_id": "u-reporter"}',          # the same key, another value
    b', "subject_id" : "u-reporter"}',         # whitespace before the colon
    b', "\\u0073ubject_id": "u-reporter"}',   # the key escaped
])
def test_a_repeated_key_is_refused(tmp_path: Path, repeat: bytes) -> None:
    line = _replay_refuses(tmp_path, _JOINED + repeat, "duplicate_key")
    assert "repeats a key" in line


@pytest.mark.parametrize("occurred_at", [
    b'"2026-03-02T10:00:00.5Z"', b'"2026-03-02T11:00:00+01:00"',
    b'"2026-03-02T10\\u003a00:00.5Z"',  # an escaped colon
])
def test_a_repeated_key_is_refused_beside_rfc3339_times(tmp_path: Path,
                                                          occurred_at: bytes) -> None:
    hostile = _JOINED.replace(b"1772445600500", occurred_at) + b', "is_guest": true}'
    _replay_refuses(tmp_path, hostile, "duplicate_key")


_keys_strategy = st.sampled_from(["type", "event_id", "occurred_at", "a:b", "x", "y\\"])
_values = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
                    st.sampled_from(["2026-03-02T10:00:00Z", "a:b", "::"]),
                    st.lists(st.text(max_size=4), max_size=3),
                    st.dictionaries(st.sampled_from(["k", "k:"]), st.integers(), max_size=2))


def _object(pairs: list[tuple[str, object]], separator: str) -> bytes:
    import json

    return ("{" + ", ".join(json.dumps(key) + separator + json.dumps(value)
                            for key, value in pairs) + "}").encode()


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.tuples(_keys_strategy, _values), min_size=1, max_size=6),
       st.sampled_from([":", ": ", " : "]))
def test_repeated_keys_are_found_exactly(pairs: list[tuple[str, object]],
                                         separator: str) -> None:
    line = _object(pairs, separator)
    repeated = len({key for key, _ in pairs}) != len(pairs)
    [(_, item)] = list(read_jsonl([line], "test"))
    found = isinstance(item, DeadLetter) and item.reason_code == "duplicate_key"
    assert found == repeated


# ------------------------------------------------------------------ Avro containers


def _seed_events() -> list[Event]:
    return [item for _, item in read_jsonl(SEED.read_bytes().splitlines(), "seed")
            if not isinstance(item, DeadLetter)]


@pytest.mark.parametrize("codec", ["snappy", "zstandard", "lz4", "bzip2", "xz"])
def test_a_compressed_container_gives_the_seed_findings(tmp_path: Path, codec: str) -> None:
    events = tmp_path / "events.avro"
    write_event_container(events, _seed_events(), codec=codec)
    result = run_cli("replay", str(events), "-q")
    assert result.returncode == 0, result.stderr
    assert _keys(result.stdout) == _keys(EXPECTED.read_bytes())


def test_a_recursive_schema_with_deep_data_is_one_line_and_exit_1(tmp_path: Path) -> None:
    schema = {"type": "record", "name": "L",
              "fields": [{"name": "next", "type": ["null", "L"]}]}
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), [{"next": None}])
    data = out.getvalue()
    # the one record, nested 10,000 deep instead: same header, a hand-made block
    sync = data[-16:]
    datum = b"\x02" * 10_000 + b"\x00"
    header_end = data.rindex(sync, 0, len(data) - 16) + 16
    events = tmp_path / "deep.avro"
    events.write_bytes(data[:header_end] + b"\x02" + _varint(len(datum)) + datum + sync)
    result = run_cli("replay", str(events), "-q")
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.decode().splitlines() if "warning" not in line]
    assert lines == ["consentwatch: record 1: invalid event (schema_too_deep): Avro container's "
                     "writer schema is refused: record 'L' contains itself, so its data can "
                     "nest without bound"]


def _varint(value: int) -> bytes:
    value <<= 1  # zigzag of a non-negative long
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _seed_and_junk(path: Path, junk_per_block: int, blocks: int) -> Path:
    """A deflate container: per block, the seed's events (the first block only) then
    `junk_per_block` one-byte records that are not events."""
    schema = [*(load_schema(name) for name in EVENT_SCHEMA_NAMES),
              {"type": "record", "name": "Junk", "fields": [{"name": "x", "type": "boolean"}]}]
    with path.open("wb") as out:
        writer = fastavro.write.Writer(out, fastavro.parse_schema(schema), codec="deflate",
                                       sync_interval=1 << 30)
        for block in range(blocks):
            if block == 0:
                for event in _seed_events():
                    writer.write((f"{NAMESPACE}.{event.TYPE}", event_to_record(event)))
            for _ in range(junk_per_block):
                writer.write(("Junk", {"x": False}))
            writer.flush()
    return path


def test_dead_letters_are_capped_per_block_and_per_run_and_all_counted(tmp_path: Path) -> None:
    events = _seed_and_junk(tmp_path / "junk.avro", junk_per_block=20_000, blocks=12)
    dead = tmp_path / "dead.jsonl"
    result = run_cli("replay", str(events), "--dead-letter", str(dead))
    assert result.returncode == 1
    assert _keys(result.stdout) == _keys(EXPECTED.read_bytes())
    stderr = result.stderr.decode().splitlines()
    assert "Traceback" not in result.stderr.decode()
    assert len([line for line in stderr if "invalid event (unknown_type)" in line]) == 1000
    assert len(dead.read_bytes().splitlines()) == 1000
    # blocks 1 to 10 keep 100 each: the run's 1000; blocks 11 and 12 keep none
    assert "consentwatch: 19900 more invalid records in block 1 not reported or written " \
           "(at most 100 a block)" in stderr
    assert "consentwatch: 39800 more invalid records in 2 more blocks not reported or " \
           "written" in stderr
    assert "consentwatch: 200 more invalid records after the first 1000 not reported or " \
           "written" in stderr
    assert stderr[-1].startswith(f"consentwatch: replayed {240_000 + len(_seed_events())} "
                                 "records: ")
    assert stderr[-1].endswith(" 240000 invalid")


def test_max_dead_letters_is_configurable(tmp_path: Path) -> None:
    events = _seed_and_junk(tmp_path / "junk.avro", junk_per_block=30, blocks=1)
    result = run_cli("replay", str(events), "--max-dead-letters", "5")
    assert result.returncode == 1
    stderr = result.stderr.decode().splitlines()
    assert len([line for line in stderr if "invalid event (unknown_type)" in line]) == 5
    assert "consentwatch: 25 more invalid records after the first 5 not reported or " \
        "written" in stderr
    assert stderr[-1].endswith(" 30 invalid")
    assert _keys(result.stdout) == _keys(EXPECTED.read_bytes())


def test_every_invalid_json_line_is_reported_whatever_the_cap(tmp_path: Path) -> None:
    # The spec: every invalid line of a JSON Lines file is reported with its number. A
    # line is at most one dead letter (no container block to multiply it), so no cap.
    bad = [b'{"type": "Nope"}'] * 30
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join([*bad, *SEED.read_bytes().splitlines()]) + b"\n")
    dead = tmp_path / "dead.jsonl"
    result = run_cli("replay", str(events), "--max-dead-letters", "5", "--dead-letter", str(dead))
    assert result.returncode == 1
    stderr = result.stderr.decode().splitlines()
    assert len([line for line in stderr if "invalid event (unknown_type)" in line]) == 30
    assert len(dead.read_bytes().splitlines()) == 30
    assert stderr[-1].endswith(" 30 invalid")
    assert _keys(result.stdout) == _keys(EXPECTED.read_bytes())


def test_a_repeated_key_too_deep_to_check_is_refused(tmp_path: Path) -> None:
    # Python's parser, which finds repeated keys, stops near 1000 levels; orjson reads
    # 1024: a repeated subject_id behind 1000 brackets was accepted with the last value.
    first = SEED.read_bytes().splitlines()[0]
    hostile = first[:-1] + b',"subject_id":"someone-else","x":' + b"[" * 1000 \
        + b"]" * 1000 + b"}"
    _replay_refuses(tmp_path, hostile, "duplicate_key")


# ------------------------------------------------------------- stdin and stdout


def _run_with(stdin: Any = subprocess.DEVNULL, stdout: Any = subprocess.PIPE,
              close: int | None = None, *args: str) -> subprocess.CompletedProcess[bytes]:
    def close_fd() -> None:
        if close is not None:
            os.close(close)

    return subprocess.run([sys.executable, "-m", "streams.cli.app", "replay", *args],
                          stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                          preexec_fn=close_fd, timeout=120, check=False)


def _one_error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    lines = [line for line in result.stderr.decode().splitlines() if "warning" not in line]
    assert len(lines) == 1, lines
    assert lines[0].startswith("consentwatch: error: ")
    return lines[0]


def test_closed_stdin_is_one_line() -> None:
    result = _run_with(None, subprocess.PIPE, 0, "-", "-q")
    assert result.returncode == 2
    assert "standard input: it is closed" in _one_error_line(result)


def test_closed_stdout_is_one_line() -> None:
    result = _run_with(None, subprocess.PIPE, 1, str(SEED), "-q")
    assert result.returncode == 2
    assert "standard output: it is closed" in _one_error_line(result)


def test_full_stdout_is_one_line() -> None:
    with open("/dev/full", "wb") as full:
        result = _run_with(subprocess.DEVNULL, full, None, str(SEED), "-q")
    assert result.returncode == 1
    assert "No space left on device" in _one_error_line(result)


def test_full_output_file_is_one_line() -> None:
    result = _run_with(subprocess.DEVNULL, subprocess.PIPE, None, str(SEED), "-q",
                       "--out", "/dev/full")
    assert result.returncode == 1
    assert "No space left on device" in _one_error_line(result)


# -- time from the future (spec: "Time from the future") -----------------------------------

def _toggle_at(occurred_at: int, event_id: str = "t-future") -> bytes:
    return orjson.dumps({"type": "FeatureToggled", "event_id": event_id,
                         "occurred_at": occurred_at, "account_id": "acct-1",
                         "meeting_id": None, "provider": "linkedin_sales_navigator",
                         "enabled": True, "actor_id": "host-1"})


def _now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


def test_an_event_from_the_future_is_a_dead_letter_and_moves_no_watermark(
        tmp_path: Path) -> None:
    # One toggle dated 2031 made most of the events after it late: findings invented
    # and lost. Now it is refused, its bytes kept, and the seed gives its own findings.
    hostile = _toggle_at(1_924_992_000_000)  # 2031-01-01
    dead = tmp_path / "dead.jsonl"
    result = run_cli("replay", str(_seed_with(tmp_path, hostile)), "-q",
                     "--dead-letter", str(dead), "--amendments", str(tmp_path / "a.jsonl"))
    assert result.returncode == 1, result.stderr
    assert b"line 2: invalid event (future_timestamp)" in result.stderr
    assert _keys(result.stdout) == _keys(EXPECTED.read_bytes())
    assert (tmp_path / "a.jsonl").read_bytes() == b""
    [letter] = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    assert letter["reason_code"] == "future_timestamp"
    import base64

    assert base64.b64decode(letter["payload"]) == hostile


def test_an_avro_record_from_the_future_is_a_dead_letter(tmp_path: Path) -> None:
    from streams.model.validate import event_from_record

    records = [orjson.loads(line) for line in SEED.read_bytes().splitlines() if line.strip()]
    records.insert(1, orjson.loads(_toggle_at(1_924_992_000_000)))
    events = tmp_path / "events.avro"
    with events.open("wb") as out:
        write_event_container(out, [event_from_record(r) for r in records])
    result = run_cli("replay", str(events), "-q")
    assert result.returncode == 1, result.stderr
    assert b"record 2: invalid event (future_timestamp)" in result.stderr
    assert _keys(result.stdout) == _keys(EXPECTED.read_bytes())


def test_the_future_skew_is_a_parameter(tmp_path: Path) -> None:
    soon = _toggle_at(_now_ms() + 60_000)  # within the default 300 s
    later = _toggle_at(_now_ms() + 1_800_000, "t-later")  # half an hour ahead
    events = tmp_path / "events.jsonl"
    events.write_bytes(soon + b"\n" + later + b"\n")
    default = run_cli("replay", str(events), "-q")
    assert default.returncode == 1
    assert b"line 2: invalid event (future_timestamp)" in default.stderr
    assert b"line 1:" not in default.stderr
    wide = run_cli("replay", str(events), "-q", "--max-future-skew", "3600")
    assert wide.returncode == 0, wide.stderr
