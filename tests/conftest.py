"""Shared fixtures: where the spec's worked examples live, and how to run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests import hypothesis_profiles  # noqa: F401 (registers and loads the profile)
from tests.postgres_fixture import postgres_url  # noqa: F401 (the session's PostgreSQL)

if TYPE_CHECKING:
    from tests.kafka_helpers import Workers

ROOT = Path(__file__).resolve().parent.parent
SPEC_DIR = Path(os.environ.get("CONSENTWATCH_SPEC_DIR", ROOT.parent / "shared" / "spec"))
EXAMPLES_DIR = SPEC_DIR / "examples"


def example_cases() -> list[Path]:
    cases = sorted(p for p in EXAMPLES_DIR.iterdir() if (p / "events.jsonl").exists())
    assert cases, f"no example cases under {EXAMPLES_DIR}"
    return cases


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run the real console script in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "streams.cli.app", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def cli() -> object:
    return run_cli


KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real single-node Kafka broker shared by the whole session: '127.0.0.1:PORT'.

    Started by deploy/kafka/kafka.sh in a fresh temporary dir (the first run on a machine
    also fetches the jars with Maven), stopped at the end of the session. Set
    CONSENTWATCH_BROKER to use a broker that is already running instead.
    """
    existing = os.environ.get("CONSENTWATCH_BROKER")
    if existing:
        yield existing
        return
    data_dir = tmp_path_factory.mktemp("kafka")
    started = subprocess.run(
        [str(KAFKA_SH), "start", "--dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if started.returncode != 0:
        pytest.fail(f"deploy/kafka/kafka.sh start failed:\n{started.stderr}", pytrace=False)
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run(
            [str(KAFKA_SH), "stop", "--dir", str(data_dir)],
            capture_output=True,
            timeout=120,
            check=False,
        )


@pytest.fixture
def workers(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Workers]:
    """Starts workers; every one of them is stopped at the end, whatever happened."""
    from tests.kafka_helpers import Workers

    started = Workers(kafka_bootstrap, tmp_path)
    try:
        yield started
    finally:
        started.stop_all()
