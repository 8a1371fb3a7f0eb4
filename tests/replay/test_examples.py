"""Every worked case of the spec, through the real `consentwatch replay`, gives its findings."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.conftest import example_cases, run_cli


def _keys(lines: bytes) -> list[tuple[str, str, str]]:
    records = [orjson.loads(line) for line in lines.splitlines() if line.strip()]
    return sorted((r["rule"], r["subject_id"], r["trigger_event_id"]) for r in records)


@pytest.mark.parametrize("case", example_cases(), ids=lambda p: p.name)
def test_replay_gives_expected_findings(case: Path, tmp_path: Path) -> None:
    out = tmp_path / "findings.jsonl"
    result = run_cli("replay", str(case / "events.jsonl"), "--out", str(out))
    assert result.returncode == 0, result.stderr.decode()
    assert _keys(out.read_bytes()) == _keys((case / "expected.jsonl").read_bytes())


@pytest.mark.parametrize("case", example_cases(), ids=lambda p: p.name)
def test_replay_writes_complete_findings_to_stdout(
    case: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a pseudonymisation key configured, a quiet run says nothing on stderr.
    key = tmp_path / "pseudonym.key"
    key.write_bytes(b"k" * 32)
    monkeypatch.setenv("CONSENTWATCH_PSEUDONYM_KEY", str(key))
    result = run_cli("replay", str(case / "events.jsonl"), "--quiet")
    assert result.returncode == 0
    assert result.stderr == b""
    for line in result.stdout.splitlines():
        finding = orjson.loads(line)
        assert set(finding) >= {
            "finding_id", "rule", "severity", "subject_id", "account_id", "meeting_id",
            "provider", "trigger_event_id", "evidence_event_ids", "occurred_at",
            "detected_at", "explanation", "evidence",
        }
        assert finding["trigger_event_id"] in finding["evidence_event_ids"]
        assert [e["event_id"] for e in finding["evidence"]] == finding["evidence_event_ids"]
        assert isinstance(finding["occurred_at"], int)
        assert finding["explanation"].endswith(".")
    assert _keys(result.stdout) == _keys((case / "expected.jsonl").read_bytes())
