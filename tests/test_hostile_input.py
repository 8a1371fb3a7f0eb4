"""Hostile input through the real `consentwatch replay`: each bad record gets its reason,
and the good records around it give exactly the findings they give alone."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.model.findings import DeadLetter
from streams.serde.jsonl import read_jsonl
from tests.conftest import EXAMPLES_DIR, run_cli

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


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_keys_strategy, _values), min_size=1, max_size=6),
       st.sampled_from([":", ": ", " : "]))
def test_repeated_keys_are_found_exactly(pairs: list[tuple[str, object]],
                                         separator: str) -> None:
    line = _object(pairs, separator)
    repeated = len({key for key, _ in pairs}) != len(pairs)
    [(_, item)] = list(read_jsonl([line], "test"))
    found = isinstance(item, DeadLetter) and item.reason_code == "duplicate_key"
    assert found == repeated
