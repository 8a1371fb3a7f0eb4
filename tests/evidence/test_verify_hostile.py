"""`verify` against bundles built to deceive it or to exhaust it (issue 14), and the
hardening of `export` and `keys` that goes with it.

A bundle is exported from a real SQLite ledger, then changed the way an attacker (or
a buggy exporter, re-signing with the real key) would change it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785

from streams.catalogue import load_catalogue
from streams.engine import EngineParams
from streams.evidence import bundle, verify
from streams.evidence.exception_scope import new_exception
from streams.evidence.export import ExportQuery, export_bundle
from streams.evidence.export.summary import NEVER_RAISED
from streams.evidence.export.times import describe_ms
from streams.evidence.keys import generate_keypair, load_private_key, load_public_key
from streams.evidence.ledger import Ledger, open_ledger
from streams.evidence.verify import verify_bundle
from streams.model.timestamps import parse_rfc3339_ms
from tests.conftest import run_cli
from tests.evidence.test_consistency import reattest

FROM, TO = "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"
FROM_MS, TO_MS = parse_rfc3339_ms(FROM), parse_rfc3339_ms(TO)
TOP = "bundle"  # the zip's top folder: the bundle directory's name


def _finding(name: str, *, rule: str, account: str, subject: str) -> dict[str, Any]:
    at = FROM_MS + 1000
    return {
        "finding_id": hashlib.sha256(f"{rule}|ev-{name}".encode()).hexdigest(),
        "rule": rule, "severity": "HIGH", "subject_id": subject, "account_id": account,
        "meeting_id": "m9", "provider": "prov", "trigger_event_id": f"ev-{name}",
        "evidence_event_ids": [f"ev-{name}"], "occurred_at": at, "detected_at": at + 400_000,
        "explanation": f"made-up finding {name}",
        "evidence": [{"type": "ProfileViewed", "event_id": f"ev-{name}", "occurred_at": at,
                      "account_id": account, "meeting_id": "m9", "subject_id": subject,
                      "viewer_id": "hmac-sha256:00", "provider": "prov",
                      "data_disclosed": ["user.name"]}],
    }


FINDINGS = [_finding("a", rule="covert-profile-view", account="acct1", subject="u-1"),
            _finding("b", rule="enrichment-without-notice", account="acct2", subject="u-2")]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "keys")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = open_ledger(str(tmp_path / "ledger.db"))
    led.append("finding", FINDINGS)
    first = FINDINGS[0]
    led.append("amendment", [{
        "amendment_id": "a" * 64, "kind": "EVIDENCE_CHANGED", "finding_id": first["finding_id"],
        "rule": first["rule"], "subject_id": first["subject_id"],
        "trigger_event_id": first["trigger_event_id"], "late_event_id": "late-1",
        "evidence_event_ids": first["evidence_event_ids"], "occurred_at": first["occurred_at"],
        "detected_at": first["detected_at"] + 1, "explanation": "a late event changed it"}])
    yield led
    led.close()


@pytest.fixture
def exported(tmp_path: Path, ledger: Ledger, keys: tuple[Path, Path]) -> Path:
    out = tmp_path / TOP
    export_bundle(ledger, out, ExportQuery(FROM_MS, TO_MS, "inquiry 42"),
                  load_private_key(keys[0]), actor="tester", params=EngineParams())
    return out


def _failures(path: Path, public: Path) -> list[str]:
    return verify_bundle(path, load_public_key(public))[0]


def _rezip(source: Path, target: Path,
           extra: Callable[[zipfile.ZipFile], None] = lambda _archive: None) -> Path:
    """A copy of the zip `source` with `extra` entries written before the genuine ones."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        extra(dst)
        for info in src.infolist():
            dst.writestr(info, src.read(info))
    return target


def _cli_verify(target: Path, public: Path) -> subprocess.CompletedProcess[bytes]:
    done = run_cli("verify", str(target), "--public-key", str(public))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert b"Traceback" not in done.stderr
    assert all(line.startswith("FAIL ") for line in done.stdout.decode().splitlines())
    return done


# --- entries unzip would read differently from verify ------------------------------

@pytest.mark.parametrize("name", [bundle.REPORT, bundle.FINDINGS])
def test_a_second_entry_of_the_same_name_is_refused(tmp_path: Path, exported: Path,
                                                    keys: tuple[Path, Path], name: str) -> None:
    """unzip extracts the first copy: a fake put first must not verify OK."""
    with pytest.warns(UserWarning, match="Duplicate name"):
        forged = _rezip(exported.with_name(f"{TOP}.zip"), tmp_path / "forged.zip",
                        lambda archive: archive.writestr(f"{TOP}/{name}", b"fake\n"))
    failures = _failures(forged, keys[1])
    assert f"{name}: 2 entries of this name in the zip (refused: one could be extracted " \
        "and another verified)" in failures
    assert any(f.startswith(f"{name}: SHA-256 does not match") for f in failures), failures
    _cli_verify(forged, keys[1])


@pytest.mark.parametrize(("entry", "mode", "reason"), [
    (f"{TOP}/../{bundle.MANIFEST}", 0o644, "a '..' in its path"),
    (f"/{TOP}/{bundle.REPORT}", 0o644, "an absolute path"),
    (f"C:/{TOP}/{bundle.REPORT}", 0o644, "an absolute path"),
    (f"{TOP}\\..\\{bundle.REPORT}", 0o644, "a backslash in the entry name"),
    (f"{TOP}/evidence/link.json", stat.S_IFLNK | 0o777, "a symbolic link"),
    (f"{TOP}/evidence/line\nbreak.json", 0o644, "unprintable characters"),
])
def test_unsafe_entries_are_refused_as_such(tmp_path: Path, exported: Path,
                                            keys: tuple[Path, Path], entry: str, mode: int,
                                            reason: str) -> None:
    def add(archive: zipfile.ZipFile) -> None:
        info = zipfile.ZipInfo(entry)
        info.external_attr = (mode if stat.S_IFMT(mode) else stat.S_IFREG | mode) << 16
        archive.writestr(info, b"/etc/passwd")

    forged = _rezip(exported.with_name(f"{TOP}.zip"), tmp_path / "forged.zip", add)
    failures = _failures(forged, keys[1])
    assert len(failures) == 1, failures  # the genuine files still verify: no "missing"
    assert "zip entry refused: " + reason in failures[0]
    assert "\n" not in failures[0]
    _cli_verify(forged, keys[1])


def test_a_symbolic_link_in_a_bundle_directory_is_refused(exported: Path,
                                                          keys: tuple[Path, Path]) -> None:
    (exported / "evidence" / "link.json").symlink_to("/etc/hostname")
    failures = _failures(exported, keys[1])
    assert failures == ["evidence/link.json: a symbolic link (refused: it could point "
                        "anywhere)"]


# --- zip bombs and broken zips -----------------------------------------------------

_PEAK_RSS = """
import sys
from pathlib import Path
from streams.evidence.keys import load_public_key
from streams.evidence.verify import verify_bundle
failures, _ = verify_bundle(Path(sys.argv[1]), load_public_key(sys.argv[2]))
print("\\n".join(failures))
# VmHWM, the peak of this process's own memory: ru_maxrss would also count the pages
# of the (large) test process this one was forked from, which exec does not reset.
status = Path("/proc/self/status").read_text()
print(int(next(l for l in status.splitlines() if l.startswith("VmHWM:")).split()[1]) // 1024)
"""


def _bomb(archive: zipfile.ZipFile, name: str, mib: int) -> None:
    with archive.open(name, "w", force_zip64=True) as entry:
        for _ in range(mib):
            entry.write(bytes(1 << 20))


def test_a_zip_bomb_is_streamed_in_bounded_memory(tmp_path: Path, exported: Path,
                                                  keys: tuple[Path, Path]) -> None:
    """512 MiB of zeros in a 2 MB zip: verify hashes it as a stream (it read it whole)."""
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(exported.with_name(f"{TOP}.zip")) as src, \
            zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as dst:
        for info in src.infolist():
            if info.filename == f"{TOP}/{bundle.FINDINGS}":
                _bomb(dst, info.filename, 256)  # one line of 256 MiB
            elif info.filename == f"{TOP}/{bundle.REPORT}":
                _bomb(dst, info.filename, 256)
            else:
                dst.writestr(info, src.read(info))
    assert bomb.stat().st_size < 4 << 20
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(bomb), str(keys[1])],
                          capture_output=True, check=True, timeout=120)
    *failures, peak_mib = done.stdout.decode().splitlines()
    assert int(peak_mib) < 200, (peak_mib, failures)
    assert f"{bundle.REPORT}: SHA-256 does not match the manifest (file changed)" in failures
    assert f"{bundle.FINDINGS} line 1: longer than {verify.MAX_LINE_BYTES} bytes; " \
        "not read" in failures


def test_files_over_the_limits_are_not_read(tmp_path: Path, exported: Path,
                                            keys: tuple[Path, Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle, "MAX_FILE_BYTES", 1000)
    monkeypatch.setattr(verify, "MAX_MANIFEST_BYTES", 100)
    failures = _failures(exported.with_name(f"{TOP}.zip"), keys[1])
    size = (exported / bundle.MANIFEST).stat().st_size
    assert failures == [f"{bundle.MANIFEST}: {size} bytes, more than the limit of 100; "
                        "not read"]
    monkeypatch.setattr(verify, "MAX_MANIFEST_BYTES", 1 << 20)
    report = (exported / bundle.REPORT).stat().st_size
    assert f"{bundle.REPORT}: {report} bytes, more than the limit of 1000; not read" \
        in _failures(exported, keys[1])
    monkeypatch.setattr(bundle, "MAX_BUNDLE_BYTES", 5000)
    [failure] = _failures(exported.with_name(f"{TOP}.zip"), keys[1])
    assert failure.startswith(f"{TOP}.zip: its files add up to ")
    assert failure.endswith("more than the limit of 5000; not verified")


def test_an_unsigned_large_manifest_is_not_parsed(tmp_path: Path, exported: Path,
                                                  keys: tuple[Path, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "MAX_UNSIGNED_MANIFEST_BYTES", 100)
    assert _failures(exported, keys[1]) == []  # signed: parsed whatever its size
    (exported / bundle.MANIFEST).write_bytes(b"[" + b"0," * 1000 + b"0]")
    assert _failures(exported, keys[1])[1:] == [
        f"{bundle.MANIFEST}: more than 100 bytes and not signed by the given key; "
        "not read further"]


def test_a_truncated_zip_is_a_failed_verification(tmp_path: Path, exported: Path,
                                                  keys: tuple[Path, Path]) -> None:
    data = exported.with_name(f"{TOP}.zip").read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(data[:len(data) // 2])
    done = _cli_verify(cut, keys[1])
    assert done.stdout.decode().splitlines() == [
        "FAIL cut.zip: not a readable zip file (File is not a zip file)"]


def test_a_corrupt_entry_is_reported_not_raised(tmp_path: Path, exported: Path,
                                                keys: tuple[Path, Path]) -> None:
    source = exported.with_name(f"{TOP}.zip")
    with zipfile.ZipFile(source) as archive:
        info = archive.getinfo(f"{TOP}/{bundle.REPORT}")
    data = bytearray(source.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode())  # past the local header
    for offset in range(start, start + info.compress_size, 7):
        data[offset] ^= 0xFF
    broken = tmp_path / "broken.zip"
    broken.write_bytes(bytes(data))
    done = _cli_verify(broken, keys[1])
    [line] = done.stdout.decode().splitlines()
    assert line.startswith(f"FAIL {bundle.REPORT}: cannot be read ("), line


# --- the findings must be what the export asked for --------------------------------

def _resign(exported: Path, key: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """What an exporter with a bug (or a ledger that lies) would sign with the real key."""
    manifest = orjson.loads((exported / bundle.MANIFEST).read_bytes())
    change(manifest)
    raw = rfc8785.dumps(manifest)
    (exported / bundle.MANIFEST).write_bytes(raw)
    (exported / bundle.SIGNATURE).write_bytes(load_private_key(key).sign(raw))
    reattest(exported, key)


@pytest.mark.parametrize(("name", "option"), [("rule", "--rule"), ("account", "--account"),
                                              ("subject", "--subject")])
def test_a_finding_outside_the_declared_query_fails(exported: Path, keys: tuple[Path, Path],
                                                     name: str, option: str) -> None:
    field = {"rule": "rule", "account": "account_id", "subject": "subject_id"}[name]
    _resign(exported, keys[0], lambda m: m["filters"].update({name: FINDINGS[0][field]}))
    assert _failures(exported, keys[1]) == [
        f"{bundle.FINDINGS}: {FINDINGS[1]['finding_id']} does not match the export's "
        f"{option} filter"]


def test_an_amendment_of_no_exported_finding_fails(exported: Path,
                                                   keys: tuple[Path, Path]) -> None:
    lines = (exported / bundle.FINDINGS).read_bytes().splitlines(keepends=True)
    (exported / bundle.FINDINGS).write_bytes(lines[1])
    (exported / "evidence" / "ev-a.json").unlink()
    consent = (exported / bundle.CONSENT_RECORDS).read_bytes().splitlines(keepends=True)
    (exported / bundle.CONSENT_RECORDS).write_bytes(consent[1])

    def drop_first(manifest: dict[str, Any]) -> None:
        manifest["findings"] = manifest["findings"][1:]
        manifest["files"][bundle.FINDINGS] = bundle.sha256_hex(lines[1])
        manifest["files"][bundle.CONSENT_RECORDS] = bundle.sha256_hex(consent[1])
        del manifest["files"]["evidence/ev-a.json"]

    _resign(exported, keys[0], drop_first)
    assert _failures(exported, keys[1]) == [
        f"{bundle.AMENDMENTS}: {'a' * 64} amends no exported finding"]


# --- export and keys ----------------------------------------------------------------

@pytest.mark.parametrize("purpose", ["\u200b", " \u200b\u2060 ", "\ufeff", "\u3164", "\t\n"])
def test_export_refuses_an_invisible_purpose(tmp_path: Path, ledger: Ledger,
                                             keys: tuple[Path, Path], purpose: str) -> None:
    ledger.close()
    done = run_cli("export", "--ledger", str(tmp_path / "ledger.db"), "--from", FROM,
                   "--to", TO, "--purpose", purpose, "--private-key", str(keys[0]),
                   str(tmp_path / "o"))
    assert done.returncode == 2, done.stdout
    assert done.stderr.decode().count("\n") == 1 and b"--purpose" in done.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o604, True), (0o620, True),
                                              (0o440, False), (0o600, False)])
def test_export_warns_about_a_private_key_others_can_read(
        tmp_path: Path, ledger: Ledger, keys: tuple[Path, Path], mode: int,
        warned: bool) -> None:
    ledger.close()
    keys[0].chmod(mode)
    done = run_cli("export", "--ledger", str(tmp_path / "ledger.db"), "--from", FROM,
                   "--to", TO, "--purpose", "audit", "--private-key", str(keys[0]),
                   str(tmp_path / "o"))
    assert done.returncode == 0, done.stderr
    expected = [f"consentwatch: warning: private key {keys[0]} has mode {mode:04o}: other "
                f"users can read or replace it (chmod 600 {keys[0]})"] if warned else []
    assert done.stderr.decode().splitlines() == expected


def test_keys_generate_ignores_a_permissive_umask(tmp_path: Path) -> None:
    out = tmp_path / "new" / "keys"
    subprocess.run([sys.executable, "-m", "streams.cli.app", "keys", "generate", "--out",
                    str(out)], check=True, capture_output=True, umask=0)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "consentwatch.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "consentwatch.pub").stat().st_mode) == 0o644


def test_a_deleted_findings_file_is_one_failure_not_one_per_evidence_file(
        exported: Path, keys: tuple[Path, Path]) -> None:
    """A regulator reads the failures: the one cause, not a line for each file it
    orphans."""
    (exported / bundle.FINDINGS).unlink()
    failures = _failures(exported, keys[1])
    assert failures.count(f"{bundle.FINDINGS}: missing from the bundle") == 1
    assert not [line for line in failures if "no exported finding cites it" in line]


@pytest.mark.parametrize("name", ["DPA\u00a0inquiry", "back\\slash", "line\nbreak"])
def test_export_refuses_a_name_its_zip_could_not_be_verified_with(
        tmp_path: Path, ledger: Ledger, keys: tuple[Path, Path], name: str) -> None:
    """The zip's folder is the bundle's name: verify refuses entries under such a folder."""
    from streams.errors import ConfigError

    with pytest.raises(ConfigError, match="the bundle's name cannot be used"):
        export_bundle(ledger, tmp_path / name, ExportQuery(0, 2**52, "inquiry"),
                      load_private_key(keys[0]), actor="tester")
    assert list(tmp_path.glob("*inquiry*")) == list(tmp_path.glob("*slash*")) == []


def test_two_events_under_one_id_get_a_file_each(tmp_path: Path, keys: tuple[Path, Path]
                                                  ) -> None:
    """Two findings citing different events of one id (the producer's ids collided, or
    two example sets share a ledger): each finding's evidence file is its own event."""
    first = _finding("x", rule="covert-profile-view", account="acct1", subject="u-1")
    second = _finding("x", rule="disclosure-without-consent", account="acct1", subject="u-2")
    assert first["evidence"][0]["event_id"] == second["evidence"][0]["event_id"] == "ev-x"
    assert first["evidence"][0] != second["evidence"][0]
    with open_ledger(str(tmp_path / "ledger.db")) as led:
        led.append("finding", [first, second])
        export_bundle(led, tmp_path / "bundle", ExportQuery(0, 2**52, "inquiry"),
                      load_private_key(keys[0]), actor="tester")
    out = tmp_path / "bundle"
    files = sorted(p.name for p in (out / "evidence").iterdir())
    digest = hashlib.sha256(rfc8785.dumps(second["evidence"][0])).hexdigest()
    assert files == ["ev-x.json", f"ev-x~{digest}.json"]
    assert orjson.loads((out / "evidence" / "ev-x.json").read_bytes()) == first["evidence"][0]
    assert orjson.loads((out / "evidence" / f"ev-x~{digest}.json").read_bytes()) == \
        second["evidence"][0]
    report = (out / bundle.REPORT).read_text()
    assert f'href="evidence/ev-x~{digest}.json"' in report
    assert _failures(out, keys[1]) == []
    assert _failures(tmp_path / "bundle.zip", keys[1]) == []
    # Swapped, the files no longer match the findings that cite them.
    a, b = out / "evidence" / "ev-x.json", out / "evidence" / f"ev-x~{digest}.json"
    a_bytes = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(a_bytes)
    assert any("differs from the evidence event" in f for f in _failures(out, keys[1]))


def _would_raise(name: str, at: int, account: str) -> dict[str, Any]:
    """A WOULD_RAISE amendment of a finding never raised: its trigger, `ev-<name>`, was
    decided without one, and a late consent withdrawal showed the rule fires."""
    from streams.model.findings import amendment_id, finding_id

    trigger = {"type": "EnrichmentRequested", "event_id": f"ev-{name}", "occurred_at": at,
               "account_id": account, "meeting_id": "m9", "subject_id": "u-9",
               "provider": "prov", "data_use": "third_party_sharing.enrichment",
               "data_sent": ["user.name"], "trigger": "USER_ACTION",
               "requested_by": "hmac-sha256:00"}
    never = finding_id("enrichment-without-consent", f"ev-{name}")
    return {"amendment_id": amendment_id(never, "late-w", "WOULD_RAISE"),
            "kind": "WOULD_RAISE", "finding_id": never, "rule": "enrichment-without-consent",
            "subject_id": "u-9", "trigger_event_id": f"ev-{name}", "late_event_id": "late-w",
            "evidence_event_ids": [f"ev-{name}"], "occurred_at": at, "detected_at": at + 9,
            "explanation": "would have been raised", "evidence": [trigger], "late_event": None}


def test_a_finding_never_raised_is_exported_with_its_amendment(
        tmp_path: Path, ledger: Ledger, keys: tuple[Path, Path]) -> None:
    """The ledger holds no finding a WOULD_RAISE names: its amendment is exported by the
    query itself (window, rule, subject, and its trigger's account), and verifies."""
    inside = _would_raise("late-in", FINDINGS[0]["occurred_at"] + 5, "acct1")
    other_account = _would_raise("late-other", FINDINGS[0]["occurred_at"] + 6, "acct2")
    outside = _would_raise("late-out", TO_MS + 5, "acct1")
    ledger.append("amendment", [inside, other_account, outside])
    # An exception of acct2's covers its finding never raised (and no exported finding).
    now = int(time.time() * 1000)  # the ledger refuses an exception dated far from its clock
    excepted = new_exception(account_id="acct2", provider="prov", rule=None,
                             from_ms=other_account["occurred_at"],
                             to_ms=other_account["occurred_at"] + 1, reason="DPA",
                             expires_at_ms=now + 10**9, at_ms=now - 10, author="carol")
    ledger.append("exception", [excepted])
    out = tmp_path / "all"
    export_bundle(ledger, out, ExportQuery(FROM_MS, TO_MS, "inquiry"),
                  load_private_key(keys[0]), actor="tester", now_ms=now)
    ids = [orjson.loads(line)["amendment_id"]
           for line in (out / bundle.AMENDMENTS).read_bytes().splitlines()]
    assert inside["amendment_id"] in ids and other_account["amendment_id"] in ids
    assert outside["amendment_id"] not in ids
    assert "should have been raised" in (out / bundle.REPORT).read_text()
    assert (out / bundle.EXCEPTIONS).read_bytes() == rfc8785.dumps(excepted) + b"\n"
    # summary.csv: after the findings, a row for each finding never raised, read as the
    # finding would have been (account, meeting, provider from its trigger).
    rows = list(csv.DictReader(io.StringIO((out / bundle.SUMMARY).read_text())))
    never = [row for row in rows if row["status"] == NEVER_RAISED]
    assert rows[-len(never):] == never and len(rows) - len(never) == len(FINDINGS)
    by_id = {row["finding_id"]: row for row in never}
    assert set(by_id) == {inside["finding_id"], other_account["finding_id"]}
    row = by_id[inside["finding_id"]]
    assert (row["rule"], row["severity"], row["account_id"], row["meeting_id"],
            row["provider"], row["trigger_event_id"], row["review_status"],
            row["excepted"], row["consent_status"]) == (
        "enrichment-without-consent", load_catalogue()["enrichment-without-consent"].severity,
        "acct1", "m9", "prov", "ev-late-in", NEVER_RAISED, "no", "none in force")
    assert row["regulations"] and row["explanation"] == "would have been raised"
    assert by_id[other_account["finding_id"]]["excepted"] == "yes"
    assert _failures(out, keys[1]) == []
    one_account = tmp_path / "acct1"
    export_bundle(ledger, one_account, ExportQuery(FROM_MS, TO_MS, "inquiry", account="acct1"),
                  load_private_key(keys[0]), actor="tester")
    ids = [orjson.loads(line)["amendment_id"]
           for line in (one_account / bundle.AMENDMENTS).read_bytes().splitlines()]
    assert inside["amendment_id"] in ids and other_account["amendment_id"] not in ids
    assert _failures(one_account, keys[1]) == []

    # Signed with the real key, an amendment outside the account the manifest names fails.
    def widen(manifest: dict[str, Any]) -> None:
        manifest["filters"]["account"] = "acct2"

    _resign(one_account, keys[0], widen)
    assert any("(would raise " in failure and "--account filter" in failure
               for failure in _failures(one_account, keys[1]))


def test_every_amendment_of_a_finding_never_raised_is_exported(
        tmp_path: Path, ledger: Ledger, keys: tuple[Path, Path]) -> None:
    """A late withdrawal made a decision WOULD_RAISE, a later late grant retracted it: the
    bundle holds both (the first alone told a regulator it should have been raised), and
    the query selects it by its trigger's time (an amendment's own is its late event's)."""
    from streams.model.findings import amendment_id

    trigger_at = FINDINGS[0]["occurred_at"] + 5
    would = _would_raise("chain", trigger_at, "acct1")
    would["occurred_at"] = TO_MS + 60_000  # the late withdrawal came after the window
    retracted = {**would, "kind": "RETRACTED", "late_event_id": "late-g",
                 "amendment_id": amendment_id(would["finding_id"], "late-g", "RETRACTED"),
                 "explanation": "would not have been raised", "occurred_at": TO_MS + 90_000}
    ledger.append("amendment", [would, retracted])
    out = tmp_path / "chain"
    export_bundle(ledger, out, ExportQuery(FROM_MS, TO_MS, "inquiry"),
                  load_private_key(keys[0]), actor="tester")
    lines = (out / bundle.AMENDMENTS).read_bytes().splitlines()
    kinds = [(line["amendment_id"], line["kind"]) for line in map(orjson.loads, lines)
             if line["finding_id"] == would["finding_id"]]
    assert kinds == [(would["amendment_id"], "WOULD_RAISE"),
                     (retracted["amendment_id"], "RETRACTED")]
    rows = list(csv.DictReader(io.StringIO((out / bundle.SUMMARY).read_text())))
    row = next(row for row in rows if row["finding_id"] == would["finding_id"])
    assert (row["status"], row["review_status"]) == ("retracted", NEVER_RAISED)
    assert row["occurred_at"] == describe_ms(trigger_at)
    assert _failures(out, keys[1]) == []
    assert _failures(tmp_path / "chain.zip", keys[1]) == []

    # Without its WOULD_RAISE, the retraction amends nothing the bundle holds.
    alone = b"".join(line + b"\n" for line in lines
                     if orjson.loads(line)["amendment_id"] != would["amendment_id"])

    def drop_would_raise(manifest: dict[str, Any]) -> None:
        manifest["amendments"] = [e for e in manifest["amendments"]
                                  if e["id"] != would["amendment_id"]]
        manifest["files"][bundle.AMENDMENTS] = bundle.sha256_hex(alone)

    (out / bundle.AMENDMENTS).write_bytes(alone)
    _resign(out, keys[0], drop_would_raise)
    assert any("amends no exported finding" in failure for failure in _failures(out, keys[1]))


def test_a_finding_retracted_and_reinstated_before_it_reached_the_ledger_verifies(
        tmp_path: Path, ledger: Ledger, keys: tuple[Path, Path]) -> None:
    """The findings and amendments topics are read together, in no fixed order: a raised
    finding's retraction and reinstatement can be in the ledger before the finding. The
    export takes it for one never raised, with both amendments; verify accepts them in
    ledger order, the RETRACTED before the WOULD_RAISE."""
    from streams.model.findings import amendment_id

    would = _would_raise("reinstated", FROM_MS + 5000, "acct1")
    retracted = {**would, "kind": "RETRACTED", "late_event_id": "late-g",
                 "amendment_id": amendment_id(would["finding_id"], "late-g", "RETRACTED"),
                 "explanation": "would not have been raised", "occurred_at": FROM_MS + 6000}
    ledger.append("amendment", [retracted])
    ledger.append("amendment", [{**would, "occurred_at": FROM_MS + 7000}])
    out = tmp_path / "early"
    export_bundle(ledger, out, ExportQuery(FROM_MS, TO_MS, "inquiry"),
                  load_private_key(keys[0]), actor="tester")
    kinds = [line["kind"] for line in map(orjson.loads,
                                          (out / bundle.AMENDMENTS).read_bytes().splitlines())
             if line["finding_id"] == would["finding_id"]]
    assert kinds == ["RETRACTED", "WOULD_RAISE"]
    assert _failures(out, keys[1]) == []
