"""The import contracts of pyproject.toml ([tool.importlinter]): the layers import
downwards only, nothing below the Kafka layer imports a Kafka library, the offline
verifier imports only what it ships, and no module imports itself round a cycle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_contracts_are_kept() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "import-linter is not installed (the test extras)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([lint, "--no-cache"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout
