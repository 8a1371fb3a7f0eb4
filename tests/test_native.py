"""The compiled hot path (streams.native): built from the current sources, in use, and
giving the very findings its sources give."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from streams import native
from tests.conftest import run_cli

COMPILED = os.environ.get(native.ENV_VAR) != "off"


def _module_files(env: dict[str, str]) -> list[str]:
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]: print(importlib.import_module(name).__file__)")
    names = [native._module_name(path) for path in native.MODULES]
    done = subprocess.run([sys.executable, "-c", code, *names], env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout.split()


def test_off_runs_the_sources_even_beside_a_build() -> None:
    files = _module_files({**os.environ, native.ENV_VAR: "off"})
    assert len(files) == len(native.MODULES)
    assert all(file.endswith(".py") for file in files), files


def test_the_hot_path_runs_compiled_from_its_current_sources() -> None:
    if not COMPILED:
        return  # the sources run (test_off_runs_the_sources_even_beside_a_build)
    # ./dev builds it; a build that failed, or a source changed since, fails here.
    assert native.status() == dict.fromkeys(native.MODULES, "compiled")
    for path in native.MODULES:
        module = importlib.import_module(native._module_name(path))
        assert str(module.__file__).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_a_source_changed_since_the_build_is_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    changed = native.MODULES[0]
    recorded = {path: native._digest(path) for path in native.MODULES}
    recorded[changed] = "0" * 64
    monkeypatch.setattr(native, "_recorded", lambda: recorded)
    monkeypatch.setattr(native, "_extension_files", lambda path: [Path(path + ".so")])
    assert native.stale() == [changed]
    monkeypatch.setattr(native, "_extension_files", lambda path: [])
    assert set(native.status().values()) == {"source"}


def _outputs(path: Path, volatile: str) -> list[dict[str, object]]:
    records = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    for record in records:
        record.pop(volatile, None)  # wall-clock times
    return records


@pytest.mark.skipif(not COMPILED, reason="CONSENTWATCH_NATIVE=off: nothing is compiled")
@pytest.mark.parametrize("form", ["jsonl", "avro"])
def test_compiled_and_interpreted_replay_give_the_same_outputs(form: str, tmp_path: Path
                                                                ) -> None:
    events = tmp_path / f"events.{form}"
    made = run_cli("simulate", "--seed", "11", "--events", "20000", "--out", str(events),
                   "--duplicate-share", "0.05")
    assert made.returncode == 0, made.stderr.decode()
    if form == "jsonl":  # and some records that are not events
        with events.open("ab") as out:
            out.write(b'{"type": "ConsentChanged"}\nnot json\n[1, 2]\n')
    # The sources alone: a copy of the package without its compiled modules.
    interpreted = tmp_path / "sources"
    ignore = shutil.ignore_patterns("*.so", "__pycache__", ".native-build.json")
    shutil.copytree(native.ROOT / "streams", interpreted / "streams", ignore=ignore)
    shutil.copytree(native.ROOT / "schemas", interpreted / "schemas")
    runs = {}
    for name, env_path in (("compiled", None), ("interpreted", interpreted)):
        out = tmp_path / name
        out.mkdir()
        args = ["replay", str(events), "--out", str(out / "findings.jsonl"),
                "--amendments", str(out / "amendments.jsonl"),
                "--dead-letter", str(out / "dead.jsonl"), "--allowed-lateness", "5", "-q"]
        if env_path is None:
            done = run_cli(*args)
        else:
            env = {**os.environ, "PYTHONPATH": str(env_path)}
            done = subprocess.run([sys.executable, "-m", "streams.cli.app", *args],
                                  cwd=env_path, env=env, capture_output=True, timeout=300,
                                  check=False)
            probe = subprocess.run(
                [sys.executable, "-c", "import streams.engine.core as m; print(m.__file__)"],
                cwd=env_path, env=env, capture_output=True, text=True, check=True)
            assert probe.stdout.strip().endswith(".py")
        runs[name] = (done.returncode, done.stderr)
        assert (out / "findings.jsonl").stat().st_size > 0
        assert (out / "amendments.jsonl").stat().st_size > 0  # late events, at 5 s
        assert ((out / "dead.jsonl").stat().st_size > 0) == (form == "jsonl")
    assert runs["compiled"] == runs["interpreted"]
    compiled, interpreted_out = tmp_path / "compiled", tmp_path / "interpreted"
    assert (_outputs(compiled / "findings.jsonl", "detected_at")
            == _outputs(interpreted_out / "findings.jsonl", "detected_at"))
    assert (_outputs(compiled / "amendments.jsonl", "detected_at")
            == _outputs(interpreted_out / "amendments.jsonl", "detected_at"))
    assert (_outputs(compiled / "dead.jsonl", "dead_lettered_at")
            == _outputs(interpreted_out / "dead.jsonl", "dead_lettered_at"))
