"""Shared fixtures: where the spec's worked examples live, and how to run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
