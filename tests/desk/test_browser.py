"""The desk in a real browser: `consentwatch desk serve` on a free port, Debian's headless
Chromium driven through Debian's chromedriver (deploy/packages.sh installs both; no
browser is downloaded at run time)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.desk.conftest import DEADLINE_S, PASSWORD, SCRIPT, serve_desk


@pytest.fixture(scope="module")
def desk_url(desk_ledger: Path) -> Iterator[str]:
    yield from serve_desk(desk_ledger)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, ("Debian's chromium and chromium-driver are not installed: "
                                 "run deploy/packages.sh before the tests")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    chrome.set_page_load_timeout(DEADLINE_S)
    try:
        yield chrome
    finally:
        chrome.quit()


def _wait(browser: Any, condition: Any) -> Any:
    return WebDriverWait(browser, DEADLINE_S).until(condition)


def _no_alert(browser: Any) -> None:
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018  # raises when no alert is open


@pytest.fixture(scope="module")
def signed_in(browser: Any, desk_url: str) -> Any:
    browser.get(f"{desk_url}/findings?rule=covert-profile-view")
    _wait(browser, expected_conditions.url_contains("/login"))
    browser.find_element(By.ID, "username").send_keys("viola")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in").click()
    _wait(browser, expected_conditions.presence_of_element_located((By.ID, "findings-table")))
    assert browser.current_url.endswith("/findings?rule=covert-profile-view")  # back where asked
    return browser


def _rows(browser: Any) -> list[Any]:
    return browser.find_elements(By.CSS_SELECTOR, "#findings-table tbody tr")


def _table(browser: Any) -> list[tuple[str, str]]:
    """(leaf index, text) of each row, read in one go (htmx may swap the table meanwhile)."""
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#findings-table tbody tr')]"
        ".map(r => [r.dataset.leaf, r.innerText]);")
    return [(str(leaf), str(text)) for leaf, text in rows]


def _leaves(browser: Any) -> list[str]:
    return [leaf for leaf, _ in _table(browser)]


def test_without_a_session_the_browser_lands_on_the_login_page(browser: Any,
                                                               desk_url: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{desk_url}/accounts")
    _wait(browser, expected_conditions.presence_of_element_located((By.ID, "sign-in")))
    assert "/login?next=" in browser.current_url


def test_sign_in_filter_page_and_open_a_finding(signed_in: Any, desk_url: str,
                                                screenshot: Any) -> None:
    browser = signed_in
    browser.get(f"{desk_url}/findings")
    Select(browser.find_element(By.ID, "f-rule")).select_by_value("pseudonym-deanonymized")
    browser.find_element(By.ID, "f-apply").click()  # htmx swaps the table in
    _wait(browser, expected_conditions.url_contains("rule=pseudonym-deanonymized"))
    _wait(browser, lambda b: _table(b) and all("pseudonym-deanonymized" in text
                                               for _, text in _table(b)))
    screenshot(browser, "desk-findings")
    browser.get(f"{desk_url}/findings")
    first = _leaves(browser)
    assert len(first) == 50
    browser.find_element(By.ID, "next-page").click()
    _wait(browser, expected_conditions.url_contains("before="))
    _wait(browser, lambda b: _leaves(b) and _leaves(b)[0] not in first)
    second = _leaves(browser)
    assert len(second) == 50 and not set(first) & set(second)
    browser.find_element(By.ID, "prev-page").click()
    _wait(browser, lambda b: _leaves(b) == first)
    _rows(browser)[0].find_element(By.CSS_SELECTOR, "td.when a").click()
    _wait(browser, expected_conditions.presence_of_element_located((By.ID, "explanation")))
    assert browser.find_element(By.ID, "inclusion").text.startswith("Leaf ")
    assert browser.find_elements(By.CSS_SELECTOR, "svg.timeline")
    screenshot(browser, "desk-finding")


def test_hostile_event_fields_render_as_text_and_no_script_runs(signed_in: Any,
                                                                desk_url: str) -> None:
    browser = signed_in
    browser.get(f"{desk_url}/findings")
    _wait(browser, expected_conditions.presence_of_element_located((By.ID, "findings-table")))
    hostile = [r for r in _rows(browser) if SCRIPT in r.text]
    assert hostile, "the hostile finding's explanation is shown as text"
    hostile[0].find_element(By.CSS_SELECTOR, "td.when a").click()
    _wait(browser, expected_conditions.presence_of_element_located((By.ID, "explanation")))
    assert SCRIPT in browser.find_element(By.ID, "explanation").text
    body = browser.find_element(By.TAG_NAME, "main").text
    assert body.count(SCRIPT) >= 5  # explanation, provider, account, meeting, event fields
    assert browser.find_elements(By.CSS_SELECTOR, "main script, main img") == []
    assert browser.execute_script("return window.pwned === undefined") is True
    _no_alert(browser)


def test_a_malformed_filter_shows_a_message(signed_in: Any, desk_url: str) -> None:
    browser = signed_in
    browser.get(f"{desk_url}/findings")
    browser.find_element(By.ID, "f-from").send_keys("last tuesday")
    browser.find_element(By.ID, "f-apply").click()
    problems = _wait(browser, expected_conditions.visibility_of_element_located(
        (By.ID, "filter-problems")))
    assert "from: not a date or an RFC 3339 time" in problems.text


def test_an_unknown_finding_is_a_404_page(signed_in: Any, desk_url: str) -> None:
    browser = signed_in
    browser.get(f"{desk_url}/findings/{'0' * 64}")
    message = _wait(browser, expected_conditions.presence_of_element_located(
        (By.ID, "error-message")))
    assert "no finding with this id" in message.text
    status = browser.execute_async_script(
        "const done = arguments[0];"
        f"fetch('/findings/{'0' * 64}').then(r => done(r.status));")
    assert status == 404


def test_a_post_without_the_csrf_token_is_403(signed_in: Any, desk_url: str) -> None:
    browser = signed_in
    browser.get(f"{desk_url}/findings")
    status = browser.execute_async_script(
        "const done = arguments[0];"
        "fetch('/logout', {method: 'POST'}).then(r => done(r.status));")
    assert status == 403
    browser.get(f"{desk_url}/findings")  # still signed in
    assert browser.find_elements(By.ID, "findings-table")


# -- the review flow: on its own copy of the ledger, served with a signing key ---------------


@pytest.fixture(scope="module")
def flow(desk_ledger: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """(url, ledger path, public key path) of a desk that exports."""
    from streams.evidence.keys import generate_keypair

    base = tmp_path_factory.mktemp("flow")
    ledger = base / "ledger.db"
    for suffix in ("", "-wal"):
        if Path(f"{desk_ledger}{suffix}").exists():
            shutil.copy(f"{desk_ledger}{suffix}", f"{ledger}{suffix}")
    key, public = generate_keypair(base / "keys")
    for url in serve_desk(ledger, "--private-key", str(key)):
        yield url, ledger, public


def _download(browser: Any, folder: Path) -> Path:
    """The zip the browser downloaded into `folder`, once complete."""
    def done(_: Any) -> Path | bool:
        files = list(folder.iterdir())
        complete = [f for f in files if f.suffix == ".zip"]
        return complete[0] if complete and not any(
            f.name.endswith(".crdownload") for f in files) else False

    found: Path = _wait(browser, done)
    return found


def _review_in_browser(browser: Any, url: str) -> str:
    """Sign in as ada (admin: reviews, exceptions, exports), filter acct1's open covert
    profile views, open the newest, acknowledge, comment, resolve it as a false
    positive; its id."""
    from tests.desk.conftest import HOSTILE

    browser.delete_all_cookies()
    browser.get(f"{url}/login")
    browser.find_element(By.ID, "username").send_keys("ada")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in").click()
    _wait(browser, expected_conditions.presence_of_element_located((By.ID, "findings-table")))
    Select(browser.find_element(By.ID, "f-rule")).select_by_value("covert-profile-view")
    Select(browser.find_element(By.ID, "f-status")).select_by_value("open")
    browser.find_element(By.ID, "f-account").send_keys("acct1")
    browser.find_element(By.ID, "f-apply").click()
    _wait(browser, expected_conditions.url_contains("status=open"))
    _wait(browser, lambda b: _table(b) and all("acct1" in text and "open" in text
                                               for _, text in _table(b)))
    _rows(browser)[0].find_element(By.CSS_SELECTOR, "td.when a").click()
    _wait(browser, expected_conditions.presence_of_element_located((By.ID, "acknowledge")))
    finding_id = str(browser.find_element(By.CSS_SELECTOR, "input[name=finding_id]")
                     .get_attribute("value"))
    browser.find_element(By.ID, "acknowledge").click()  # htmx swaps the review panel
    _wait(browser, expected_conditions.text_to_be_present_in_element(
        (By.ID, "review-status"), "acknowledged"))
    browser.find_element(By.ID, "comment-text").send_keys(HOSTILE)
    browser.find_element(By.ID, "comment").click()
    _wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "tr[data-review]")) == 2)
    Select(browser.find_element(By.ID, "reason")).select_by_value("false_positive")
    Select(browser.find_element(By.ID, "fp-kind")).select_by_value("test_traffic")
    browser.find_element(By.ID, "resolve").click()
    _wait(browser, expected_conditions.text_to_be_present_in_element(
        (By.ID, "review-status"), "resolved"))
    assert "resolved: false_positive (test_traffic)" in browser.find_element(
        By.ID, "review-label").text
    assert SCRIPT in browser.find_element(By.ID, "review-history").text  # as text
    assert browser.execute_script("return window.pwned === undefined") is True
    _no_alert(browser)
    return finding_id


def _except_and_export_in_browser(browser: Any, url: str, downloads: Path) -> Path:
    """An exception for acct1's findings of March 2026, then an export of them: the
    zip the browser downloaded."""
    browser.get(f"{url}/exceptions")
    for field, value in (("x-account", "acct1"), ("x-from", "2026-03-01"),
                         ("x-to", "2026-04-01"), ("x-until", "2099-01-01"),
                         ("x-reason", "processing agreement with the providers")):
        browser.find_element(By.ID, field).send_keys(value)
    browser.find_element(By.ID, "x-record").click()
    _wait(browser, expected_conditions.text_to_be_present_in_element(
        (By.ID, "active-exceptions"), "processing agreement with the providers"))
    browser.get(f"{url}/findings?account=acct1&status=excepted")
    _wait(browser, lambda b: _table(b) and all("excepted" in text for _, text in _table(b)))
    browser.execute_cdp_cmd("Page.setDownloadBehavior",
                            {"behavior": "allow", "downloadPath": str(downloads)})
    browser.get(f"{url}/export")
    for field, value in (("e-from", "2026-03-01"), ("e-to", "2026-04-01"),
                         ("e-account", "acct1"), ("e-purpose", "audit of March")):
        browser.find_element(By.ID, field).send_keys(value)
    browser.find_element(By.ID, "e-export").click()
    return _download(browser, downloads)


def test_review_except_and_export_in_the_browser_then_verify(
        browser: Any, flow: Any, tmp_path: Path) -> None:
    import zipfile

    import orjson

    from streams.evidence.ledger import open_ledger
    from tests.conftest import run_cli

    url, ledger_path, public = flow
    finding_id = _review_in_browser(browser, url)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    bundle = _except_and_export_in_browser(browser, url, downloads)

    # the records are in the ledger ...
    with open_ledger(str(ledger_path)) as ledger:
        reviews = [e.record for e in ledger.reviews(finding_id)]
        exceptions = [e.record for e in ledger.exceptions(account="acct1")]
        exported = ledger.exports()[-1]
    assert [(r["action"], r["reviewer"]) for r in reviews] == [
        ("acknowledge", "ada"), ("comment", "ada"), ("resolve", "ada")]
    assert reviews[-1]["false_positive_kind"] == "test_traffic"
    assert exceptions[-1]["author"] == "ada"
    assert exported["actor"] == "ada" and exported["purpose"] == "audit of March"
    # ... and in the bundle, which verify proves
    with zipfile.ZipFile(bundle) as archive:
        names = {Path(name).name: name for name in archive.namelist()}
        trail = [orjson.loads(line) for line in
                 archive.read(names["reviews.jsonl"]).splitlines()]
        shipped = [orjson.loads(line) for line in
                   archive.read(names["exceptions.jsonl"]).splitlines()]
        archive.extractall(tmp_path / "unzipped")
    assert [r["review_id"] for r in trail] == [r["review_id"] for r in reviews]
    assert exceptions[-1] in shipped
    ok = run_cli("verify", str(bundle), "--public-key", str(public))
    assert ok.returncode == 0, ok.stdout.decode() + ok.stderr.decode()
    assert "3 reviews" in ok.stdout.decode()
    # one byte of a review changed: verify fails
    folder = next(path for path in (tmp_path / "unzipped").iterdir() if path.is_dir())
    reviews_file = folder / "reviews.jsonl"
    data = bytearray(reviews_file.read_bytes())
    at = data.index(b'"reviewer":"ada"') + len(b'"reviewer":"')
    data[at] = ord("e")
    reviews_file.write_bytes(bytes(data))
    bad = run_cli("verify", str(folder), "--public-key", str(public))
    assert bad.returncode == 1 and "FAIL" in bad.stdout.decode()
