"""A real PostgreSQL server for the session, started by deploy/postgres/postgres.sh.

Like the Kafka fixture: one server per test session in a fresh directory, stopped at
the end. The directory is made under the system temp dir (not pytest's, which the
`postgres` user that runs the server cannot enter when the tests run as root). Set
CONSENTWATCH_TEST_POSTGRES to the URL of a running server to use it instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["fresh_database", "postgres_url"]

POSTGRES_SH = Path(__file__).resolve().parent.parent / "deploy" / "postgres" / "postgres.sh"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a database on a real PostgreSQL server: postgresql://...:PORT/consentwatch."""
    existing = os.environ.get("CONSENTWATCH_TEST_POSTGRES")
    if existing:
        yield existing
        return
    data_dir = tempfile.mkdtemp(prefix="consentwatch-pg-")
    started = subprocess.run([str(POSTGRES_SH), "start", "--dir", data_dir],
                             capture_output=True, text=True, timeout=180, check=False)
    try:
        if started.returncode != 0:
            pytest.fail(f"deploy/postgres/postgres.sh start failed:\n{started.stderr}",
                        pytrace=False)
        yield started.stdout.strip()
    finally:
        subprocess.run([str(POSTGRES_SH), "stop", "--dir", data_dir],
                       capture_output=True, timeout=120, check=False)
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A new, empty database on the server of `server` (a URL) for one test; dropped after."""
    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
