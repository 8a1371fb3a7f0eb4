"""report.html and summary.csv of a real export: what a regulator reads first.

The ledger holds the seed scenario's findings (real evidence) and made-up ones of each
severity, one retracted by a late event, one whose evidence a late event changed, and
one whose values try HTML and spreadsheet-formula injection. The report is also
rendered by Debian's headless Chromium (deploy/packages.sh installs it) and the
screenshot decoded to check that it is a page, not a blank.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization

from streams.engine import EngineParams
from streams.evidence import bundle
from streams.evidence.export import ExportQuery, export_bundle
from streams.evidence.export.summary import COLUMNS, amendments_by_finding, finding_status
from streams.evidence.keys import generate_keypair, load_private_key, load_public_key
from streams.evidence.ledger import LedgerEntry, open_ledger
from streams.evidence.verify import verify_bundle
from tests.evidence.test_export_verify import FROM_MS, TO_MS
from tests.evidence.test_export_verify import _finding as made_up

HOSTILE_EXPLANATION = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
HOSTILE_PROVIDER = '=HYPERLINK("http://evil.example","click")'
SEVERITY_ORDER = ("CRITICAL", "HIGH", "MEDIUM", "LOW")


def _amendment(kind: str, finding: dict[str, Any], late: str) -> dict[str, Any]:
    return {
        "amendment_id": hashlib.sha256(f"{kind}|{late}".encode()).hexdigest(),
        "kind": kind, "finding_id": finding["finding_id"], "rule": finding["rule"],
        "subject_id": finding["subject_id"], "trigger_event_id": finding["trigger_event_id"],
        "late_event_id": late, "evidence_event_ids": finding["evidence_event_ids"],
        "occurred_at": finding["occurred_at"], "detected_at": finding["detected_at"] + 1,
        "explanation": f"a late event {kind.lower()} it",
        "late_event": {"type": "NoticeDelivered", "event_id": late,
                       "occurred_at": finding["occurred_at"] + 1000, "account_id": "acct9",
                       "meeting_id": "m9", "subject_id": finding["subject_id"],
                       "notice_kind": "PROFILE_VIEW", "provider": "prov"}}


def _severe(name: str, at: int, severity: str, **extra: Any) -> dict[str, Any]:
    return made_up(name, at) | {"severity": severity} | extra


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory,
             replayed: list[dict[str, Any]]) -> Iterator[tuple[Path, Path]]:
    base = tmp_path_factory.mktemp("report")
    keys = generate_keypair(base / "keys")
    ledger = open_ledger(str(base / "ledger.db"))
    retracted = _severe("retracted", FROM_MS + 3_000, "CRITICAL")
    changed = _severe("changed", FROM_MS + 4_000, "LOW")
    ledger.append("finding", replayed)
    ledger.append("finding", [
        _severe("late-critical", FROM_MS + 9_000, "CRITICAL"), retracted,
        _severe("medium", FROM_MS + 1_000, "MEDIUM"), changed,
        _severe("hostile", FROM_MS + 2_000, "HIGH", explanation=HOSTILE_EXPLANATION,
                provider=HOSTILE_PROVIDER)])
    ledger.append("amendment", [_amendment("RETRACTED", retracted, "late-r"),
                                _amendment("EVIDENCE_CHANGED", changed, "late-c")])
    query = ExportQuery(FROM_MS, TO_MS, "DPA inquiry <2026/17>")
    export_bundle(ledger, base / "bundle", query, load_private_key(keys[0]),
                  actor="auditor & co", params=EngineParams(), now_ms=FROM_MS + 86_400_000)
    ledger.close()
    yield base / "bundle", keys[1]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    from tests.conftest import EXAMPLES_DIR, run_cli

    out = tmp_path_factory.mktemp("replay") / "findings.jsonl"
    done = run_cli("replay", str(EXAMPLES_DIR / "seed-scenario" / "events.jsonl"),
                   "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    return [orjson.loads(line) for line in out.read_bytes().splitlines()]


def _html(exported: tuple[Path, Path]) -> str:
    return (exported[0] / bundle.REPORT).read_text()


def _findings(exported: tuple[Path, Path]) -> dict[str, dict[str, Any]]:
    lines = (exported[0] / bundle.FINDINGS).read_bytes().splitlines()
    return {(record := orjson.loads(line))["explanation"]: record for line in lines}


def _sections(html: str) -> dict[str, str]:
    """finding id -> its <section> markup."""
    return {m.group(1): m.group(0) for m in
            re.finditer(r'<section id="finding-([0-9a-f]{64})".*?</section>', html, re.S)}


def test_the_bundle_still_verifies(exported: tuple[Path, Path]) -> None:
    assert verify_bundle(exported[0], load_public_key(exported[1]))[0] == []


def test_a_retracted_finding_is_marked_muted_and_counted_apart(
        exported: tuple[Path, Path]) -> None:
    html, findings = _html(exported), _findings(exported)
    sections = _sections(html)
    retracted = sections[findings["made-up finding retracted"]["finding_id"]]
    assert 'class="finding retracted"' in retracted
    assert '<span class="badge">retracted by a late event</span>' in retracted
    assert '<div class="superseded">' in retracted  # the old timeline, greyed, explained
    assert "<strong>NoticeDelivered</strong> (the late event)" in retracted
    assert "evidence/late-r.json" not in retracted  # not a file of the bundle
    assert ".retracted .sev{background:#bdc1c6" in html  # muted, not red
    changed = sections[findings["made-up finding changed"]["finding_id"]]
    assert "evidence changed by a late event" in changed and "superseded" not in changed
    others = [s for fid, s in sections.items()
              if fid != findings["made-up finding retracted"]["finding_id"]]
    assert all("retracted by a late event" not in s for s in others)
    total = len(findings)
    assert f"{total - 1} in force, 1 retracted by a late event ({total} exported)" in html
    # the summary by severity: the retracted CRITICAL counted apart from the one in force
    critical = sum(1 for f in findings.values() if f["severity"] == "CRITICAL")
    assert (f'<tr><td>CRITICAL</td><td class="n">{critical - 1}</td><td class="n">1</td></tr>'
            in html.split('<h2 id="summary">')[1])


def test_csv_has_a_status_column_from_the_amendments(exported: tuple[Path, Path]) -> None:
    text = (exported[0] / bundle.SUMMARY).read_bytes().decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == COLUMNS
    status = {row["explanation"]: row["status"] for row in rows}
    assert status["made-up finding retracted"] == "retracted"
    assert status["made-up finding changed"] == "evidence_changed"
    assert status["made-up finding medium"] == "open"
    assert len(rows) == len(_findings(exported))


def _entry(index: int, kind: str) -> LedgerEntry:
    record = {"amendment_id": str(index), "finding_id": "f", "kind": kind}
    return LedgerEntry(index, "amendment", str(index), 0, "r", "", "s", record, b"")


def test_the_last_amendment_decides_the_status() -> None:
    assert finding_status([]) == "open"
    later_first = [_entry(7, "WOULD_RAISE"), _entry(3, "RETRACTED")]
    assert finding_status(amendments_by_finding(later_first)["f"]) == "reinstated"
    assert finding_status([_entry(1, "EVIDENCE_CHANGED"), _entry(2, "RETRACTED")]) == "retracted"
    assert finding_status([_entry(1, "SOMETHING_NEW")]) == "something_new"


def test_the_top_says_who_what_when_why_and_with_which_key(exported: tuple[Path, Path]) -> None:
    html = _html(exported)
    top = html.split('<h2 id="contents">')[0]
    raw = load_public_key(exported[1]).public_bytes(serialization.Encoding.Raw,
                                                    serialization.PublicFormat.Raw)
    assert f"SHA256:{hashlib.sha256(raw).hexdigest()}" in top
    assert "<td>auditor &amp; co</td>" in top  # the exporter, escaped
    assert "DPA inquiry &lt;2026/17&gt;" in top  # the purpose, escaped
    assert "<th>Exported</th><td>2026-03-02T00:00:00.000Z</td>" in top
    assert "from 2026-03-01T00:00:00.000Z (inclusive)" in top
    assert "keyed hash" in top and "hmac-sha256:" in top  # what pseudonyms are
    for heading in ("Rule", "Severity", "Provider", "Account"):
        assert f'<table class="counts"><tr><th>{heading}</th>' in top


def test_contents_link_every_finding_by_severity_then_time(exported: tuple[Path, Path]) -> None:
    html, findings = _html(exported), _findings(exported)
    links = re.findall(r'<li class="\w+"><a href="#finding-([0-9a-f]{64})">',
                       html.split('<ol class="toc">')[1].split("</ol>")[0])
    sections = re.findall(r'<section id="finding-([0-9a-f]{64})"', html)
    assert links == sections and sorted(links) == sorted(f["finding_id"]
                                                         for f in findings.values())
    by_id = {f["finding_id"]: f for f in findings.values()}
    order = [(SEVERITY_ORDER.index(by_id[i]["severity"]), by_id[i]["occurred_at"]) for i in links]
    assert order == sorted(order)
    assert {by_id[i]["severity"] for i in links} == set(SEVERITY_ORDER)


def test_evidence_fields_are_shown_inline(exported: tuple[Path, Path]) -> None:
    html, findings = _html(exported), _findings(exported)
    medium = _sections(html)[findings["made-up finding medium"]["finding_id"]]
    assert '<table class="fields">' in medium
    assert "<tr><th>data_disclosed</th><td><code>user.name</code></td></tr>" in medium
    assert '<tr><th>viewer_id</th><td><code title="pseudonym">hmac-sha256:00</code>' in medium
    for record in findings.values():  # every cited event of every finding, field by field
        section = _sections(html)[record["finding_id"]]
        for event in record["evidence"]:
            for name in event.keys() - {"type", "event_id", "occurred_at"}:
                assert f"<tr><th>{name}</th>" in section, (record["rule"], name)


def test_hostile_values_stay_text(exported: tuple[Path, Path]) -> None:
    html = _html(exported)
    assert "<script" not in html and "onerror=alert(1)>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    rows = list(csv.DictReader(io.StringIO((exported[0] / bundle.SUMMARY).read_text())))
    [hostile] = [r for r in rows if r["explanation"] == HOSTILE_EXPLANATION]
    assert hostile["provider"] == "'" + HOSTILE_PROVIDER


def test_print_styles(exported: tuple[Path, Path]) -> None:
    printed = _html(exported).split("@media print{")[1].split("\n}\n")[0]
    assert "section{break-before:page" in printed  # one finding per page
    assert 'a[href]:not([href^="#"])::after{content:" (" attr(href) ")"' in printed
    assert ".sev,.badge,.retracted .sev{background:none" in printed  # no ink on badges


# --- looking at it: Debian's headless Chromium renders the report -------------------------

def _png_rows(png: bytes, rows: int) -> tuple[int, int, list[bytes]]:
    """(width, height, the first `rows` rows unfiltered) of an 8-bit RGB(A) PNG."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n"), "not a PNG"
    offset, idat, header = 8, [], b""
    while offset < len(png):
        length, kind = struct.unpack(">I4s", png[offset:offset + 8])
        data = png[offset + 8:offset + 8 + length]
        header = data if kind == b"IHDR" else header
        idat += [data] if kind == b"IDAT" else []
        offset += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = zlib.decompressobj().decompress(b"".join(idat), (stride + 1) * rows)
    previous, out = bytes(stride), []
    for y in range(min(rows, height)):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc
                                      else corner)) & 0xFF
        previous = bytes(line)
        out.append(previous)
    return width, height, out


def test_chromium_renders_the_report(exported: tuple[Path, Path], tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, ("Debian's chromium is not installed: run deploy/packages.sh "
                      "(apt-get install -y chromium) before the tests")
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
         "--window-size=1280,2000", (exported[0] / bundle.REPORT).resolve().as_uri()],
        capture_output=True, timeout=120, check=False)
    assert done.returncode == 0 and shot.is_file(), done.stderr.decode(errors="replace")[-2000:]
    png = shot.read_bytes()
    assert len(png) > 50_000, f"a {len(png)}-byte screenshot is a blank page"
    width, height, rows = _png_rows(png, 700)
    assert (width, height) == (1280, 2000)
    bpp = len(rows[0]) // width
    colours = {row[i:i + 3] for row in rows for i in range(0, len(row), bpp)}
    assert len(colours) > 50, f"only {len(colours)} colours: not a rendered page"
    assert bytes.fromhex("ffffff") in colours  # the page
    assert any(r < 80 and g < 80 and b < 80 for r, g, b in colours)  # text
    if keep := os.environ.get("CONSENTWATCH_KEEP_SCREENSHOT"):
        shutil.copy(shot, keep)  # to look at it
