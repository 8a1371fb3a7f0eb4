"""`export` then `verify`, end to end on a real SQLite ledger (streams.evidence.ledger).

Findings come from `replay` of the spec's seed scenario (so they carry real evidence),
plus hand-made records for the window edges, an amendment and an unsafe event id.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import re
import shutil
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.engine import EngineParams
from streams.evidence import bundle
from streams.evidence.export import ExportQuery, export_bundle
from streams.evidence.export.timeline import mark_for, render_timeline
from streams.evidence.keys import KEY_NAME, generate_keypair, load_private_key, load_public_key
from streams.evidence.ledger import Ledger, open_ledger
from streams.evidence.verify import verify_bundle
from streams.model.timestamps import MAX_MS, MIN_MS, parse_rfc3339_ms
from tests.conftest import EXAMPLES_DIR, run_cli
from tests.evidence.test_ledger import TAMPERINGS, tamper
from tests.evidence.test_ledger import finding as ledger_finding
from tests.postgres_fixture import fresh_database

FROM, TO = "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"
FROM_MS, TO_MS = parse_rfc3339_ms(FROM), parse_rfc3339_ms(TO)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("replay") / "findings.jsonl"
    done = run_cli("replay", str(EXAMPLES_DIR / "seed-scenario" / "events.jsonl"),
                   "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(records) >= 3 and all(r.get("evidence") for r in records)
    return records


def _finding(name: str, occurred_at: int, *, rule: str = "covert-profile-view",
             subject: str = "u-other", event_id: str | None = None) -> dict[str, Any]:
    trigger = event_id or f"ev-{name}"
    return {
        "finding_id": hashlib.sha256(f"{rule}|{trigger}".encode()).hexdigest(),
        "rule": rule, "severity": "HIGH", "subject_id": subject, "account_id": "acct9",
        "meeting_id": "m9", "provider": "prov", "trigger_event_id": trigger,
        "evidence_event_ids": [trigger], "occurred_at": occurred_at,
        "detected_at": occurred_at + 400_000, "explanation": f"made-up finding {name}",
        "evidence": [{"type": "ProfileViewed", "event_id": trigger, "occurred_at": occurred_at,
                      "account_id": "acct9", "meeting_id": "m9", "subject_id": subject,
                      "viewer_id": "hmac-sha256:00", "provider": "prov",
                      "data_disclosed": ["user.name"]}],
    }


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "keys")


@pytest.fixture
def ledger(tmp_path: Path, replayed: list[dict[str, Any]]) -> Iterator[Ledger]:
    led = open_ledger(str(tmp_path / "ledger.db"))
    led.append("finding", [_finding("before", FROM_MS - 1)])
    led.append("finding", replayed)
    led.append("finding", [_finding("at-from", FROM_MS), _finding("at-to", TO_MS),
                           _finding("odd-id", FROM_MS + 5, event_id="../odd id/1")])
    first = replayed[0]
    led.append("amendment", [{
        "amendment_id": "a" * 64, "kind": "EVIDENCE_CHANGED", "finding_id": first["finding_id"],
        "rule": first["rule"], "subject_id": first["subject_id"],
        "trigger_event_id": first["trigger_event_id"], "late_event_id": "late-1",
        "evidence_event_ids": first["evidence_event_ids"], "occurred_at": first["occurred_at"],
        "detected_at": first["detected_at"] + 1, "explanation": "a late event changed it"}])
    yield led
    led.close()


def _export(ledger: Ledger, keys: tuple[Path, Path], out: Path, **filters: str) -> Path:
    query = ExportQuery(FROM_MS, TO_MS, "inquiry 42 of the supervisory authority", **filters)
    export_bundle(ledger, out, query, load_private_key(keys[0]), actor="tester",
                  params=EngineParams())
    return out


@pytest.fixture
def exported(tmp_path: Path, ledger: Ledger, keys: tuple[Path, Path]) -> Path:
    return _export(ledger, keys, tmp_path / "bundle")


def _failures(path: Path, public: Path) -> list[str]:
    return verify_bundle(path, load_public_key(public))[0]


def test_cli_keys_export_verify_dir_and_zip(tmp_path: Path, ledger: Ledger,
                                            replayed: list[dict[str, Any]]) -> None:
    ledger.close()
    keydir = tmp_path / "k"
    assert run_cli("keys", "generate", "--out", str(keydir)).returncode == 0
    again = run_cli("keys", "generate", "--out", str(keydir))
    assert again.returncode == 2 and again.stderr.decode().count("\n") == 1
    out = tmp_path / "cli-bundle"
    done = run_cli("export", "--ledger", str(tmp_path / "ledger.db"), "--from", FROM, "--to", TO,
                   "--purpose", "DPA inquiry", "--private-key", str(keydir / "consentwatch.key"),
                   str(out))
    assert done.returncode == 0, done.stderr
    for target in (out, tmp_path / "cli-bundle.zip"):
        check = run_cli("verify", str(target), "--public-key", str(keydir / "consentwatch.pub"))
        assert check.returncode == 0, check.stdout
        assert check.stdout.decode().startswith("OK")
    lines = (out / bundle.FINDINGS).read_bytes().splitlines()
    assert len(lines) == len(replayed) + 2  # + at-from and odd-id; before and at-to are out
    reopened = open_ledger(str(tmp_path / "ledger.db"))
    try:
        [record] = reopened.exports()
    finally:
        reopened.close()
    assert record["actor"] == getpass.getuser() and record["purpose"] == "DPA inquiry"
    assert record["bundle_sha256"] == hashlib.sha256((out / bundle.MANIFEST).read_bytes()
                                                     ).hexdigest()
    assert "consentwatch export" not in done.stderr.decode()


def test_cli_refuses_without_purpose_and_bad_times(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    base = ["export", "--ledger", str(tmp_path / "l.db"), "--private-key", str(keys[0])]
    for args in (["--from", FROM, "--to", TO, str(tmp_path / "o")],
                 ["--from", FROM, "--to", TO, "--purpose", "  ", str(tmp_path / "o")],
                 ["--from", "2026-03-01", "--to", TO, "--purpose", "x", str(tmp_path / "o")],
                 ["--from", TO, "--to", FROM, "--purpose", "x", str(tmp_path / "o")]):
        done = run_cli(*base, *args)
        assert done.returncode == 2, done.stderr
        assert done.stderr.decode().count("\n") == 1
        assert not (tmp_path / "o").exists()
    done = run_cli(*base, "--from", FROM, "--to", TO, "--purpose", "x", str(tmp_path / "o"))
    assert done.returncode == 2 and b"no ledger at" in done.stderr
    assert not (tmp_path / "l.db").exists()


def test_window_is_half_open_and_filters_apply(tmp_path: Path, ledger: Ledger,
                                               keys: tuple[Path, Path]) -> None:
    out = _export(ledger, keys, tmp_path / "b")
    times = [orjson.loads(line)["occurred_at"]
             for line in (out / bundle.FINDINGS).read_bytes().splitlines()]
    assert FROM_MS in times and TO_MS not in times and FROM_MS - 1 not in times
    only = _export(ledger, keys, tmp_path / "only", rule="covert-profile-view", subject="u-other")
    rules = {orjson.loads(line)["explanation"]
             for line in (only / bundle.FINDINGS).read_bytes().splitlines()}
    assert rules == {"made-up finding at-from", "made-up finding odd-id"}
    manifest = orjson.loads((only / bundle.MANIFEST).read_bytes())
    assert manifest["filters"] == {"rule": "covert-profile-view", "subject": "u-other",
                                   "account": None}
    assert _failures(only, keys[1]) == []


def test_bundle_contents(exported: Path, ledger: Ledger, keys: tuple[Path, Path]) -> None:
    manifest = orjson.loads((exported / bundle.MANIFEST).read_bytes())
    assert (exported / bundle.MANIFEST).read_bytes() == rfc8785.dumps(manifest)
    assert manifest["purpose"] == "inquiry 42 of the supervisory authority"
    assert manifest["parameters"]["notice_grace_ms"] == 300_000
    assert manifest["rules_version"] and manifest["tool"]["version"]
    listed = set(manifest["files"]) | {bundle.MANIFEST, bundle.SIGNATURE, bundle.ATTESTATION}
    on_disk = {p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file()}
    assert listed == on_disk
    # findings.jsonl lines are the ledger's leaves, byte for byte, in leaf order
    leaves = {e.entry_id: e.leaf for e in ledger.entries(kind="finding")}
    lines = (exported / bundle.FINDINGS).read_bytes().splitlines()
    ids = [orjson.loads(line)["finding_id"] for line in lines]
    assert [leaves[i] for i in ids] == lines
    assert [f["id"] for f in manifest["findings"]] == ids
    indexes = [f["leaf_index"] for f in manifest["findings"]]
    assert indexes == sorted(indexes)
    assert len(manifest["amendments"]) == 1
    # the unsafe event id becomes a hashed file name inside evidence/
    odd = bundle.evidence_file("../odd id/1")
    assert odd.startswith("evidence/sha256-") and (exported / odd).is_file()
    event = orjson.loads((exported / "evidence" / "e002.json").read_bytes())
    assert (exported / "evidence" / "e002.json").read_bytes() == rfc8785.dumps(event)
    with zipfile.ZipFile(exported.with_name("bundle.zip")) as archive:
        assert {n.split("/", 1)[1] for n in archive.namelist()} == on_disk
    # the manifest signature is a plain Ed25519 signature (openssl can check it)
    load_public_key(keys[1]).verify((exported / bundle.SIGNATURE).read_bytes(),
                                    (exported / bundle.MANIFEST).read_bytes())


def test_report_is_self_contained_one_section_per_finding(exported: Path) -> None:
    html = (exported / bundle.REPORT).read_text()
    findings = (exported / bundle.FINDINGS).read_bytes().splitlines()
    assert html.count("<section ") == len(findings)
    assert "<script" not in html and "src=" not in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html
    assert "GDPR Art. 6(1)(a)" in html  # the rule's regulation, from the catalogue
    assert "a late event changed it" in html  # the amendment
    assert "notice grace (5 min): no notice delivered" in html
    svgs = html.split("<svg ")[1:]
    assert len(svgs) == len(findings)
    for svg in svgs:
        ET.fromstring("<svg " + svg.split("</svg>")[0] + "</svg>")  # well-formed XML
    assert '<rect class="mark"' in html  # the grace window of the notice rules


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipping_any_byte_of_any_file_fails(tmp_path: Path, exported: Path,
                                             keys: tuple[Path, Path]) -> None:
    names = sorted(p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file())
    assert len(names) >= 8
    for name in names:
        size = (exported / name).stat().st_size
        if size == 0:  # amendments.jsonl can be empty; nothing to flip
            continue
        for offset in sorted({0, size // 2, size - 1}):
            copy = tmp_path / f"t-{name.replace('/', '_')}-{offset}"
            shutil.copytree(exported, copy)
            _flip(copy / name, offset)
            failures = _failures(copy, keys[1])
            assert failures, f"flipping byte {offset} of {name} went unnoticed"
            target = bundle.MANIFEST if name == bundle.SIGNATURE else name
            assert any(target in f for f in failures), (name, failures)
            shutil.rmtree(copy)


def test_tampered_zip_fails(tmp_path: Path, exported: Path, keys: tuple[Path, Path]) -> None:
    original = exported.with_name("bundle.zip")
    assert _failures(original, keys[1]) == []
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(bundle.SUMMARY):
                data = data.replace(b"HIGH", b"LOW", 1)
            dst.writestr(info, data)
    failures = _failures(tampered, keys[1])
    assert failures == [f"{bundle.SUMMARY}: SHA-256 does not match the manifest (file changed)"]


def test_removing_a_finding_fails(tmp_path: Path, exported: Path, keys: tuple[Path, Path]) -> None:
    lines = (exported / bundle.FINDINGS).read_bytes().splitlines(keepends=True)
    (exported / bundle.FINDINGS).write_bytes(b"".join(lines[:1] + lines[2:]))
    failures = _failures(exported, keys[1])
    assert any("holds" in f and "entry removed or added" in f for f in failures), failures
    assert any("reordered" in f for f in failures)
    assert f"{bundle.FINDINGS}: SHA-256 does not match the manifest (file changed)" in failures


def test_removing_a_finding_and_resigning_with_own_key_fails(
        tmp_path: Path, exported: Path, keys: tuple[Path, Path]) -> None:
    """The forger rewrites manifest and findings consistently but has not got the key."""
    lines = (exported / bundle.FINDINGS).read_bytes().splitlines(keepends=True)
    (exported / bundle.FINDINGS).write_bytes(b"".join(lines[1:]))
    manifest = orjson.loads((exported / bundle.MANIFEST).read_bytes())
    manifest["findings"] = manifest["findings"][1:]
    manifest["files"][bundle.FINDINGS] = bundle.sha256_hex((exported / bundle.FINDINGS
                                                            ).read_bytes())
    consent = (exported / bundle.CONSENT_RECORDS).read_bytes().splitlines(keepends=True)
    (exported / bundle.CONSENT_RECORDS).write_bytes(b"".join(consent[1:]))
    manifest["files"][bundle.CONSENT_RECORDS] = bundle.sha256_hex(b"".join(consent[1:]))
    raw = rfc8785.dumps(manifest)
    (exported / bundle.MANIFEST).write_bytes(raw)
    (exported / bundle.SIGNATURE).write_bytes(Ed25519PrivateKey.generate().sign(raw))
    failures = _failures(exported, keys[1])
    assert failures[0].startswith(f"{bundle.SIGNATURE}: the signature of {bundle.MANIFEST} "
                                  "does not verify")
    # Everything else is consistent: the signature is what catches the forgery (and the
    # orphans it left: the removed finding's evidence files and amendment).
    assert all("evidence/" in f or "amends no exported finding" in f
               for f in failures[1:]), failures


def test_reordering_findings_fails(exported: Path, keys: tuple[Path, Path]) -> None:
    lines = (exported / bundle.FINDINGS).read_bytes().splitlines(keepends=True)
    (exported / bundle.FINDINGS).write_bytes(b"".join([lines[1], lines[0], *lines[2:]]))
    failures = _failures(exported, keys[1])
    assert any(f.startswith(f"{bundle.FINDINGS} line 1: holds") and "reordered" in f
               for f in failures), failures


def test_another_key_fails(tmp_path: Path, exported: Path) -> None:
    _, other_pub = generate_keypair(tmp_path / "other")
    failures = _failures(exported, other_pub)
    assert f"{bundle.SIGNATURE}: the signature of {bundle.MANIFEST} does not verify with the " \
        "given public key" in failures
    assert "checkpoint: checkpoint is not signed by the given key" in failures
    done = run_cli("verify", str(exported), "--public-key", str(other_pub))
    assert done.returncode == 1
    assert all(line.startswith("FAIL ") for line in done.stdout.decode().splitlines())


def test_added_file_and_wrong_evidence_fail(exported: Path, keys: tuple[Path, Path]) -> None:
    (exported / "evidence" / "extra.json").write_bytes(b"{}")
    failures = _failures(exported, keys[1])
    assert "evidence/extra.json: not listed in the manifest (file added)" in failures
    assert "evidence/extra.json: no exported finding cites it" in failures


def test_no_private_key_material_in_bundle(exported: Path, keys: tuple[Path, Path]) -> None:
    key = load_private_key(keys[0])
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    needles = [b"PRIVATE KEY", raw, raw.hex().encode(), base64.b64encode(raw),
               base64.b64encode(raw).rstrip(b"=")[:40], keys[0].read_bytes().splitlines()[1]]
    blobs = [p.read_bytes() for p in exported.rglob("*") if p.is_file()]
    with zipfile.ZipFile(exported.with_name("bundle.zip")) as archive:
        blobs += [archive.read(name) for name in archive.namelist()]
    blobs.append(exported.with_name("bundle.zip").read_bytes())
    for blob in blobs:
        for needle in needles:
            assert needle not in blob


def test_refuses_to_overwrite_a_bundle(exported: Path, ledger: Ledger,
                                       keys: tuple[Path, Path]) -> None:
    from streams.errors import ConfigError

    with pytest.raises(ConfigError, match="refusing to overwrite"):
        _export(ledger, keys, exported)


def test_empty_export_verifies(tmp_path: Path, ledger: Ledger, keys: tuple[Path, Path]) -> None:
    out = _export(ledger, keys, tmp_path / "empty", rule="no-such-rule")
    assert (out / bundle.FINDINGS).read_bytes() == b""
    assert _failures(out, keys[1]) == []


def test_timeline_marks() -> None:
    t = 1_000_000
    consent = {"type": "ConsentChanged", "event_id": "c", "occurred_at": t - 5000,
               "status": "WITHDRAWN"}
    expired = consent | {"status": "GRANTED", "expires_at": t - 1000}
    assert mark_for("enrichment-without-notice", t, [], 300_000).end == t + 300_000
    assert mark_for("enrichment-without-consent", t, [], None).label.startswith("missing consent")
    assert mark_for("enrichment-without-consent", t, [consent], None).start == t - 5000
    assert mark_for("enrichment-without-consent", t, [expired], None).start == t - 1000
    assert mark_for("automatic-egress-feature-inactive", t, [], None).start == t


def test_progress_is_reported_per_finding(tmp_path: Path, ledger: Ledger,
                                          keys: tuple[Path, Path]) -> None:
    calls: list[tuple[str, int, int]] = []
    query = ExportQuery(FROM_MS, TO_MS, "audit")
    result = export_bundle(ledger, tmp_path / "p", query, load_private_key(keys[0]),
                           actor="tester", progress=lambda *a: calls.append(a))
    assert result.findings >= 3
    for step in ("evidence", "report"):
        done = [c for c in calls if c[0] == step]
        assert [c[1] for c in done] == list(range(1, result.findings + 1))
        assert {c[2] for c in done} == {result.findings}
    manifest = orjson.loads((tmp_path / "p" / bundle.MANIFEST).read_bytes())
    assert manifest["parameters"] is None  # not given: the manifest does not guess


# -- export refuses a ledger edited past its triggers ---------------------------------------

_FILTERS_OF_TAMPERING = {"account_id column": ("--account", "acct-other")}


@pytest.mark.parametrize(("how", "backend"), [
    *((how, "sqlite") for how in sorted(TAMPERINGS)),
    # the others are run on PostgreSQL by tests/evidence/test_ledger.py, through the Ledger API
    ("occurred_at column", "postgresql"), ("leaf rewritten with its hash", "postgresql")])
def test_export_refuses_a_tampered_ledger_in_one_line_and_signs_nothing(
        request: pytest.FixtureRequest, tmp_path: Path, keys: tuple[Path, Path], how: str,
        backend: str) -> None:
    with ExitStack() as stack:
        url = str(tmp_path / "ledger.db") if backend == "sqlite" else stack.enter_context(
            fresh_database(request.getfixturevalue("postgres_url")))
        key = load_private_key(keys[0])
        records = [ledger_finding(n) for n in range(6)]
        with open_ledger(url) as store:
            store.append("finding", records)
            store.checkpoint(key, KEY_NAME)
            notes = store.latest_checkpoint()
        statements, message = TAMPERINGS[how]
        tamper(url, *statements(records))
        out = tmp_path / "bundle"
        done = run_cli("export", "--ledger", url, "--from", FROM, "--to", TO, "--purpose", "audit",
                       "--private-key", str(keys[0]), *_FILTERS_OF_TAMPERING.get(how, ()),
                       str(out))
        stderr = done.stderr.decode()
        assert done.returncode == 1, stderr
        assert stderr.count("\n") == 1 and "export refused: " in stderr and message in stderr
        assert not out.exists() and not out.with_name("bundle.zip").exists()
        assert list(tmp_path.glob(".bundle*")) == []
        with open_ledger(url) as store:
            assert store.latest_checkpoint() == notes  # no checkpoint signed
            assert store.exports() == []


# -- findings at the ends of the representable range ---------------------------------------


def _at(name: str, occurred_at: int, rule: str) -> dict[str, Any]:
    record = _finding(name, occurred_at, rule=rule)
    return record | {"detected_at": occurred_at}


def test_findings_in_year_1_and_at_the_end_of_9999_load_export_and_verify(
        tmp_path: Path, keys: tuple[Path, Path]) -> None:
    findings = [_at("first", MIN_MS, "covert-profile-view"),  # notice grace: a shaded span
                _at("last", MAX_MS, "covert-profile-view"),  # its grace ends past 9999
                _at("first-consent", MIN_MS, "enrichment-without-consent"),  # a dashed line
                _at("last-consent", MAX_MS, "enrichment-without-consent")]
    source = tmp_path / "findings.jsonl"
    source.write_bytes(b"".join(orjson.dumps(f) + b"\n" for f in findings))
    db = str(tmp_path / "ledger.db")
    loaded = run_cli("ledger", "load", str(source), "--ledger", db,
                     "--private-key", str(keys[0]))
    assert loaded.returncode == 0, loaded.stderr
    out = tmp_path / "bundle"
    # The window's exclusive end lies past 9999-12-31T23:59:59.999Z, written with an offset.
    done = run_cli("export", "--ledger", db, "--from", "0001-01-01T00:00:00Z",
                   "--to", "9999-12-31T23:59:59.999-01:00", "--purpose", "the whole range",
                   "--private-key", str(keys[0]), str(out))
    assert done.returncode == 0, done.stderr
    check = run_cli("verify", str(out), "--public-key", str(keys[1]))
    assert check.returncode == 0 and check.stdout.decode().startswith("OK"), check.stdout
    assert len((out / bundle.FINDINGS).read_bytes().splitlines()) == 4
    summary = (out / bundle.SUMMARY).read_text()
    assert "0001-01-01T00:00:00.000Z" in summary and "9999-12-31T23:59:59.999Z" in summary
    html = (out / bundle.REPORT).read_text()
    svgs = ["<svg " + s.split("</svg>")[0] + "</svg>" for s in html.split("<svg ")[1:]]
    assert len(svgs) == 4
    for svg in svgs:
        drawing = ET.fromstring(svg)  # well-formed, and everything drawn inside the axis
        xs = [float(e.get(a, "40")) for e in drawing.iter() for a in ("x", "cx", "x1", "x2")
              if e.get(a) is not None]
        assert all(0 <= x <= 760 for x in xs), svg
    manifest = orjson.loads((out / bundle.MANIFEST).read_bytes())
    assert manifest["window"]["from"] == "0001-01-01T00:00:00.000Z"
    assert manifest["window"]["to_ms"] == MAX_MS + 3_600_000


@pytest.mark.parametrize("times", [[MIN_MS], [MAX_MS], [MIN_MS, MAX_MS], [MAX_MS + 10**6],
                                   [MIN_MS - 1, MIN_MS - 10**6]])
def test_timeline_axis_stays_within_the_representable_range(times: list[int]) -> None:
    events = [{"type": "ProfileViewed", "event_id": f"e{n}", "occurred_at": t}
              for n, t in enumerate(times)]
    mark = mark_for("covert-profile-view", times[0], events, 300_000)
    svg = render_timeline(events, "e0", times[0], mark)
    ET.fromstring(svg)
    labels = re.findall(r'font-size="10" fill="#555"[^>]*>([^<]*)<', svg)
    assert len(labels) == 2 and all(parse_rfc3339_ms(label) for label in labels)


VERIFY_ONLY = Path(__file__).resolve().parents[2] / "verify"
#: Anything the pipeline needs and a verifier must not: importing one fails in the test.
PIPELINE_MODULES = ("faust", "rocksdict", "aiokafka", "kafka", "psycopg", "fastavro", "avro",
                    "click", "rich", "prometheus_client", "mode")
_BLOCKED_RUN = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the verifier must not need it")
        return None
sys.meta_path.insert(0, Refuse())
import consentwatch_verify, streams
assert streams.__file__.startswith(sys.argv[2]), streams.__file__
sys.exit(consentwatch_verify.main(sys.argv[3:]))
"""


def _verify_only_install(target: Path) -> Path:
    """What `pip install ./verify` puts on the path: the files its pyproject ships."""
    import tomllib

    config = tomllib.loads((VERIFY_ONLY / "pyproject.toml").read_text())
    shipped = config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert set(config["project"]["dependencies"]) == {
        "cryptography>=42,<51", "rfc8785>=0.1.4,<0.2", "orjson>=3.9,<4",
        "rfc3161-client>=1.0.3,<2"}
    for source, dest in shipped.items():
        (target / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(VERIFY_ONLY / source, target / dest)
    return target


def test_the_verify_only_package_verifies_without_the_pipeline(
        tmp_path: Path, exported: Path, keys: tuple[Path, Path]) -> None:
    import os
    import subprocess
    import sys

    site = _verify_only_install(tmp_path / "site")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CONSENTWATCH_NATIVE")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _BLOCKED_RUN, ",".join(PIPELINE_MODULES), str(site), *args],
            cwd=tmp_path, env=env | {"PYTHONPATH": str(site)}, capture_output=True, text=True,
            timeout=120, check=False)

    ok = run(str(exported), "--public-key", str(keys[1]))
    assert ok.returncode == 0 and ok.stdout.startswith("OK: "), ok.stderr
    zipped = run(str(exported.with_name("bundle.zip")), "--public-key", str(keys[1]))
    assert zipped.returncode == 0, zipped.stderr
    _flip(exported / bundle.FINDINGS, 10)
    bad = run(str(exported), "--public-key", str(keys[1]))
    assert bad.returncode == 1 and "FAIL findings.jsonl" in bad.stdout, bad.stdout
    usage = run(str(exported), "--public-key", str(exported / bundle.MANIFEST))
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1, usage.stderr


def test_the_python_check_in_docs_verifying_works(tmp_path: Path, exported: Path,
                                                  keys: tuple[Path, Path]) -> None:
    import subprocess
    import sys

    doc = (Path(__file__).resolve().parents[2] / "docs" / "verifying.md").read_text()
    script = tmp_path / "check_bundle.py"
    script.write_text(doc.split("```python\n")[1].split("```")[0])
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script), str(exported), str(keys[1])],
                              capture_output=True, text=True, timeout=60, check=False)
    done = run()
    assert done.returncode == 0 and "OK: " in done.stdout, done.stderr
    raw = load_public_key(keys[1]).public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)
    assert f"SHA256:{hashlib.sha256(raw).hexdigest()}" in done.stdout
    assert done.stdout.split()[2] in (exported / bundle.REPORT).read_text()
    _flip(exported / bundle.FINDINGS, 10)
    assert run().returncode != 0
