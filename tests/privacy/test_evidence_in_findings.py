"""Findings carry their evidence events, pseudonymised where they leave the process.

The engine puts the very events a rule decided on into `Finding.evidence` (and
`Amendment.evidence` / `late_event`); `replay` and the findings topic carry them in
the spec's JSON form with personal data replaced by HMAC-SHA256 pseudonyms.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.engine.rules.automatic_egress_feature_inactive import ID as FEATURE_INACTIVE
from streams.engine.rules.covert_profile_view import ID as COVERT_VIEW
from streams.engine.rules.disclosure_without_consent import ID as DISCLOSURE_WITHOUT_CONSENT
from streams.engine.rules.enrichment_exceeds_consent import ID as EXCEEDS_CONSENT
from streams.engine.rules.enrichment_without_consent import ID as WITHOUT_CONSENT
from streams.engine.rules.enrichment_without_notice import ID as WITHOUT_NOTICE
from streams.engine.rules.pseudonym_deanonymized import ID as PSEUDONYM
from streams.errors import ConfigError
from streams.model.findings import Amendment, Finding
from streams.model.validate import event_from_record
from streams.privacy.pseudonymise import (
    DEV_KEY,
    ENV_VAR,
    NAMES_IN_CLEAR_FOR,
    PREFIX,
    Pseudonymiser,
    load_pseudonymiser,
)
from streams.serde.avro import schema_history, strip_timestamp_millis
from streams.serde.jsonl import dump_line, finding_json
from streams.serde.wire import SINGLE_OBJECT_MARKER, decode_output, encode_output, fingerprint_of
from tests.builders import (
    DAY,
    GRACE,
    LATENESS,
    SEC,
    consent,
    feed,
    joined,
    make_engine,
    matched,
    notice,
    requested,
    run,
    toggle,
    viewed,
)
from tests.conftest import run_cli
from tests.hypothesis_profiles import examples
from tests.strategies import amendments, findings

KEY = b"0123456789abcdef0123456789abcdef"
PZ = Pseudonymiser(KEY)

# Personal data the output must never show in clear (except the two names, in the
# evidence of a pseudonym-deanonymized finding).
EMAIL = "alice@example.org"
REQUESTER = "u-requester-7"
VIEWER = "u-viewer-9"
ACTOR = "host-admin-3"
PSEUDONYM_NAME = "Night Owl"
REAL_NAME = "Alice Liddell"


def _hmac(value: str, key: bytes = KEY) -> str:
    import hmac

    return PREFIX + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def _events(*records: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(event_from_record(r) for r in records)


def _one(findings: list[Finding], rule: str) -> Finding:
    hits = [f for f in findings if f.rule == rule]
    assert len(hits) == 1, findings
    return hits[0]


def _notices() -> list[dict[str, Any]]:
    return [notice(-DAY, meeting_id=None),
            notice(-DAY, meeting_id=None, notice_kind="PROFILE_VIEW")]


# -- the engine: the exact events the rule decided on ---------------------------------------


def test_consent_findings_carry_the_trigger_and_the_deciding_consent() -> None:
    older = consent(-2 * DAY)
    withdrawn = consent(-DAY, status="WITHDRAWN")
    r = requested(0)
    findings, _, _ = run([*_notices(), older, withdrawn, r])
    assert _one(findings, WITHOUT_CONSENT).evidence == _events(r, withdrawn)

    narrow = consent(-DAY, data_categories=["user.name"])
    r2 = requested(0)
    findings, _, _ = run([*_notices(), narrow, r2])
    assert _one(findings, EXCEEDS_CONSENT).evidence == _events(r2, narrow)


def test_feature_finding_carries_the_deciding_toggle_from_the_account() -> None:
    on = toggle(-2 * DAY, actor_id=ACTOR)
    off = toggle(-DAY, enabled=False, actor_id=ACTOR)
    r = requested(0, trigger="AUTOMATIC", requested_by=None)
    findings, _, _ = run([consent(-3 * DAY), *_notices(), on, off, r])
    assert _one(findings, FEATURE_INACTIVE).evidence == _events(r, off)


def test_view_findings_carry_join_match_and_view() -> None:
    j = joined(-60 * SEC, display_name=PSEUDONYM_NAME)
    m = matched(-30 * SEC, profile_name=REAL_NAME)
    v = viewed(0)
    findings, _, _ = run([j, m, v])
    assert _one(findings, PSEUDONYM).evidence == _events(j, m, v)
    assert _one(findings, COVERT_VIEW).evidence == _events(v)


def test_evidence_is_in_the_order_of_the_ids_for_every_finding() -> None:
    records = [joined(-60 * SEC, display_name=PSEUDONYM_NAME), matched(-30 * SEC),
               consent(-DAY, status="WITHDRAWN"), toggle(-DAY, enabled=False),
               requested(0, trigger="AUTOMATIC"), viewed(SEC)]
    findings, _, _ = run(records)
    assert {f.rule for f in findings} >= {WITHOUT_CONSENT, WITHOUT_NOTICE, FEATURE_INACTIVE,
                                          PSEUDONYM, COVERT_VIEW}
    for f in findings:
        assert tuple(e.event_id for e in f.evidence) == f.evidence_event_ids  # type: ignore[union-attr]


def test_findings_re_sent_after_a_restart_carry_the_same_evidence() -> None:
    records = [joined(-60 * SEC, display_name=PSEUDONYM_NAME), matched(-30 * SEC),
               consent(-DAY, status="WITHDRAWN"), toggle(-DAY, enabled=False),
               requested(0, trigger="AUTOMATIC"), viewed(SEC)]
    engine = make_engine()
    outputs = feed(engine, records) + engine.flush()
    first = {o.finding_id: o for o in outputs if isinstance(o, Finding)}
    again = {f.finding_id: f for f in engine.decided_since(-1)}
    assert again.keys() == first.keys()
    for finding_id, finding in again.items():
        assert finding.evidence == first[finding_id].evidence
        assert finding.evidence_event_ids == first[finding_id].evidence_event_ids


def test_amendments_carry_their_evidence_and_the_late_event() -> None:
    engine = make_engine()
    r = requested(0)
    w = consent(-10 * SEC, status="WITHDRAWN")
    feed(engine, [*_notices(), r, joined(LATENESS + 1, subject_id="u-other")])
    late_grant = consent(-5 * SEC)
    amendments = [o for o in feed(engine, [w, late_grant]) if isinstance(o, Amendment)]
    kinds = [(a.kind, a.evidence, a.late_event) for a in amendments]
    r_event, w_event, grant_event = _events(r, w, late_grant)
    assert kinds == [
        ("EVIDENCE_CHANGED", (r_event, w_event), w_event),
        ("RETRACTED", (r_event, w_event), grant_event),  # the evidence it no longer holds on
    ]


# -- pseudonymisation ----------------------------------------------------------------------


def test_pseudonym_is_hmac_sha256_of_the_utf8_value() -> None:
    # RFC 4231, test case 2.
    jefe = Pseudonymiser(b"Jefe")
    assert jefe.pseudonym("what do ya want for nothing?") == (
        PREFIX + "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    assert PZ.pseudonym(EMAIL) == _hmac(EMAIL)
    assert PZ.pseudonym("Zoë") == _hmac("Zoë")
    assert Pseudonymiser(b"another key of at least 32 bytes").pseudonym(EMAIL) != _hmac(EMAIL)


def _all_events() -> list[dict[str, Any]]:
    return [
        joined(-60 * SEC, display_name=PSEUDONYM_NAME, email=EMAIL),
        requested(0, requested_by=REQUESTER),
        matched(SEC, profile_name=REAL_NAME),
        viewed(2 * SEC, viewer_id=VIEWER),
        consent(-DAY, jurisdiction="EU", notice_version="n-2"),
        notice(-DAY),
        toggle(-DAY, actor_id=ACTOR),
    ]


def test_what_is_hashed_and_what_stays_in_clear() -> None:
    for record in _all_events():
        event = event_from_record(record)
        out = PZ.event(event)
        expected = dict(record)
        for field in ("email", "requested_by", "viewer_id", "actor_id", "display_name",
                      "profile_name"):
            if field in expected and expected[field] is not None:
                expected[field] = _hmac(expected[field])
        assert out == expected, record["type"]
        assert next(iter(out)) == "type"
    # In the evidence of a pseudonym-deanonymized finding both names stay in clear.
    assert sorted(NAMES_IN_CLEAR_FOR) == [PSEUDONYM]
    j, m = (event_from_record(r) for r in _all_events()[:3:2])
    assert PZ.event(j, names_in_clear=True)["display_name"] == PSEUDONYM_NAME
    assert PZ.event(j, names_in_clear=True)["email"] == _hmac(EMAIL)
    assert PZ.event(m, names_in_clear=True)["profile_name"] == REAL_NAME


def test_replay_output_shows_no_personal_data_but_the_override(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in [
        joined(-60 * SEC, display_name=PSEUDONYM_NAME, email=EMAIL),
        consent(-DAY, status="WITHDRAWN"),
        toggle(-DAY, enabled=False, actor_id=ACTOR),
        requested(0, trigger="AUTOMATIC", requested_by=REQUESTER),
        matched(SEC, profile_name=REAL_NAME),
        viewed(2 * SEC, viewer_id=VIEWER),
    ]))
    key = tmp_path / "pseudonym.key"
    key.write_bytes(KEY + b"\n")  # surrounding white space is not part of the key
    out = tmp_path / "findings.jsonl"
    result = run_cli("replay", str(events), "--out", str(out), "--pseudonym-key", str(key), "-q")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    findings = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert {f["rule"] for f in findings} == {WITHOUT_CONSENT, WITHOUT_NOTICE, FEATURE_INACTIVE,
                                             PSEUDONYM, COVERT_VIEW, DISCLOSURE_WITHOUT_CONSENT}
    for finding in findings:
        assert [e["event_id"] for e in finding["evidence"]] == finding["evidence_event_ids"]
        text = orjson.dumps(finding).decode()
        for secret in (EMAIL, REQUESTER, VIEWER, ACTOR):
            assert secret not in text
        names_shown = PSEUDONYM_NAME in text or REAL_NAME in text
        assert names_shown == (finding["rule"] == PSEUDONYM), finding["rule"]
    pseudonym = next(f for f in findings if f["rule"] == PSEUDONYM)
    join, match, view = pseudonym["evidence"]
    assert (join["display_name"], match["profile_name"]) == (PSEUDONYM_NAME, REAL_NAME)
    assert join["email"] == _hmac(EMAIL)
    assert view["viewer_id"] == _hmac(VIEWER)
    # Same value, same key: the same pseudonym in every finding that cites it.
    requests = [e for f in findings for e in f["evidence"] if e["type"] == "EnrichmentRequested"]
    assert len(requests) == 3
    assert {e["requested_by"] for e in requests} == {_hmac(REQUESTER)}
    toggles = [e for f in findings for e in f["evidence"] if e["type"] == "FeatureToggled"]
    assert [e["actor_id"] for e in toggles] == [_hmac(ACTOR)]


def test_key_from_the_environment_and_the_development_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(orjson.dumps(viewed(0, viewer_id=VIEWER)) + b"\n")
    key = tmp_path / "env.key"
    key.write_bytes(KEY)
    monkeypatch.setenv(ENV_VAR, str(key))
    with_env = run_cli("replay", str(events), "-q")
    assert with_env.returncode == 0 and with_env.stderr == b""
    assert _hmac(VIEWER).encode() in with_env.stdout
    monkeypatch.delenv(ENV_VAR)
    without = run_cli("replay", str(events), "-q")
    assert without.returncode == 0
    warning = without.stderr.decode().strip().splitlines()
    assert len(warning) == 1 and "development key" in warning[0]
    assert _hmac(VIEWER, DEV_KEY).encode() in without.stdout
    assert VIEWER.encode() not in without.stdout


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read the pseudonymisation key file"),
    (b"too short\n", "fewer than 32 bytes"),
])
def test_an_unusable_key_file_is_a_one_line_usage_error(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    key = tmp_path / "bad.key"
    if content is not None:
        key.write_bytes(content)
    out = tmp_path / "findings.jsonl"
    events = tmp_path / "events.jsonl"
    events.write_bytes(orjson.dumps(viewed(0)) + b"\n")
    result = run_cli("replay", str(events), "--pseudonym-key", str(key), "--out", str(out))
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not out.exists()  # refused before any work
    with pytest.raises(ConfigError):
        load_pseudonymiser(key)


def test_the_key_never_shows() -> None:
    assert KEY.decode() not in repr(PZ)
    assert "hidden" in repr(PZ)


def test_raw_evidence_never_leaves_without_pseudonymisation() -> None:
    findings, _, _ = run([viewed(0, viewer_id=VIEWER)])
    (finding,) = [f for f in findings if f.rule == COVERT_VIEW]
    with pytest.raises(TypeError, match="not pseudonymised"):
        finding.to_dict()
    # The writers take sealed findings only (mypy rejects a raw one), and refuse one.
    with pytest.raises(TypeError, match="not pseudonymised"):
        dump_line(finding)  # type: ignore[arg-type]
    line = dump_line(PZ.finding(finding))
    assert VIEWER.encode() not in line
    assert _hmac(VIEWER).encode() in line


# -- the findings topic ----------------------------------------------------------------------


def test_findings_and_amendments_on_the_wire_carry_their_evidence() -> None:
    engine = make_engine()
    j = joined(-60 * SEC, display_name=PSEUDONYM_NAME, email=EMAIL)
    outputs = feed(engine, [j, matched(-30 * SEC, profile_name=REAL_NAME), viewed(0),
                            joined(GRACE + LATENESS + 1, subject_id="u-other")])
    outputs += feed(engine, [notice(10 * SEC, notice_kind="PROFILE_VIEW")])  # late: retracts
    assert {type(o) for o in outputs} == {Finding, Amendment}
    for output in outputs:
        if isinstance(output, Finding):
            sealed = PZ.finding(output)
            payload = encode_output(sealed)
            read: Finding | Amendment = replace(output, evidence=sealed.evidence)
        else:
            sealed_amendment = PZ.amendment(output)
            payload = encode_output(sealed_amendment)
            read = replace(output, evidence=sealed_amendment.evidence,
                           late_event=sealed_amendment.late_event)
        assert EMAIL.encode() not in payload
        decoded = decode_output(payload)
        assert decoded == read
        assert len(decoded.evidence) == len(output.evidence_event_ids)  # type: ignore[union-attr]
    amendment = next(o for o in outputs if isinstance(o, Amendment))
    decoded_amendment = decode_output(encode_output(PZ.amendment(amendment)))
    assert isinstance(decoded_amendment, Amendment)
    assert decoded_amendment.late_event == PZ.event(amendment.late_event)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["Finding", "Amendment"])
def test_an_output_written_with_version_1_still_decodes(name: str) -> None:
    v1 = dict(schema_history(name))[1]
    common = {"rule": PSEUDONYM, "subject_id": "s", "trigger_event_id": "t",
              "evidence_event_ids": ["t"], "occurred_at": 1, "detected_at": 2,
              "explanation": "x."}
    datum: dict[str, Any]
    if name == "Finding":
        datum = {"finding_id": "f" * 64, "severity": "CRITICAL", "account_id": "a",
                 "meeting_id": "m", "provider": "p", **common}
    else:
        datum = {"amendment_id": "a" * 64, "kind": "RETRACTED", "finding_id": "f" * 64,
                 "late_event_id": "l", **common}
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(strip_timestamp_millis(v1)), datum)
    decoded = decode_output(SINGLE_OBJECT_MARKER + fingerprint_of(v1) + out.getvalue())
    assert type(decoded).__name__ == name
    assert decoded.evidence == ()  # type: ignore[union-attr]
    assert decoded.evidence_event_ids == ("t",)  # type: ignore[union-attr]


def test_the_worker_path_without_a_key_still_pseudonymises() -> None:
    from types import SimpleNamespace

    from streams.kafka.connection import KafkaConnection
    from streams.pipeline.worker import WorkerSettings, _Pipeline

    app = SimpleNamespace(topic=lambda *_, **__: None, Table=lambda *_, **__: None)
    settings = WorkerSettings(connection=KafkaConnection.resolve("127.0.0.1:9"))
    pipeline = _Pipeline(app, settings)  # what the worker seals with until given a key
    findings, _, _ = run([viewed(0, viewer_id=VIEWER)])
    payload = encode_output(pipeline.pseudonymiser.finding(findings[0]))
    assert VIEWER.encode() not in payload
    decoded = decode_output(payload)
    assert decoded.evidence[0]["viewer_id"] == _hmac(VIEWER, DEV_KEY)  # type: ignore[union-attr,index]


def test_evidence_is_found_even_where_no_rule_looks_today() -> None:
    from streams.engine.evidence import evidence_events
    from streams.engine.state import SubjectState

    state = SubjectState()
    c = event_from_record(consent(-DAY))
    j = event_from_record(joined(-SEC, meeting_id="another-meeting"))
    state.add_consent(c)  # type: ignore[arg-type]
    state.add_join(j)  # type: ignore[arg-type]
    v = event_from_record(viewed(0))
    assert evidence_events((c.event_id, j.event_id, v.event_id), v, state,  # type: ignore[arg-type]
                           lambda _: None) == (c, j, v)
    assert evidence_events(("nowhere", v.event_id), v, state,  # type: ignore[arg-type]
                           lambda _: None) == (v,)


@settings(max_examples=examples(150), deadline=None)
@given(findings())
def test_the_json_form_of_a_sealed_finding_is_that_of_the_finding_read_back(
        finding: Finding) -> None:
    # `replay` writes sealed findings with `finding_json`: field for field and in order,
    # what a reader of the line gets back as a Finding.
    sealed = Pseudonymiser(b"k" * 32).finding(finding)
    read = replace(finding, evidence=sealed.evidence)
    assert orjson.dumps(finding_json(sealed)) == orjson.dumps(read)
    assert list(finding_json(sealed)) == [f.name for f in fields(Finding)]
    assert dump_line(sealed) == orjson.dumps(read, option=orjson.OPT_APPEND_NEWLINE)


@settings(max_examples=100, deadline=None)
@given(amendments())
def test_the_json_form_of_a_sealed_amendment_is_that_of_the_amendment_read_back(
        amendment: Amendment) -> None:
    sealed = Pseudonymiser(b"k" * 32).amendment(amendment)
    read = replace(amendment, evidence=sealed.evidence, late_event=sealed.late_event)
    assert dump_line(sealed) == orjson.dumps(read, option=orjson.OPT_APPEND_NEWLINE)


@given(st.binary(min_size=1, max_size=200), st.text(max_size=60))
def test_the_keyed_copy_gives_hmac_digest_for_any_key_and_value(key: bytes, value: str) -> None:
    """Keys longer than SHA-256's block (64 bytes) are hashed first, as RFC 2104 says."""
    import hmac

    expected = hmac.digest(key, value.encode("utf-8", "surrogatepass"), "sha256").hex()
    assert Pseudonymiser(key).pseudonym(value) == PREFIX + expected
