"""A SQLite ledger for the desk's tests: the seed scenario's findings (real evidence),
130 made-up ones (so that the table has pages), a hostile one whose every event string
tries HTML injection, a checkpoint signed before the last of them, and three users."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.testclient import TestClient

from streams.desk import Database, DeskConfig, create_app
from streams.desk.users import add_user
from streams.evidence.ledger import open_ledger
from tests.evidence.test_export_verify import FROM_MS
from tests.evidence.test_export_verify import _finding as made_up

PASSWORD = "correct horse battery staple"
LOCAL = ("127.0.0.1", 50000)  # a client on this machine (TestClient's default is "testclient")
SCRIPT = "<script>window.pwned = 1</script>"
IMG = '"><img src=x onerror="window.pwned = 2">'
HOSTILE = f"{SCRIPT}{IMG}"
PROVIDERS = ("prov-a", "prov-b", "prov-c")
RULES = ("covert-profile-view", "enrichment-without-consent", "pseudonym-deanonymized")


def _made_up(n: int) -> dict[str, Any]:
    rule = RULES[n % 3]
    record = made_up(f"n{n}", FROM_MS + n * 60_000, rule=rule, subject=f"hmac-sha256:s{n % 7}")
    severity = {"covert-profile-view": "HIGH", "enrichment-without-consent": "HIGH",
                "pseudonym-deanonymized": "CRITICAL"}[rule]
    return record | {"account_id": f"acct{n % 4}", "provider": PROVIDERS[n % 3],
                     "severity": severity}


def hostile_finding() -> dict[str, Any]:
    record = made_up("hostile", FROM_MS + 500 * 60_000, subject=HOSTILE)
    event = {key: (HOSTILE if isinstance(value, str) and key not in ("type", "event_id")
                   else value) for key, value in record["evidence"][0].items()}
    event["data_disclosed"] = [HOSTILE]
    return record | {"explanation": HOSTILE, "provider": HOSTILE, "account_id": HOSTILE,
                     "meeting_id": HOSTILE, "evidence": [event]}


@pytest.fixture(scope="session")
def desk_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import EXAMPLES_DIR, run_cli

    base = tmp_path_factory.mktemp("desk")
    out = base / "replayed.jsonl"
    done = run_cli("replay", str(EXAMPLES_DIR / "seed-scenario" / "events.jsonl"),
                   "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    replayed = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    path = base / "ledger.db"
    with open_ledger(str(path)) as ledger:
        ledger.append("finding", replayed)
        ledger.append("finding", [_made_up(n) for n in range(130)])
        ledger.checkpoint(Ed25519PrivateKey.generate(), "consentwatch")
        ledger.append("finding", [hostile_finding(), made_up("after", FROM_MS - 86_400_000)])
    db = Database(str(path))
    for name, role in (("viola", "viewer"), ("rex", "reviewer"), ("ada", "admin")):
        add_user(db, name, role, PASSWORD, now_ms=FROM_MS)
    db.close()
    return path


@pytest.fixture
def db(desk_ledger: Path) -> Iterator[Database]:
    database = Database(str(desk_ledger))
    yield database
    database.close()


@pytest.fixture
def config() -> DeskConfig:
    return DeskConfig()


@pytest.fixture
def client(db: Database, config: DeskConfig) -> Iterator[TestClient]:
    with TestClient(create_app(db, config), follow_redirects=False,
                    client=LOCAL) as test_client:
        yield test_client


SCREENSHOTS = "CONSENTWATCH_SCREENSHOTS"  # e.g. docs/images: the README's screenshots


@pytest.fixture(scope="session")
def screenshot(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Any, str], Path]:
    """`screenshot(browser, name)` saves the page as NAME.png in a temporary folder, and
    also in the folder named by CONSENTWATCH_SCREENSHOTS when set (relative to the
    checkout): `CONSENTWATCH_SCREENSHOTS=docs/images pytest tests/desk/test_browser.py`
    regenerates the README's."""
    from tests.conftest import ROOT

    folder = tmp_path_factory.mktemp("screenshots")
    target = os.environ.get(SCREENSHOTS)

    def save(browser: Any, name: str) -> Path:
        shot = folder / f"{name}.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if target:
            copy = ROOT / target / shot.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, copy)
        return shot

    return save


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def sign_in(client: TestClient, name: str = "viola", password: str = PASSWORD) -> Any:
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"username": name, "password": password,
                                       "csrf_token": token})


@pytest.fixture
def viewer(client: TestClient) -> TestClient:
    assert sign_in(client).status_code == 303
    return client


# -- a real `desk serve` process -------------------------------------------------------------

DEADLINE_S = 30  # the desk's first answer, a page load, a browser wait


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_desk(ledger: Path, *extra: str) -> Iterator[str]:
    """`consentwatch desk serve` on a free port, stopped when the generator is closed."""
    port = _free_port()
    from tests.conftest import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli.app", "desk", "serve", "--ledger",
         str(ledger), "--bind", f"127.0.0.1:{port}", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the desk exited with {process.returncode}: "
                                 f"{process.stderr.read().decode() if process.stderr else ''}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)  # polling a condition with a deadline, not a fixed wait
    raise AssertionError("the desk did not answer /healthz in time")
