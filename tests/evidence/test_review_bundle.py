"""Export bundles carry the review trail (issue 17): the reviews and exceptions of the
exported findings, each proven against the bundle's checkpoint; `verify` checks them
offline; the report shows each finding's review history, status and exceptions."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785

from streams.evidence import bundle
from streams.evidence.exception_scope import new_exception
from streams.evidence.export import ExportQuery, export_bundle
from streams.evidence.keys import generate_keypair, load_private_key, load_public_key
from streams.evidence.ledger import SqlLedger, open_ledger
from streams.evidence.review import new_review
from streams.evidence.verify import verify_bundle
from streams.model.timestamps import parse_rfc3339_ms
from tests.conftest import run_cli
from tests.evidence.test_consistency import reattest

FROM_MS = parse_rfc3339_ms("2026-03-01T00:00:00Z")
TO_MS = parse_rfc3339_ms("2026-04-01T00:00:00Z")
NOW = TO_MS + 86_400_000
HOSTILE = '"><img src=x onerror=alert(1)><script>alert(2)</script>'


def _finding(name: str, account: str, at: int) -> dict[str, Any]:
    return {
        "finding_id": hashlib.sha256(f"covert-profile-view|ev-{name}".encode()).hexdigest(),
        "rule": "covert-profile-view", "severity": "HIGH", "subject_id": "u-1",
        "account_id": account, "meeting_id": "m1", "provider": "prov",
        "trigger_event_id": f"ev-{name}", "evidence_event_ids": [f"ev-{name}"],
        "occurred_at": at, "detected_at": at + 1, "explanation": f"finding {name}",
        "evidence": [{"type": "ProfileViewed", "event_id": f"ev-{name}", "occurred_at": at,
                      "account_id": account, "subject_id": "u-1", "provider": "prov"}],
    }


A = _finding("a", "acct1", FROM_MS + 1000)
B = _finding("b", "acct2", FROM_MS + 2000)
OUTSIDE = _finding("c", "acct1", TO_MS + 5)  # not exported: after the window


_LATEST: dict[str, str] = {}  # finding_id -> its latest review made here


def _review(of: dict[str, Any], action: str, n: int, **fields: Any) -> dict[str, Any]:
    """The next review of `of`, naming the one made before it (its prev_review_id)."""
    made = new_review(of["finding_id"], "alice", action, NOW - 1000 + n,
                      prev_review_id=_LATEST.get(of["finding_id"]), **fields)
    _LATEST[of["finding_id"]] = made["review_id"]
    return made


REVIEWS = [
    _review(A, "acknowledge", 1),
    _review(A, "comment", 2, text=HOSTILE),
    _review(B, "assign", 3, assignee="bob"),
    _review(A, "resolve", 4, reason="false_positive", false_positive_kind="test_traffic",
            note="synthetic traffic from the QA tenant"),
    _review(OUTSIDE, "acknowledge", 5),
]
EXCEPTION = new_exception(account_id="acct1", provider="prov", rule=None, from_ms=FROM_MS,
                          to_ms=FROM_MS + 1500, reason="DPA with prov until 2027",
                          expires_at_ms=NOW + 10**9, at_ms=NOW - 5000, author="carol")
UNRELATED = new_exception(account_id="acct3", from_ms=FROM_MS, to_ms=TO_MS, reason="other",
                          expires_at_ms=NOW + 10**9, at_ms=NOW - 5000, author="carol")


@pytest.fixture(autouse=True)
def ledger_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger stores these reviews and exceptions at NOW (they are dated near it)."""
    from streams.evidence.ledger import sql

    monkeypatch.setattr(sql, "_now_ms", lambda: NOW)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "keys")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqlLedger]:
    store = open_ledger(str(tmp_path / "ledger.db"))
    store.append("finding", [A, B, OUTSIDE])
    store.append("review", REVIEWS)
    store.append("exception", [EXCEPTION, UNRELATED])
    yield store
    store.close()


@pytest.fixture
def exported(tmp_path: Path, ledger: SqlLedger, keys: tuple[Path, Path]) -> Path:
    out = tmp_path / "bundle"
    export_bundle(ledger, out, ExportQuery(FROM_MS, TO_MS, "DPA inquiry 17"),
                  load_private_key(keys[0]), actor="tester", now_ms=NOW)
    return out


def _verify(path: Path, public: Path) -> tuple[list[str], dict[str, int]]:
    return verify_bundle(path, load_public_key(public))


def test_the_bundle_carries_the_reviews_and_exceptions_of_its_findings(
        exported: Path, ledger: SqlLedger, keys: tuple[Path, Path]) -> None:
    manifest = orjson.loads((exported / bundle.MANIFEST).read_bytes())
    assert manifest["format"] == "consentwatch-evidence-bundle/4"
    lines = (exported / bundle.REVIEWS).read_bytes().splitlines()
    assert lines == [rfc8785.dumps(r) for r in REVIEWS[:4]]  # not the outside one's
    assert [e["id"] for e in manifest["reviews"]] == [r["review_id"] for r in REVIEWS[:4]]
    leaves = {e.entry_id: e for e in ledger.entries(kind="review")}
    assert [e["leaf_index"] for e in manifest["reviews"]] == [
        leaves[r["review_id"]].index for r in REVIEWS[:4]]
    assert all(e["inclusion_proof"] for e in manifest["reviews"])
    assert (exported / bundle.EXCEPTIONS).read_bytes() == rfc8785.dumps(EXCEPTION) + b"\n"
    assert [e["id"] for e in manifest["exceptions"]] == [EXCEPTION["exception_id"]]
    failures, counts = _verify(exported, keys[1])
    assert failures == []
    assert (counts["findings"], counts["reviews"], counts["exceptions"]) == (2, 4, 1)
    # the export itself is now a leaf, after the tree the bundle proves
    [export] = list(ledger.entries(kind="export"))
    assert export.index >= counts["checkpoint_size"]
    assert export.record["manifest_sha256"] == hashlib.sha256(
        (exported / bundle.MANIFEST).read_bytes()).hexdigest()
    assert export.record["query"]["reviews"] == 4 and export.record["actor"] == "tester"
    assert ledger.exports()[-1]["bundle_sha256"] == export.record["manifest_sha256"]


@pytest.mark.parametrize("name", [bundle.REVIEWS, bundle.EXCEPTIONS])
def test_one_changed_byte_of_a_review_record_fails_verify(tmp_path: Path, exported: Path,
                                                         keys: tuple[Path, Path],
                                                         name: str) -> None:
    size = (exported / name).stat().st_size
    for offset in sorted({0, 10, size // 2, size - 2}):
        copy = tmp_path / f"copy-{offset}"
        shutil.copytree(exported, copy)
        data = bytearray((copy / name).read_bytes())
        data[offset] ^= 0x01
        (copy / name).write_bytes(bytes(data))
        failures, _ = _verify(copy, keys[1])
        assert f"{name}: SHA-256 does not match the manifest (file changed)" in failures
        assert all(line.startswith(name) and "\n" not in line for line in failures), failures
        shutil.rmtree(copy)


def test_the_cli_verify_fails_on_a_changed_review_in_a_zip(tmp_path: Path, exported: Path,
                                                           keys: tuple[Path, Path]) -> None:
    ok = run_cli("verify", str(exported.with_name("bundle.zip")), "--public-key", str(keys[1]))
    assert ok.returncode == 0 and b" 4 reviews and 1 exceptions proven" in ok.stdout, ok.stdout
    text = (exported / bundle.REVIEWS).read_bytes().replace(b'"alice"', b'"alicf"', 1)
    (exported / bundle.REVIEWS).write_bytes(text)
    bad = run_cli("verify", str(exported), "--public-key", str(keys[1]))
    assert bad.returncode != 0
    output = (bad.stdout + bad.stderr).decode()
    assert "reviews.jsonl: SHA-256 does not match the manifest (file changed)" in output
    assert "Traceback" not in output


def _resign(exported: Path, key: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """What an exporter with a bug (or a ledger that lies) would sign with the real key."""
    manifest = orjson.loads((exported / bundle.MANIFEST).read_bytes())
    change(manifest)
    raw = rfc8785.dumps(manifest)
    (exported / bundle.MANIFEST).write_bytes(raw)
    (exported / bundle.SIGNATURE).write_bytes(load_private_key(key).sign(raw))
    reattest(exported, key)


def _rewrite(exported: Path, manifest: dict[str, Any], name: str, lines: list[bytes]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    (exported / name).write_bytes(data)
    manifest["files"][name] = bundle.sha256_hex(data)


def test_reviews_of_a_finding_left_out_fail(exported: Path, keys: tuple[Path, Path]) -> None:
    lines = (exported / bundle.FINDINGS).read_bytes().splitlines()
    consent = (exported / bundle.CONSENT_RECORDS).read_bytes().splitlines()
    assert orjson.loads(lines[1])["finding_id"] == B["finding_id"]

    def drop_b(manifest: dict[str, Any]) -> None:
        _rewrite(exported, manifest, bundle.FINDINGS, lines[:1])
        manifest["findings"] = manifest["findings"][:1]
        _rewrite(exported, manifest, bundle.CONSENT_RECORDS, consent[:1])
        (exported / "evidence" / "ev-b.json").unlink()
        del manifest["files"]["evidence/ev-b.json"]

    _resign(exported, keys[0], drop_b)
    assert _verify(exported, keys[1])[0] == [
        f"{bundle.REVIEWS}: {REVIEWS[2]['review_id']} reviews no exported finding"]


def test_reviews_out_of_ledger_order_fail(exported: Path, keys: tuple[Path, Path]) -> None:
    lines = (exported / bundle.REVIEWS).read_bytes().splitlines()

    def swap(manifest: dict[str, Any]) -> None:
        _rewrite(exported, manifest, bundle.REVIEWS, [lines[3], *lines[:3]])
        manifest["reviews"] = [manifest["reviews"][3], *manifest["reviews"][:3]]

    _resign(exported, keys[0], swap)
    failures = _verify(exported, keys[1])[0]
    # The last review of A's trail now comes first: the lines after it are out of order
    # (and, left out, break the trail that remains).
    order = [f for f in failures if f.endswith("(the entries are not in ledger order)")]
    assert order and order[0].startswith(f"{bundle.REVIEWS} line 2: is ledger leaf "), failures


def test_a_trail_the_ledger_would_refuse_fails(exported: Path, keys: tuple[Path, Path]) -> None:
    lines = (exported / bundle.REVIEWS).read_bytes().splitlines()

    def acknowledge_twice(manifest: dict[str, Any]) -> None:
        _rewrite(exported, manifest, bundle.REVIEWS, [lines[0], lines[0], *lines[1:]])
        manifest["reviews"] = [manifest["reviews"][0], *manifest["reviews"]]

    _resign(exported, keys[0], acknowledge_twice)
    failures = _verify(exported, keys[1])[0]
    assert len(failures) == 1 and failures[0].startswith(f"{bundle.REVIEWS} line 2: is ledger "
                                                         "leaf "), failures
    assert failures[0].endswith(f"which {bundle.REVIEWS} line 1 is too (an entry listed twice)")


def _keep_reviews(exported: Path, keys: tuple[Path, Path], keep: list[int]) -> list[str]:
    """The bundle re-signed with only the reviews.jsonl lines `keep` (each still proven
    against the checkpoint): what an exporter leaving reviews out would sign."""
    lines = (exported / bundle.REVIEWS).read_bytes().splitlines()

    def select(manifest: dict[str, Any]) -> None:
        _rewrite(exported, manifest, bundle.REVIEWS, [lines[n] for n in keep])
        manifest["reviews"] = [manifest["reviews"][n] for n in keep]

    _resign(exported, keys[0], select)
    return _verify(exported, keys[1])[0]


@pytest.mark.parametrize("keep", [[1, 2, 3], [0, 2, 3], [3], [1, 2]])
def test_a_first_or_middle_review_left_out_fails(exported: Path, keys: tuple[Path, Path],
                                                keep: list[int]) -> None:
    """Lines 0, 1, 3 are A's acknowledge, comment, resolve; line 2 is B's assign."""
    assert _keep_reviews(exported, keys, keep) == [
        f"{bundle.REVIEWS}: the reviews of {A['finding_id']} are not one unbroken chain of "
        "prev_review_id from its first review: a review of it is missing from the bundle, "
        "or one is there twice"]


def test_the_latest_reviews_left_out_still_verify(exported: Path,
                                                  keys: tuple[Path, Path]) -> None:
    """What a bundle alone cannot show (docs/verifying.md says so): a finding's latest
    reviews left out. Nothing after them names them."""
    assert _keep_reviews(exported, keys, [0, 1, 2]) == []
    assert _keep_reviews(exported, keys, [0, 1]) == []


@pytest.mark.parametrize("index", ["1", None, True, [1], {"a": 1}, -1, 1.5])
def test_a_leaf_index_that_is_not_an_integer_is_one_failure_line(
        exported: Path, keys: tuple[Path, Path], index: Any) -> None:
    """Without a usable checkpoint the claims are not proofs: whatever a leaf_index holds,
    verify reports it in one line (it used to sort mixed types and crash)."""
    manifest = orjson.loads((exported / bundle.MANIFEST).read_bytes())
    manifest["checkpoint"] = None
    manifest["reviews"][0]["leaf_index"] = index
    (exported / bundle.MANIFEST).write_bytes(orjson.dumps(manifest))
    failures, _ = _verify(exported, keys[1])
    assert f"{bundle.MANIFEST}: the entry of {bundle.REVIEWS}: {REVIEWS[0]['review_id']} " \
           "has no leaf_index (a non-negative integer)" in failures
    assert not any("unbroken chain" in line or "ledger order" in line for line in failures)
    done = run_cli("verify", str(exported), "--public-key", str(keys[1]))
    assert done.returncode == 1 and b"Traceback" not in done.stderr


def test_an_exception_that_covers_no_exported_finding_fails(
        exported: Path, keys: tuple[Path, Path]) -> None:
    lines = (exported / bundle.FINDINGS).read_bytes().splitlines()
    consent = (exported / bundle.CONSENT_RECORDS).read_bytes().splitlines()

    def drop_a(manifest: dict[str, Any]) -> None:
        _rewrite(exported, manifest, bundle.FINDINGS, lines[1:])
        manifest["findings"] = manifest["findings"][1:]
        _rewrite(exported, manifest, bundle.CONSENT_RECORDS, consent[1:])
        (exported / "evidence" / "ev-a.json").unlink()
        del manifest["files"]["evidence/ev-a.json"]
        _rewrite(exported, manifest, bundle.REVIEWS, [])
        manifest["reviews"] = []

    _resign(exported, keys[0], drop_a)
    assert _verify(exported, keys[1])[0] == [
        f"{bundle.EXCEPTIONS}: {EXCEPTION['exception_id']} covers no exported finding"]


def test_a_format_1_bundle_still_verifies(exported: Path, keys: tuple[Path, Path]) -> None:
    def as_format_1(manifest: dict[str, Any]) -> None:
        manifest["format"] = "consentwatch-evidence-bundle/1"
        for name, key in ((bundle.REVIEWS, "reviews"), (bundle.EXCEPTIONS, "exceptions")):
            (exported / name).unlink()
            del manifest["files"][name]
            del manifest[key]

    _resign(exported, keys[0], as_format_1)
    failures, counts = _verify(exported, keys[1])
    assert failures == [] and counts["reviews"] == 0


def test_the_report_shows_each_findings_review_history_escaped(exported: Path) -> None:
    html = (exported / bundle.REPORT).read_text()
    section_a = html.split(f'id="finding-{A["finding_id"]}"')[1].split("</section>")[0]
    section_b = html.split(f'id="finding-{B["finding_id"]}"')[1].split("</section>")[0]
    assert "Review: resolved: false_positive (test_traffic)" in section_a
    assert "synthetic traffic from the QA tenant" in section_a
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in section_a
    assert section_a.count("<tr><td>") == 3  # its three reviews, in ledger order
    assert section_a.index("<td>acknowledge</td>") < section_a.index("<td>resolve</td>")
    assert '<span class="badge">excepted</span>' in section_a
    assert "DPA with prov until 2027" in section_a and "in force" in section_a
    assert "Review: assigned to bob" in section_b
    assert "excepted" not in section_b


def test_the_summary_has_each_findings_review_status_and_exception(exported: Path) -> None:
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO((exported / bundle.SUMMARY).read_text())))
    got = {row["finding_id"]: (row["review_status"], row["excepted"]) for row in rows}
    assert got == {A["finding_id"]: ("resolved: false_positive (test_traffic)", "yes"),
                   B["finding_id"]: ("assigned to bob", "no")}


def _findings_as(exported: Path, keys: tuple[Path, Path],
                 pick: Callable[[list[bytes], list[Any], dict[str, Any]],
                                tuple[list[bytes], list[Any]]]) -> list[str]:
    """findings.jsonl and its manifest entries as `pick` makes them from the exported ones
    (and the manifest), re-signed with the real key; verify's failures."""
    lines = (exported / bundle.FINDINGS).read_bytes().splitlines()

    def change(manifest: dict[str, Any]) -> None:
        new_lines, claims = pick(lines, manifest["findings"], manifest)
        _rewrite(exported, manifest, bundle.FINDINGS, new_lines)
        manifest["findings"] = claims

    _resign(exported, keys[0], change)
    return _verify(exported, keys[1])[0]


def test_a_finding_listed_twice_fails_though_signed(exported: Path,
                                                    keys: tuple[Path, Path]) -> None:
    failures = _findings_as(exported, keys, lambda lines, claims, _: (
        [lines[0], *lines], [claims[0], *claims]))
    assert f"{bundle.FINDINGS} line 2: is ledger leaf 0, which {bundle.FINDINGS} line 1 is " \
           "too (an entry listed twice)" in failures


def test_findings_out_of_ledger_order_fail_though_signed(exported: Path,
                                                         keys: tuple[Path, Path]) -> None:
    failures = _findings_as(exported, keys, lambda lines, claims, _: (
        lines[::-1], claims[::-1]))
    assert f"{bundle.FINDINGS} line 2: is ledger leaf 0, before leaf 1 on a line above it " \
           "(the entries are not in ledger order)" in failures


def test_a_review_passed_off_as_a_finding_fails_though_signed(
        exported: Path, keys: tuple[Path, Path]) -> None:
    """A review's leaf holds the finding_id of the finding it reviews, and its proof is
    genuine: only its kind tells it from a finding."""
    review_line = (exported / bundle.REVIEWS).read_bytes().splitlines()[0]

    def pick(lines: list[bytes], claims: list[Any], manifest: dict[str, Any]
             ) -> tuple[list[bytes], list[Any]]:
        review_claim = dict(manifest["reviews"][0], id=orjson.loads(review_line)["finding_id"])
        return [*lines, review_line], [*claims, review_claim]

    failures = _findings_as(exported, keys, pick)
    assert f"{bundle.FINDINGS} line 3: is not an entry of {bundle.FINDINGS}: it holds " \
           "review_id, the id of another kind of ledger entry" in failures


def test_an_id_with_line_breaks_cannot_write_a_line_of_its_own(exported: Path,
                                                               keys: tuple[Path, Path]) -> None:
    lines = (exported / bundle.FINDINGS).read_bytes().splitlines()
    record = orjson.loads(lines[0])
    record["finding_id"] += "\nOK: 2 findings"
    (exported / bundle.FINDINGS).write_bytes(b"\n".join([rfc8785.dumps(record), *lines[1:]])
                                             + b"\n")
    failures = _verify(exported, keys[1])[0]
    assert failures and not any("\n" in failure for failure in failures)
