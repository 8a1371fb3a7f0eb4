"""Reviews, exceptions and exports through the desk (Starlette's TestClient), each on its
own copy of the desk's ledger: the actions a status allows, roles, CSRF, the ledger's
refusals as one line, statuses in the table and its filter, the gauges, hostile text,
the export's bundle verified and logged."""

from __future__ import annotations

import io
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.testclient import TestClient

from streams.desk import Database, DeskConfig, create_app
from streams.desk.actions import AMENDED, STALE
from streams.desk.users import add_user
from streams.evidence.ledger import open_ledger
from tests.desk.conftest import HOSTILE, IMG, LOCAL, PASSWORD, SCRIPT, csrf_of, sign_in
from tests.evidence.test_export_verify import FROM_MS

KEY = Ed25519PrivateKey.generate()


@pytest.fixture
def own_db(desk_ledger: Path, tmp_path: Path) -> Iterator[Database]:
    """A copy of the desk's ledger, with an exporter, for tests that write to it."""
    path = tmp_path / "ledger.db"
    for suffix in ("", "-wal"):
        source = Path(f"{desk_ledger}{suffix}")
        if source.exists():
            shutil.copy(source, f"{path}{suffix}")
    db = Database(str(path))
    add_user(db, "exa", "exporter", PASSWORD, now_ms=FROM_MS)
    yield db
    db.close()


@pytest.fixture
def desk(own_db: Database) -> Iterator[Any]:
    def client(name: str, key: bool = True) -> TestClient:
        made = TestClient(app if key else keyless, follow_redirects=False, client=LOCAL)
        clients.append(made.__enter__())
        assert sign_in(made, name=name).status_code == 303
        return made

    app = create_app(own_db, DeskConfig(signing_key=KEY))
    keyless = create_app(own_db, DeskConfig())
    clients: list[TestClient] = []
    yield client
    for made in clients:
        made.__exit__(None, None, None)


def _finding_id(db: Database, explanation: str) -> str:
    for (leaf,) in db.query("SELECT leaf FROM entries WHERE kind = 'finding'"):
        record = orjson.loads(bytes(leaf))
        if record["explanation"] == explanation:
            return str(record["finding_id"])
    raise AssertionError(explanation)


def _seen(page: str) -> str:
    found = re.search(r'name="seen" value="([^"]*)"', page)
    assert found, "no review form on the page"
    return found.group(1)


def _amended(page: str) -> str:
    found = re.search(r'name="amended" value="([^"]*)"', page)
    assert found, "no review form on the page"
    return found.group(1)


def _review(client: TestClient, finding_id: str, action: str, **fields: str) -> Any:
    page = client.get(f"/findings/{finding_id}").text
    data = {"csrf_token": csrf_of(page), "finding_id": finding_id, "action": action,
            "seen": _seen(page), "amended": _amended(page), **fields}
    return client.post("/reviews", data=data)


def _reviews(db: Database, finding_id: str) -> list[dict[str, Any]]:
    with open_ledger(db.target) as ledger:
        return [entry.record for entry in ledger.reviews(finding_id)]


def _status_cell(client: TestClient, query: str) -> dict[str, str]:
    """finding link -> status, of the table's first page for `query`."""
    html = client.get(f"/findings?{query}").text
    return dict(re.findall(r'<a href="/findings/([^"]+)">.*?</a></td>\s*<td class="status">'
                           r'<span class="st st-\w+">(\w+)</span>', html))


def test_acknowledge_assign_comment_resolve_reopen_each_a_ledger_record(
        desk: Any, own_db: Database) -> None:
    rex = desk("rex")
    finding_id = _finding_id(own_db, "made-up finding n7")
    page = rex.get(f"/findings/{finding_id}").text
    assert 'id="no-reviews"' in page and 'id="acknowledge"' in page and 'id="reopen"' not in page
    done = _review(rex, finding_id, "acknowledge", note="looking")
    assert done.status_code == 303 and done.headers["location"] == f"/findings/{finding_id}#review"
    page = rex.get(f"/findings/{finding_id}").text
    assert 'id="review-status">acknowledged<' in page and 'id="acknowledge"' not in page
    assert _review(rex, finding_id, "assign", assignee="ada").status_code == 303
    assert _review(rex, finding_id, "comment", text="asked the account owner").status_code == 303
    assert _review(rex, finding_id, "resolve", reason="false_positive",
                   false_positive_kind="test_traffic", note="a test account").status_code == 303
    page = rex.get(f"/findings/{finding_id}").text
    assert "resolved: false_positive (test_traffic)" in page and 'id="reopen"' in page
    assert 'id="resolve"' not in page and 'id="assign"' not in page
    assert _review(rex, finding_id, "reopen").status_code == 303
    trail = _reviews(own_db, finding_id)
    assert [r["action"] for r in trail] == ["acknowledge", "assign", "comment", "resolve",
                                            "reopen"]
    assert {r["reviewer"] for r in trail} == {"rex"} and trail[1]["assignee"] == "ada"
    history = rex.get(f"/findings/{finding_id}").text
    assert history.count("<tr data-review=") == 5 and "asked the account owner" in history


def test_htmx_gets_the_review_panel_alone(desk: Any, own_db: Database) -> None:
    rex = desk("rex")
    finding_id = _finding_id(own_db, "made-up finding n8")
    page = rex.get(f"/findings/{finding_id}").text
    done = rex.post("/reviews", headers={"hx-request": "true", "hx-target": "review"},
                    data={"csrf_token": csrf_of(page), "finding_id": finding_id,
                          "action": "acknowledge", "seen": ""})
    assert done.status_code == 200
    assert done.text.startswith('<section class="review-panel" id="review">')
    assert "<html" not in done.text and 'id="review-status">acknowledged<' in done.text
    again = rex.post("/reviews", headers={"hx-request": "true"},
                     data={"csrf_token": csrf_of(page), "finding_id": finding_id,
                           "action": "acknowledge", "seen": ""})
    assert again.status_code == 409 and 'id="review-problem"' in again.text
    assert "<html" not in again.text


def test_what_the_status_does_not_allow_is_409_with_one_line(desk: Any,
                                                            own_db: Database) -> None:
    rex = desk("rex")
    finding_id = _finding_id(own_db, "made-up finding n9")
    assert _review(rex, finding_id, "reopen").status_code == 409
    refused = _review(rex, finding_id, "reopen")
    assert "a finding that is open cannot take a reopen" in refused.text
    assert "Traceback" not in refused.text
    assert _review(rex, finding_id, "resolve", reason="remediated").status_code == 303
    assert _review(rex, finding_id, "acknowledge").status_code == 409
    assert _review(rex, finding_id, "assign", assignee="ada").status_code == 409
    assert [r["action"] for r in _reviews(own_db, finding_id)] == ["resolve"]


def test_a_review_on_a_stale_page_is_409_reload(desk: Any, own_db: Database) -> None:
    rex, ada = desk("rex"), desk("ada")
    finding_id = _finding_id(own_db, "made-up finding n10")
    stale = rex.get(f"/findings/{finding_id}").text  # rex reads the page ...
    assert _review(ada, finding_id, "acknowledge").status_code == 303  # ... ada acts
    refused = rex.post("/reviews", data={"csrf_token": csrf_of(stale), "finding_id": finding_id,
                                         "action": "resolve", "reason": "remediated",
                                         "seen": _seen(stale)})
    assert refused.status_code == 409 and STALE in refused.text
    assert [r["action"] for r in _reviews(own_db, finding_id)] == ["acknowledge"]


def test_a_decision_on_a_finding_amended_since_the_page_was_loaded_is_409_reload(
        desk: Any, own_db: Database) -> None:
    """The pipeline retracted the finding while rex read it: his decision was taken on
    what the finding no longer is."""
    from streams.model.findings import amendment_id

    rex = desk("rex")
    finding_id = _finding_id(own_db, "made-up finding n11")
    stale = rex.get(f"/findings/{finding_id}").text
    assert _amended(stale) == ""
    with open_ledger(own_db.target) as ledger:
        finding = ledger.finding(finding_id)
        assert finding is not None
        record = finding.record
        retraction = {
            "amendment_id": amendment_id(finding_id, "late-1", "RETRACTED"),
            "kind": "RETRACTED", "finding_id": finding_id, "rule": record["rule"],
            "subject_id": record["subject_id"], "trigger_event_id": record["trigger_event_id"],
            "late_event_id": "late-1", "evidence_event_ids": record["evidence_event_ids"],
            "occurred_at": record["occurred_at"] + 1, "detected_at": record["occurred_at"] + 2,
            "explanation": "would not have been raised", "evidence": record.get("evidence"),
            "late_event": None}
        ledger.append("amendment", [retraction])
    refused = rex.post("/reviews", data={"csrf_token": csrf_of(stale), "finding_id": finding_id,
                                         "action": "resolve", "reason": "remediated",
                                         "seen": _seen(stale), "amended": _amended(stale)})
    assert refused.status_code == 409 and AMENDED in refused.text
    assert _reviews(own_db, finding_id) == []
    assert _amended(rex.get(f"/findings/{finding_id}").text) == retraction["amendment_id"]
    assert _review(rex, finding_id, "resolve", reason="remediated").status_code == 303
    assert [r["action"] for r in _reviews(own_db, finding_id)] == ["resolve"]


def test_a_review_the_ledger_finds_stale_under_its_lock_is_409_reload(
        desk: Any, own_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another review stored between the desk's read and its append: the ledger refuses
    (prev_review_id no longer the latest), the desk says reload."""
    from streams.desk import actions

    rex = desk("rex")
    finding_id = _finding_id(own_db, "made-up finding n16")
    page = rex.get(f"/findings/{finding_id}").text
    assert _review(rex, finding_id, "acknowledge").status_code == 303
    real, calls = actions.queries.reviews_of, []

    def first_read_misses_it(db: Database, wanted: str) -> list[Any]:
        calls.append(wanted)
        return [] if len(calls) == 1 else real(db, wanted)

    monkeypatch.setattr(actions.queries, "reviews_of", first_read_misses_it)
    refused = rex.post("/reviews", data={"csrf_token": csrf_of(page), "finding_id": finding_id,
                                         "action": "resolve", "reason": "remediated",
                                         "seen": ""})
    assert refused.status_code == 409 and STALE in refused.text, refused.text
    assert [r["action"] for r in _reviews(own_db, finding_id)] == ["acknowledge"]


@pytest.mark.parametrize(("fields", "message"), [
    ({"action": "resolve", "reason": "because"}, "reason: one of remediated"),
    ({"action": "resolve", "reason": "false_positive"}, "false positive kind: one of"),
    ({"action": "resolve", "reason": "duplicate"}, "duplicate of: required"),
    ({"action": "resolve", "reason": "duplicate", "duplicate_of": "0" * 64},
     "duplicate of: the ledger holds no finding with this id"),
    ({"action": "assign", "assignee": "nobody"}, "assignee: not a user of the desk"),
    ({"action": "comment", "text": "  "}, "text: required"),
    ({"action": "comment", "text": "x" * 10_001}, "text: at most 10000 characters"),
    ({"action": "delete"}, "action: one of"),
])
def test_a_malformed_review_is_400_with_one_line(desk: Any, own_db: Database,
                                                 fields: dict[str, str], message: str) -> None:
    rex = desk("rex")
    finding_id = _finding_id(own_db, "made-up finding n11")
    action = fields.pop("action")
    refused = _review(rex, finding_id, action, **fields)
    assert refused.status_code == 400 and message in refused.text, refused.text
    assert "Traceback" not in refused.text and _reviews(own_db, finding_id) == []


def test_a_duplicate_names_its_original(desk: Any, own_db: Database) -> None:
    rex = desk("rex")
    finding_id, original = (_finding_id(own_db, "made-up finding n12"),
                            _finding_id(own_db, "made-up finding n13"))
    assert _review(rex, finding_id, "resolve", reason="duplicate",
                   duplicate_of=original).status_code == 303
    page = rex.get(f"/findings/{finding_id}").text
    assert f"resolved: duplicate of {original}" in page


def test_roles_csrf_and_unknown_findings(desk: Any, own_db: Database) -> None:
    viola, rex = desk("viola"), desk("rex")
    finding_id = _finding_id(own_db, "made-up finding n14")
    page = viola.get(f"/findings/{finding_id}").text
    assert 'id="acknowledge"' not in page  # a viewer is offered no action
    forbidden = viola.post("/reviews", data={"csrf_token": csrf_of(page),
                                             "finding_id": finding_id, "action": "acknowledge",
                                             "seen": ""})
    assert forbidden.status_code == 403
    for path, data in (("/reviews", {"finding_id": finding_id, "action": "acknowledge"}),
                       ("/exceptions", {"account": "acct1"}), ("/export", {"purpose": "x"})):
        assert rex.post(path, data=data).status_code == 403, path
        assert rex.post(path, data={**data, "csrf_token": "forged"}).status_code == 403, path
    token = csrf_of(rex.get("/findings").text)
    unknown = rex.post("/reviews", data={"csrf_token": token, "finding_id": "0" * 64,
                                         "action": "acknowledge", "seen": ""},
                       headers={"accept": "text/html"})
    assert unknown.status_code == 404 and "no finding with this id" in unknown.text
    assert rex.get("/export", headers={"accept": "text/html"}).status_code == 403
    assert rex.post("/export", data={"csrf_token": token, "purpose": "audit",
                                     "from": "2026-01-01", "to": "2027-01-01"}).status_code == 403
    assert rex.post("/exceptions", data={"csrf_token": token}).status_code == 403
    assert _reviews(own_db, finding_id) == [] and _reviews(own_db, "0" * 64) == []


def test_hostile_review_and_exception_text_renders_as_text(desk: Any, own_db: Database) -> None:
    ada = desk("ada")
    finding_id = _finding_id(own_db, "made-up finding n15")
    assert _review(ada, finding_id, "comment", text=HOSTILE).status_code == 303
    assert _review(ada, finding_id, "acknowledge", note=HOSTILE).status_code == 303
    token = csrf_of(ada.get("/exceptions").text)
    done = ada.post("/exceptions", data={"csrf_token": token, "account": HOSTILE,
                                         "provider": HOSTILE, "from": "2026-01-01",
                                         "to": "2027-01-01", "until": "2099-01-01",
                                         "reason": HOSTILE})
    assert done.status_code == 303
    refused = ada.post("/exceptions", data={"csrf_token": token, "account": HOSTILE,
                                            "from": "2026-01-01", "to": "yesterday",
                                            "until": "2099-01-01", "reason": HOSTILE})
    assert refused.status_code == 400
    for html in (ada.get(f"/findings/{finding_id}").text, ada.get("/exceptions").text,
                 refused.text):
        assert SCRIPT not in html and IMG not in html and "<img" not in html
        assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in html


def test_statuses_in_the_table_its_filter_accounts_and_gauges(desk: Any,
                                                              own_db: Database) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    rex, ada = desk("rex"), desk("ada")
    acknowledged = _finding_id(own_db, "made-up finding n20")  # acct0, pseudonym-deanonymized
    resolved = _finding_id(own_db, "made-up finding n21")  # acct1, covert-profile-view
    assert _review(rex, acknowledged, "acknowledge").status_code == 303
    assert _review(rex, resolved, "resolve", reason="accepted_risk").status_code == 303
    # acct3's pseudonym-deanonymized findings (n % 12 == 11) excepted for the first hour
    token = csrf_of(ada.get("/exceptions").text)
    done = ada.post("/exceptions", data={
        "csrf_token": token, "account": "acct3", "rule": "pseudonym-deanonymized",
        "from": "2026-03-01T00:00:00Z", "to": "2026-03-01T01:00:00Z", "until": "2099-01-01",
        "reason": "processing agreement"})
    assert done.status_code == 303, done.text
    excepted = {_finding_id(own_db, f"made-up finding n{n}") for n in (11, 23, 35, 47, 59)}

    def ids(query: str) -> set[str]:
        found: set[str] = set()
        url = f"/findings?{query}"
        while url:
            html = rex.get(url).text
            found |= set(re.findall(r'<tr data-leaf="\d+">\s*<td class="when"><a '
                                    r'href="/findings/([^"]+)"', html))
            more = re.search(r'id="next-page" href="([^"]+)"', html)
            url = more.group(1).replace("&amp;", "&") if more else ""
        return found

    every = ids("")
    assert ids("status=resolved") == {resolved}
    assert ids("status=acknowledged") == {acknowledged}
    assert ids("status=assigned") == set()
    assert ids("status=excepted") == excepted
    assert ids("status=excepted&account=acct2") == set()
    assert ids("status=excepted&from=2026-03-01T00:30:00Z") == {
        _finding_id(own_db, "made-up finding n35"), _finding_id(own_db, "made-up finding n47"),
        _finding_id(own_db, "made-up finding n59")}
    assert ids("status=open") == every - {resolved, acknowledged} - excepted
    assert ids("status=active") == every - {resolved} - excepted
    assert ids("status=acknowledged&rule=pseudonym-deanonymized") == {acknowledged}
    assert ids("status=acknowledged&severity=HIGH") == set()
    assert ids("status=resolved&rule=pseudonym-deanonymized") == set()
    assert ids("status=resolved&account=acct1&rule=covert-profile-view") == {resolved}
    cells = _status_cell(rex, "account=acct1")
    assert cells[resolved] == "resolved"
    assert "status: one of open" in rex.get("/findings?status=closed").text

    accounts = rex.get("/accounts").text
    row = re.search(r'account=acct3&amp;status=active">acct3</a></td>\s*<td class="n">(\d+)',
                    accounts)
    def count(account: str) -> int:
        return int(own_db.query("SELECT COUNT(*) FROM entries WHERE kind = 'finding' AND "
                                "account_id = ?", (account,))[0][0])

    assert row and int(row.group(1)) == count("acct3") - 5
    row = re.search(r'account=acct1&amp;status=active">acct1</a></td>\s*<td class="n">(\d+)',
                    accounts)
    assert row and int(row.group(1)) == count("acct1") - 1

    with TestClient(create_app(own_db), client=LOCAL) as scraper:
        families = {f.name: f for f in text_string_to_metric_families(
            scraper.get("/metrics").text)}
    gauge = {(s.labels["rule"], s.labels["status"]): s.value
             for s in families["consentwatch_desk_open_findings"].samples}
    assert gauge[("pseudonym-deanonymized", "acknowledged")] == 1
    assert gauge[("covert-profile-view", "acknowledged")] == 0
    total = own_db.query("SELECT COUNT(*) FROM entries WHERE kind = 'finding'")[0][0]
    assert sum(gauge.values()) == total - 1 - 5


def test_exceptions_page_lists_active_and_expired_and_only_an_admin_records(
        desk: Any, own_db: Database) -> None:
    from streams.evidence.exception_scope import new_exception

    now = time.time_ns() // 1_000_000  # the ledger takes times within 5 min of its clock
    expired = new_exception(account_id="acct2", reason="old agreement", author="ada",
                            from_ms=0, to_ms=FROM_MS, expires_at_ms=now - 60_000,
                            at_ms=now - 120_000)
    with open_ledger(own_db.target) as ledger:
        ledger.append("exception", [expired])
    viola, ada = desk("viola"), desk("ada")
    page = viola.get("/exceptions").text
    assert 'id="no-active"' in page and "old agreement" in page
    assert 'id="exception-form"' not in page and "recorded by an admin" in page
    token = csrf_of(ada.get("/exceptions").text)
    for fields, message in (
            ({"account": ""}, "account: required"),
            ({"to": "2025-01-01"}, "from must be before to"),
            ({"until": "2020-01-01"}, "in force until: a time in the future"),
            ({"rule": "no-such-rule"}, "rule: not a rule of the catalogue"),
            ({"from": "soon"}, "from: not a date or an RFC 3339 time")):
        refused = ada.post("/exceptions", data={
            "csrf_token": token, "account": "acct2", "from": "2026-01-01", "to": "2027-01-01",
            "until": "2099-01-01", "reason": "agreement", **fields})
        assert refused.status_code == 400 and message in refused.text, (fields, refused.text)
    done = ada.post("/exceptions", data={
        "csrf_token": token, "account": "acct2", "provider": "prov-b", "from": "2026-01-01",
        "to": "2027-01-01", "until": "2099-01-01", "reason": "DPA with prov-b until 2099"})
    assert done.status_code == 303
    page = viola.get("/exceptions").text
    assert "DPA with prov-b until 2099" in page.split('id="active-exceptions"')[1]
    with open_ledger(own_db.target) as ledger:
        recorded = [e.record for e in ledger.exceptions(account="acct2")]
    assert recorded[-1]["author"] == "ada" and recorded[-1]["provider"] == "prov-b"
    n26 = _finding_id(own_db, "made-up finding n26")  # acct2, prov-c: not covered
    n14 = _finding_id(own_db, "made-up finding n14")  # acct2, prov-c
    n10 = _finding_id(own_db, "made-up finding n10")  # acct2, prov-b: covered
    assert "Inside 1 exception in force" in viola.get(f"/findings/{n10}").text
    for other in (n26, n14):
        assert 'id="excepted"' not in viola.get(f"/findings/{other}").text


def test_an_exporter_exports_the_bundle_verify_proves_and_the_log_lists(
        desk: Any, own_db: Database, tmp_path: Path) -> None:
    from streams.evidence.verify import verify_bundle

    rex, exa = desk("rex"), desk("exa")
    finding_id = _finding_id(own_db, "made-up finding n30")
    assert _review(rex, finding_id, "acknowledge").status_code == 303
    assert _review(rex, finding_id, "resolve", reason="false_positive",
                   false_positive_kind="rule_misfire").status_code == 303
    form = exa.get("/export?account=acct2&from=2026-03-01").text
    assert 'value="acct2"' in form and 'id="no-key"' not in form
    done = exa.post("/export", data={"csrf_token": csrf_of(form), "account": "acct2",
                                     "from": "2026-03-01", "to": "2026-03-02",
                                     "purpose": f"audit {HOSTILE}"})
    assert done.status_code == 200, done.text
    assert done.headers["content-type"] == "application/zip"
    assert "attachment" in done.headers["content-disposition"]
    bundle = tmp_path / "bundle.zip"
    bundle.write_bytes(done.content)
    failures, counts = verify_bundle(bundle, KEY.public_key())
    assert failures == [] and counts["reviews"] == 2 and counts["findings"] == 32
    names = zipfile.ZipFile(io.BytesIO(done.content)).namelist()
    assert any(name.endswith("reviews.jsonl") for name in names)
    with open_ledger(own_db.target) as ledger:
        logged = ledger.exports()[-1]
    assert logged["actor"] == "exa" and logged["purpose"] == f"audit {HOSTILE}"
    assert logged["query"]["filters"]["account"] == "acct2"
    log = rex.get("/exports").text
    assert logged["bundle_sha256"] in log and "exa" in log
    assert SCRIPT not in log and "&lt;script&gt;" in log
    temporary = Path(tempfile.gettempdir())
    assert not list(temporary.glob("consentwatch-desk-export-*"))  # removed once sent


def test_without_a_key_the_export_form_says_so(desk: Any) -> None:
    exa = desk("exa", key=False)
    form = exa.get("/export").text
    assert 'id="no-key"' in form and "--private-key" in form
    refused = exa.post("/export", data={"csrf_token": csrf_of(form), "purpose": "audit",
                                        "from": "2026-03-01", "to": "2026-03-02"})
    assert refused.status_code == 409 and "no signing key" in refused.text


@pytest.mark.parametrize(("fields", "message"), [
    ({"purpose": "  "}, "purpose: required"),
    ({"from": ""}, "from and to: the window to export"),
    ({"to": "2026-02-01"}, "from must be before to"),
    ({"rule": "nope"}, "rule: not a rule of the catalogue"),
])
def test_a_malformed_export_is_a_message_on_the_form(desk: Any, fields: dict[str, str],
                                                     message: str) -> None:
    exa = desk("exa")
    form = exa.get("/export").text
    refused = exa.post("/export", data={"csrf_token": csrf_of(form), "purpose": "audit",
                                        "from": "2026-03-01", "to": "2026-03-02", **fields})
    assert refused.status_code == 400 and message in refused.text
    assert 'id="export-problem"' in refused.text


def test_the_desks_metrics_are_exactly_the_pinned_ones(own_db: Database) -> None:
    """The ledger's gauges are DESK_METRICS (what the alerts and dashboard read), with
    their types; the rest are the desk's own request metrics, listed here."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.promql_names import DESK_METRICS

    own = {"consentwatch_desk_requests": "counter", "consentwatch_desk_logins": "counter",
           "consentwatch_desk_request_duration_seconds": "histogram",
           "consentwatch_desk_sessions": "gauge"}
    with TestClient(create_app(own_db), client=LOCAL) as scraper:
        families = {f.name: f.type for f in text_string_to_metric_families(
            scraper.get("/metrics").text)}
    assert families == DESK_METRICS | own
