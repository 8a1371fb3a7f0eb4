"""Hostile input through the real `consentwatch replay`: each bad record gets its reason,
and the good records around it give exactly the findings they give alone."""

from __future__ import annotations

from pathlib import Path

import orjson

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
