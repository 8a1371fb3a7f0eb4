"""The desk's answers to a review of it: a proxy's clients told apart, logins at the same
time counted, the oldest open finding by when it was recorded, bad page links, the events'
ids taken as they are, and a ledger that cannot be read failing the scrape."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from streams.desk import Database, create_app
from streams.desk.users import LoginLimiter
from streams.evidence.ledger import open_ledger
from tests.conftest import run_cli
from tests.desk.conftest import LOCAL, PASSWORD, csrf_of, serve_desk, sign_in
from tests.evidence.test_export_verify import FROM_MS
from tests.evidence.test_export_verify import _finding as made_up

HOUR_MS = 3_600_000


@pytest.fixture
def own_db(desk_ledger: Path, tmp_path: Path) -> Iterator[Database]:
    path = tmp_path / "ledger.db"
    shutil.copy(desk_ledger, path)
    db = Database(str(path))
    yield db
    db.close()


def _gauges(db: Database) -> dict[str, Any]:
    with TestClient(create_app(db), client=LOCAL) as scraper:
        response = scraper.get("/metrics")
    assert response.status_code == 200, response.text
    return {f.name: f for f in text_string_to_metric_families(response.text)}


def _oldest_critical(db: Database) -> float:
    family = _gauges(db)["consentwatch_desk_oldest_open_finding_age_seconds"]
    (value,) = [s.value for s in family.samples if s.labels["severity"] == "CRITICAL"]
    return float(value)


def test_a_backfilled_finding_does_not_hide_the_oldest_open_one(own_db: Database) -> None:
    before = _oldest_critical(own_db)
    assert before > 86_400
    now_ms = time.time_ns() // 1_000_000
    late = made_up("backfilled", FROM_MS - 30 * 24 * HOUR_MS, rule="pseudonym-deanonymized")
    late |= {"severity": "CRITICAL", "detected_at": now_ms}  # occurred long ago, found now
    with open_ledger(own_db.target) as ledger:
        assert ledger.append("finding", [late]) == 1
    assert _oldest_critical(own_db) >= before


@pytest.mark.parametrize("token", ["9999999999999999999.1", "-9999999999999999999.1",
                                   "9223372036854775807.1", "1.9999999999999999999"])
@pytest.mark.parametrize("direction", ["before", "after"])
def test_a_page_link_out_of_range_is_a_400_message(client: TestClient, token: str,
                                                   direction: str) -> None:
    sign_in(client)
    response = client.get(f"/findings?{direction}={token}")
    assert response.status_code == 400
    assert "the page link is not valid" in response.text


def test_logins_at_the_same_time_cannot_pass_the_per_user_limit() -> None:
    limiter = LoginLimiter(per_user=5, per_address=1000)
    # Forty attempts checked before any of them is known to have failed.
    allowed = sum(1 for n in range(40) if limiter.retry_after("ada", f"10.0.0.{n}") == 0)
    assert allowed == 5
    fresh = LoginLimiter(per_user=2, per_address=1000)
    for _ in range(5):  # right passwords do not count as failures
        assert fresh.retry_after("ada", "10.0.0.1") == 0
        fresh.succeeded("ada")


def _finding_of_account(account: str, name: str) -> dict[str, Any]:
    return made_up(name, FROM_MS + 5 * HOUR_MS) | {"account_id": account}


def test_ids_of_the_events_are_taken_as_they_are(own_db: Database) -> None:
    spaced, tabbed = "acct1 ", "acct\t7"
    with open_ledger(own_db.target) as ledger:
        ledger.append("finding", [_finding_of_account(spaced, "spaced"),
                                  _finding_of_account(tabbed, "tabbed")])
    with TestClient(create_app(own_db), follow_redirects=False, client=LOCAL) as client:
        sign_in(client, name="ada")
        for account, name in ((spaced, "spaced"), (tabbed, "tabbed")):
            page = client.get("/findings", params={"account": account})
            assert page.status_code == 200, page.text
            assert f"made-up finding {name}" in page.text
            assert page.text.count('<tr data-leaf="') == 1
        form = client.get("/exceptions").text
        recorded = client.post("/exceptions", data={
            "csrf_token": csrf_of(form), "account": spaced, "from": "2026-01-01",
            "to": "2027-01-01", "until": "2027-01-01", "reason": "a processing agreement"})
        assert recorded.status_code == 303, recorded.text
    with open_ledger(own_db.target) as ledger:
        assert [e.record["account_id"] for e in ledger.exceptions()] == [spaced]


def test_a_ledger_that_cannot_be_read_fails_the_scrape(own_db: Database) -> None:
    with TestClient(create_app(own_db), follow_redirects=False, client=LOCAL) as rex:
        sign_in(rex, name="rex")
        (finding_id,) = own_db.query("SELECT entry_id FROM entries WHERE kind = 'finding' "
                                     "ORDER BY idx LIMIT 1")[0]
        page = rex.get(f"/findings/{finding_id}").text
        done = rex.post("/reviews", data={"csrf_token": csrf_of(page), "seen": "",
                                          "finding_id": finding_id, "action": "acknowledge"})
        assert done.status_code == 303, done.text
    assert _gauges(own_db)
    with sqlite3.connect(own_db.target) as raw:  # a review edited behind the triggers' back
        for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                   "AND tbl_name = 'entries'").fetchall():
            raw.execute(f'DROP TRIGGER "{name}"')
        raw.execute("UPDATE entries SET leaf = CAST(REPLACE(CAST(leaf AS TEXT), "
                    "'acknowledge', 'acknowledgf') AS BLOB) WHERE kind = 'review'")
    fresh = Database(own_db.target)  # a desk started on the edited ledger
    try:
        with TestClient(create_app(fresh), client=LOCAL) as scraper:
            response = scraper.get("/metrics")
    finally:
        fresh.close()
    assert response.status_code == 503
    assert response.text == "the ledger cannot be read\n"


def test_trusted_proxy_goes_with_behind_https_proxy_and_is_an_address(tmp_path: Path,
                                                                      desk_ledger: Path) -> None:
    alone = run_cli("desk", "serve", "--ledger", str(desk_ledger), "--trusted-proxy",
                    "127.0.0.1")
    assert alone.returncode != 0
    assert "--trusted-proxy goes with --behind-https-proxy" in alone.stderr.decode()
    assert b"Traceback" not in alone.stderr
    bad = run_cli("desk", "serve", "--ledger", str(desk_ledger), "--behind-https-proxy",
                  "--trusted-proxy", "proxy.example")
    assert bad.returncode != 0 and "not an IP address" in bad.stderr.decode()


def test_behind_a_trusted_proxy_each_client_has_its_own_login_limit(desk_ledger: Path,
                                                                     tmp_path: Path) -> None:
    """Twenty junk logins through the proxy from one client do not lock another out."""
    ledger = tmp_path / "ledger.db"
    shutil.copy(desk_ledger, ledger)
    for url in serve_desk(ledger, "--behind-https-proxy", "--trusted-proxy", "127.0.0.1"):
        codes = [_login_through_proxy(url, "203.0.113.9", f"junk{n}", "x" * 12)
                 for n in range(21)]
        assert codes[-1] == 429
        assert _login_through_proxy(url, "198.51.100.7", "ada", PASSWORD) == 303


def _login_through_proxy(url: str, client_ip: str, name: str, password: str) -> int:
    """A login as a TLS proxy on this machine forwards it for `client_ip`: the session
    cookie is Secure, so it is sent back by hand (the proxy's client had https)."""
    forwarded = {"X-Forwarded-For": client_ip, "X-Forwarded-Proto": "https"}
    with httpx.Client(base_url=url, trust_env=False, timeout=30, headers=forwarded) as proxy:
        form = proxy.get("/login")
        cookie = form.headers["set-cookie"].split(";", 1)[0]
        return proxy.post("/login", headers={"Cookie": cookie}, data={
            "username": name, "password": password,
            "csrf_token": csrf_of(form.text)}).status_code


def test_a_form_body_is_bounded_before_anything_reads_it(own_db: Database) -> None:
    """An anonymous POST of hundreds of MiB took minutes of CPU in the form parser before
    its CSRF token was even looked at: a body over the bound, or one whose length is not
    declared, is refused unread."""
    from streams.desk.app import MAX_FORM_BYTES

    with TestClient(create_app(own_db), follow_redirects=False, client=LOCAL) as anyone:
        page = anyone.get("/login").text
        big = anyone.post("/login", content=b"a=" + b"x" * MAX_FORM_BYTES, headers={
            "content-type": "application/x-www-form-urlencoded"})
        assert big.status_code == 413

        def chunks() -> Iterator[bytes]:
            yield b"csrf_token=" + csrf_of(page).encode()

        unsized = anyone.post("/login", content=chunks(), headers={
            "content-type": "application/x-www-form-urlencoded"})
        assert unsized.status_code == 411
        # A length declared beside a chunked body does not count: the chunks are read.
        both = anyone.post("/login", content=b"csrf_token=x", headers={
            "content-type": "application/x-www-form-urlencoded",
            "transfer-encoding": "chunked"})
        assert both.status_code == 411
        # A form of ordinary size goes on to the CSRF check and the login.
        wrong = anyone.post("/login", data={"csrf_token": csrf_of(page), "username": "rex",
                                            "password": "wrong"})
        assert wrong.status_code not in (411, 413)
