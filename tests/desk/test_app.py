"""The desk over plain HTTP (Starlette's TestClient): access, CSRF, rate limit, the pages,
keyset paging, filters, escaping, metrics and logs."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from streams.desk import Database, DeskConfig, create_app
from streams.desk.users import LoginLimiter
from tests.desk.conftest import (
    HOSTILE,
    IMG,
    LOCAL,
    PASSWORD,
    PROVIDERS,
    SCRIPT,
    csrf_of,
    sign_in,
)


def _records(db: Database) -> list[tuple[int, dict[str, Any]]]:
    rows = db.query("SELECT idx, leaf FROM entries WHERE kind = 'finding'")
    return [(int(idx), orjson.loads(bytes(leaf))) for idx, leaf in rows]


def _leaves(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr data-leaf="(\d+)"', html)]


def _walk(client: TestClient, url: str) -> list[int]:
    """Every leaf index the table shows, page after page."""
    seen: list[int] = []
    pages = 0
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.text
        seen.extend(_leaves(response.text))
        found = re.search(r'id="next-page" href="([^"]+)"', response.text)
        url = found.group(1).replace("&amp;", "&") if found else ""
        pages += 1
        assert pages < 100
    return seen


def _expected(db: Database, keep: Any) -> list[int]:
    chosen = [(r["occurred_at"], idx) for idx, r in _records(db) if keep(r)]
    return [idx for _, idx in sorted(chosen, reverse=True)]


# -- access -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/findings", "/findings/abc", "/accounts", "/users"])
def test_without_a_session_a_page_redirects_to_login_and_an_api_call_gets_401(
        client: TestClient, path: str) -> None:
    page = client.get(path, headers={"accept": "text/html"})
    assert page.status_code == 303
    assert page.headers["location"].startswith("/login?next=")
    htmx = client.get(path, headers={"hx-request": "true"})
    assert htmx.status_code == 401 and htmx.headers["hx-redirect"] == "/login"
    api = client.get(path, headers={"accept": "application/json"})
    assert api.status_code == 401


def test_healthz_and_the_login_page_need_no_session(client: TestClient) -> None:
    assert client.get("/healthz").text == "ok\n"
    assert client.get("/login").status_code == 200


def test_login_sets_a_new_httponly_samesite_strict_session_cookie(client: TestClient) -> None:
    client.get("/login")
    before = client.cookies.get("consentwatch_desk")
    response = sign_in(client)
    assert response.status_code == 303 and response.headers["location"] == "/findings"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    assert client.cookies.get("consentwatch_desk") not in (None, before)  # no fixation
    assert client.get("/findings").status_code == 200


def test_over_https_the_cookie_is_secure(db: Database) -> None:
    with TestClient(create_app(db, DeskConfig(secure_cookies=True)),
                    base_url="https://testserver", follow_redirects=False) as client:
        assert "Secure" in sign_in(client).headers["set-cookie"]


def test_login_goes_back_to_the_page_asked_for_but_never_off_site(client: TestClient) -> None:
    token = csrf_of(client.get("/login?next=/accounts").text)
    done = client.post("/login", data={"username": "viola", "password": PASSWORD,
                                       "csrf_token": token, "next": "//evil.example/x"})
    assert done.headers["location"] == "/findings"


def test_a_wrong_password_is_one_message_and_no_session(client: TestClient) -> None:
    response = sign_in(client, password="not the password at all")
    assert response.status_code == 401
    assert "Wrong user name or password." in response.text
    assert client.get("/findings").status_code == 303
    assert sign_in(client, name="nobody").status_code == 401


def test_login_attempts_are_limited_per_user_and_per_address(db: Database) -> None:
    config = DeskConfig(limiter=LoginLimiter(per_user=3, per_address=5))
    with TestClient(create_app(db, config), follow_redirects=False, client=LOCAL) as client:
        statuses = [sign_in(client, password="wrong password!").status_code for _ in range(4)]
        assert statuses == [401, 401, 401, 429]
        limited = sign_in(client)  # even the right password, for that user, for a while
        assert limited.status_code == 429 and "Too many login attempts" in limited.text
        assert int(limited.headers["retry-after"]) > 0
        assert sign_in(client, name="ada").status_code == 429  # 5 from this address
        metrics = client.get("/metrics").text
        assert 'consentwatch_desk_logins_total{outcome="limited"} 3.0' in metrics


def test_every_post_without_the_csrf_token_is_403(client: TestClient, db: Database) -> None:
    app = create_app(db)
    posts = {r.path for r in app.routes if isinstance(r, Route) and "POST" in (r.methods or ())}
    assert posts >= {"/login", "/logout"}
    sign_in(client)
    for path in sorted(posts):
        assert client.post(path, data={}).status_code == 403, path
        assert client.post(path, data={"csrf_token": "forged"}).status_code == 403, path
    assert client.get("/findings").status_code == 200  # still signed in
    token = csrf_of(client.get("/findings").text)
    assert client.post("/logout", headers={"x-csrf-token": token}).status_code == 303
    assert client.get("/findings").status_code == 303


def test_an_action_outside_the_role_is_403(viewer: TestClient) -> None:
    response = viewer.get("/users", headers={"accept": "text/html"})
    assert response.status_code == 403 and "Your role does not allow this." in response.text


def test_the_admin_sees_the_users(client: TestClient) -> None:
    sign_in(client, name="ada")
    page = client.get("/users").text
    assert all(name in page for name in ("viola", "rex", "ada"))
    assert "argon2" not in page


def test_metrics_need_no_session_and_carry_the_ledger_gauges(db: Database) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from tests.promql_names import DESK_METRICS

    with TestClient(create_app(db), client=("203.0.113.9", 5000)) as scraper:
        text = scraper.get("/metrics").text  # Prometheus, from another machine
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in DESK_METRICS.items():
        assert families[name].type == kind, name
    open_ = {(s.labels["rule"], s.labels["severity"], s.labels["status"]): s.value
             for s in families["consentwatch_desk_open_findings"].samples}
    findings = {idx: r for idx, r in _records(db)}
    assert sum(open_.values()) == len(findings)
    assert open_[("pseudonym-deanonymized", "CRITICAL", "open")] == sum(
        1 for r in findings.values() if r["rule"] == "pseudonym-deanonymized")
    ages = {s.labels["severity"]: s.value
            for s in families["consentwatch_desk_oldest_open_finding_age_seconds"].samples}
    assert ages["CRITICAL"] > 0 and set(ages) <= {"CRITICAL", "HIGH", "MEDIUM", "LOW"}


# -- the findings table -----------------------------------------------------------------


def test_the_table_pages_through_every_finding_newest_first_by_keyset(
        viewer: TestClient, db: Database) -> None:
    first = viewer.get("/findings").text
    assert len(_leaves(first)) == 50
    source = (Path(__file__).resolve().parents[2] / "streams/desk/queries.py").read_text()
    assert "OFFSET" not in source.upper().replace("NEVER AN OFFSET", "")  # keyset only
    assert _walk(viewer, "/findings") == _expected(db, lambda r: True)


@pytest.mark.parametrize(("query", "keep"), [
    ("rule=pseudonym-deanonymized", lambda r: r["rule"] == "pseudonym-deanonymized"),
    ("severity=HIGH", lambda r: r["rule"] in {"covert-profile-view", "enrichment-without-consent",
                                              "disclosure-without-consent",
                                              "automatic-egress-feature-inactive"}),
    ("severity=critical&rule=covert-profile-view", lambda r: False),
    ("account=acct2", lambda r: r["account_id"] == "acct2"),
    (f"provider={PROVIDERS[1]}", lambda r: r.get("provider") == PROVIDERS[1]),
    ("subject=hmac-sha256:s3", lambda r: r["subject_id"] == "hmac-sha256:s3"),
    ("from=2026-03-01T01:00:00Z&to=2026-03-01T02:00:00Z",
     lambda r: 1772326800000 <= r["occurred_at"] < 1772330400000),
    ("rule=covert-profile-view&account=acct1&from=2026-03-01",
     lambda r: r["rule"] == "covert-profile-view" and r["account_id"] == "acct1"
     and r["occurred_at"] >= 1772323200000),
])
def test_filters_select_exactly_their_findings_on_every_page(
        viewer: TestClient, db: Database, query: str, keep: Any) -> None:
    expected = _expected(db, keep)
    assert _walk(viewer, f"/findings?{query}") == expected
    if not expected:
        assert "No finding matches." in viewer.get(f"/findings?{query}").text


@pytest.mark.parametrize(("query", "message"), [
    ("from=yesterday", "from: not a date or an RFC 3339 time"),
    ("to=2026-13-45", "to: not a date or an RFC 3339 time"),
    ("rule=no-such-rule", "rule: not a rule of the catalogue"),
    ("severity=urgent", "severity: one of CRITICAL, HIGH, MEDIUM, LOW"),
    ("from=2026-03-02&to=2026-03-01", "from must be before to"),
    ("before=12;DROP TABLE entries", "the page link is not valid"),
    ("account=" + "a" * 300, "account: at most 200 characters, no NUL"),
])
def test_a_malformed_filter_is_a_message_on_the_page(viewer: TestClient, query: str,
                                                     message: str) -> None:
    response = viewer.get(f"/findings?{query}")
    assert response.status_code == 400
    assert 'id="filter-problems"' in response.text and message in response.text
    assert "Traceback" not in response.text


def test_htmx_gets_the_table_alone_but_a_history_restore_the_whole_page(
        viewer: TestClient) -> None:
    url = "/findings?rule=covert-profile-view"
    part = viewer.get(url, headers={"hx-request": "true", "hx-target": "results"}).text
    assert "<table" in part and "<html" not in part
    whole = viewer.get(url, headers={"hx-request": "true",
                                     "hx-history-restore-request": "true"}).text
    assert "<html" in whole


# -- one finding, accounts -----------------------------------------------------------------


def _id_of(db: Database, explanation: str) -> tuple[int, str]:
    for idx, record in _records(db):
        if record["explanation"] == explanation:
            return idx, record["finding_id"]
    raise AssertionError(explanation)


def test_a_finding_shows_its_rule_regulations_evidence_timeline_and_inclusion(
        viewer: TestClient, db: Database) -> None:
    idx, finding_id = _id_of(db, "made-up finding n4")
    page = viewer.get(f"/findings/{finding_id}").text
    assert "made-up finding n4" in page
    assert "GDPR" in page  # a regulation the catalogue cites for the rule
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="timeline"' in page
    assert "<strong>ProfileViewed</strong> (trigger)" in page
    assert f"Leaf {idx}." in page and "Included in the latest signed checkpoint" in page
    _, later = _id_of(db, "made-up finding after")
    assert "Not yet included in a signed checkpoint" in viewer.get(f"/findings/{later}").text


def test_an_unknown_finding_is_a_404_page(viewer: TestClient) -> None:
    for finding_id in ("0" * 64, "no such id", "x" * 5000):
        response = viewer.get(f"/findings/{finding_id}", headers={"accept": "text/html"})
        assert response.status_code == 404 and "No such finding" in response.text
    assert viewer.get("/no/such/page", headers={"accept": "text/html"}).status_code == 404


def test_a_finding_with_an_odd_id_is_linked_and_found(viewer: TestClient, db: Database) -> None:
    odd = {"finding_id": "../odd id/1?<b>", "rule": "covert-profile-view", "subject_id": "s",
           "account_id": "acct-odd", "occurred_at": 1, "explanation": "odd one"}
    from streams.evidence.ledger import open_ledger

    with open_ledger(db.target) as ledger:
        ledger.append("finding", [odd])
    table = viewer.get("/findings?account=acct-odd").text
    link = re.search(r'href="(/findings/[^"]+)"', table)
    assert link and "%2F" in link.group(1)
    assert "odd one" in viewer.get(link.group(1).replace("&amp;", "&")).text


def test_every_hostile_value_is_rendered_as_text(viewer: TestClient, db: Database) -> None:
    _, finding_id = _id_of(db, HOSTILE)
    for html in (viewer.get("/findings").text, viewer.get(f"/findings/{finding_id}").text,
                 viewer.get("/accounts").text):
        assert SCRIPT not in html and "<img" not in html
        assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in html
    page = viewer.get(f"/findings/{finding_id}")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert IMG not in page.text


def test_accounts_count_open_findings_by_rule_and_severity(viewer: TestClient) -> None:
    page = viewer.get("/accounts").text
    row = re.search(r'<a href="/findings\?account=acct2&amp;status=active">acct2</a></td>'
                    r'\s*<td class="n">(\d+)',
                    page)
    assert row and int(row.group(1)) == 32  # n % 4 == 2 for n in 0..129
    assert "CRITICAL 11" in page  # pseudonym-deanonymized: n % 12 == 2
    assert " ago</span>" in page


# -- logs and metrics carry no personal data -------------------------------------------------


def test_logs_and_metrics_name_routes_never_ids(viewer: TestClient, db: Database,
                                                caplog: pytest.LogCaptureFixture) -> None:
    _, finding_id = _id_of(db, "made-up finding n5")
    with caplog.at_level(logging.INFO, logger="consentwatch.desk"):
        viewer.get(f"/findings/{finding_id}")
        viewer.get("/findings?account=acct1&subject=hmac-sha256:s1")
    text = caplog.text + viewer.get("/metrics").text
    assert "/findings/{finding_id:path}" in text
    for secret in (finding_id, "acct1", "hmac-sha256:s1", "viola"):
        assert secret not in text


def test_a_tampered_leaf_is_a_clear_page_not_a_traceback(tmp_path: Path) -> None:
    import sqlite3

    from streams.desk.users import add_user
    from streams.evidence.ledger import open_ledger
    from tests.desk.conftest import _made_up

    path = tmp_path / "ledger.db"
    record = _made_up(1)
    with open_ledger(str(path)) as ledger:
        ledger.append("finding", [record])
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET account_id = 'elsewhere'")
    conn.close()
    db = Database(str(path))
    try:
        add_user(db, "viola", "viewer", PASSWORD, now_ms=0)
        with TestClient(create_app(db), follow_redirects=False, client=LOCAL) as client:
            sign_in(client)
            page = client.get(f"/findings/{record['finding_id']}",
                              headers={"accept": "text/html"})
    finally:
        db.close()
    assert page.status_code == 500
    assert "The ledger disagrees with itself" in page.text
    assert "ledger leaf 0: the account_id column disagrees" in page.text
    assert "Traceback" not in page.text


def test_a_flood_of_anonymous_sessions_never_signs_a_user_out(db: Database) -> None:
    from streams.desk.users import SessionStore

    app = create_app(db, DeskConfig(sessions=SessionStore(max_sessions=5)))
    with TestClient(app, follow_redirects=False, client=LOCAL) as client:
        sign_in(client)
        for _ in range(20):
            with TestClient(app, client=LOCAL) as stranger:
                stranger.get("/login")
        assert client.get("/findings").status_code == 200


def test_the_vendored_htmx_is_the_one_its_source_note_names() -> None:
    import hashlib

    static = Path(__file__).resolve().parents[2] / "streams" / "desk" / "static"
    note = (static / "htmx.SOURCE").read_text()
    digest = hashlib.sha256((static / "htmx.min.js").read_bytes()).hexdigest()
    assert f"sha256 of htmx.min.js: {digest}" in note
    assert "Zero-Clause BSD" in (static / "htmx.LICENSE").read_text()


def test_the_accounts_page_shows_the_first_accounts_and_all_on_request(
        viewer: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.desk import app

    monkeypatch.setattr(app, "_ACCOUNTS_SHOWN", 2)
    first = viewer.get("/accounts").text
    assert first.count('<a href="/findings?account=') == 2 and 'id="more-accounts"' in first
    every = viewer.get("/accounts?all=1").text
    assert every.count('<a href="/findings?account=') > 2 and "more-accounts" not in every
