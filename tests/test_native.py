"""The compiled hot path (streams.native): built from the current sources, in use,
giving the very findings its sources give, and built without writing outside the package."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import orjson
import pytest

from streams import native
from tests.conftest import run_cli

COMPILED = os.environ.get(native.ENV_VAR) != "off"
SUFFIX = str(sysconfig.get_config_var("EXT_SUFFIX"))


def _module_files(env: dict[str, str]) -> list[str]:
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]: print(importlib.import_module(name).__file__)")
    names = [native._module_name(path) for path in native.sources()]
    done = subprocess.run([sys.executable, "-c", code, *names], env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout.split()


def test_off_runs_the_sources_even_beside_a_build() -> None:
    files = _module_files({**os.environ, native.ENV_VAR: "off"})
    assert len(files) == len(native.sources())
    assert all(file.endswith(".py") for file in files), files


def test_the_hot_path_runs_compiled_from_its_current_sources() -> None:
    if not COMPILED:
        return  # the sources run (test_off_runs_the_sources_even_beside_a_build)
    # ./dev builds it; a build that failed, or a source changed since, fails here.
    assert native.status() == dict.fromkeys(native.sources(), "compiled")
    for path in native.sources():
        module = importlib.import_module(native._module_name(path))
        assert str(module.__file__).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_a_source_changed_since_the_build_is_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    changed = native.sources()[0]
    recorded = {path: native._digest(path) for path in native.sources()}
    recorded[changed] = "0" * 64
    monkeypatch.setattr(native, "_recorded", lambda: recorded)
    monkeypatch.setattr(native, "_extension_files", lambda path: [Path(path + ".so")])
    assert native.stale() == [changed]
    monkeypatch.setattr(native, "_extension_files", lambda path: [])
    assert set(native.status().values()) == {"source"}


def test_dev_runs_the_engine_codec_relay_and_property_tests_from_the_sources() -> None:
    script = (native.ROOT / "dev").read_text(encoding="utf-8")
    command = re.search(r'^ *CONSENTWATCH_NATIVE=off "\$VENV/bin/pytest"(.*?)\|\| failed=1',
                        script, re.MULTILINE | re.DOTALL)
    assert command, "./dev runs no tests from the sources"
    words = command.group(1).replace("\\\n", " ").split()
    # the engine, every rule, the state and the property tests; the spec's examples; the
    # state codec and its store; the codecs
    for folder in ("tests/engine", "tests/replay", "tests/state"):
        assert folder in words, folder
    for name in ("serde/test_relay", "serde/test_wire", "serde/test_avro", "test_native"):
        assert f"tests/{name}.py" in words, name
    # every test of those files, as they are: nothing deselected, and the profile (the
    # examples' budget) the compiled run has, no other
    assert not [word for word in words if word.startswith(("-k", "-m", "--deselect", "--hyp"))]
    assert "export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}" in script


def test_modules_names_files_and_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                                          ) -> None:
    for name in ("p/one.py", "p/rules/__init__.py", "p/rules/a.py", "p/rules/sub/__init__.py",
                 "p/rules/sub/b.py", "p/flat.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    monkeypatch.setattr(native, "ROOT", tmp_path)
    monkeypatch.setattr(native, "MODULES", ("p/one.py", "p/rules", "p/flat"))
    # a package's __init__ stays interpreted (see MODULES)
    assert native.sources() == ["p/one.py", "p/rules/a.py", "p/rules/sub/b.py", "p/flat.py"]
    (tmp_path / "p/rules/c.py").write_text("")  # a module added: no edit of MODULES
    assert "p/rules/c.py" in native.sources()
    monkeypatch.setattr(native, "MODULES", ("p/nothing",))
    with pytest.raises(FileNotFoundError):
        native.sources()


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` but bytecode, with its size and modification time."""
    return {file.relative_to(root).as_posix(): (file.stat().st_size, file.stat().st_mtime_ns)
            for file in root.rglob("*") if file.is_file() and "__pycache__" not in file.parts}


@pytest.mark.slow
def test_a_build_writes_nothing_outside_the_package(tmp_path: Path) -> None:
    # A copy of the checkout, with a home and a temporary folder of its own: after a
    # build, only files in its streams/ are new or changed; `clean` removes them all.
    checkout, home, temporary = tmp_path / "checkout", tmp_path / "home", tmp_path / "tmp"
    shutil.copytree(native.ROOT / "streams", checkout / "streams", ignore=shutil.ignore_patterns(
        "*.so", "__pycache__", native.STAMP.name, native.WORK.name, native.LOCK.name))
    shutil.copy(native.ROOT / "pyproject.toml", checkout)
    home.mkdir()
    temporary.mkdir()
    env = {**{k: v for k, v in os.environ.items() if k != native.ENV_VAR},
           "PYTHONPATH": str(checkout), "HOME": str(home), "TMPDIR": str(temporary)}

    def run(code: str) -> str:
        done = subprocess.run([sys.executable, "-c", code], cwd=checkout, env=env,
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    # A package like the rules' (its __init__ imports its modules, a module imports the
    # package), a package's __init__ (its __path__ and resources must be right), a module.
    rules = checkout / "streams" / "probe"
    (rules / "sub").mkdir(parents=True)
    (rules / "__init__.py").write_text("from streams.probe.a import double\n\n"
                                       "def quad(x: int) -> int:\n    return double(double(x))\n")
    (rules / "a.py").write_text("def double(x: int) -> int:\n    return 2 * x\n")
    (rules / "sub" / "__init__.py").write_text("")
    (rules / "sub" / "b.py").write_text("from streams.probe import quad\n\n"
                                        "def octo(x: int) -> int:\n    return 2 * quad(x)\n")
    modules = ("native.MODULES = ('streams/probe', 'streams/catalogue/__init__.py',\n"
               "                  'streams/engine/names.py')\n")
    before = _files(tmp_path)
    run(f"from streams import native\n{modules}native.build(quiet=True)")
    after = _files(tmp_path)
    written = sorted(path for path in after if after[path] != before.get(path))
    assert written and all(path.startswith("checkout/streams/") for path in written), written
    assert not (checkout / "streams" / native.WORK.name).exists()
    probe = run("import streams.catalogue as c, streams.engine.names as n\n"
                "import streams.probe.a as a, streams.probe.sub.b as b\n"
                "print(c.__file__, n.__file__, a.__file__, b.__file__)\n"
                "print(len(c.load_catalogue().rules), b.octo(3))")
    catalogue, names, a, b, rule_count, octo = probe.split()
    assert catalogue == str(checkout / "streams" / "catalogue" / "__init__") + SUFFIX
    assert names == str(checkout / "streams" / "engine" / "names") + SUFFIX
    assert (a, b) == (str(rules / "a") + SUFFIX, str(rules / "sub" / "b") + SUFFIX)
    assert int(rule_count) > 0 and int(octo) == 24
    # clean removes it all, even the modules MODULES no longer names
    run("from streams import native\nnative.MODULES = ()\nnative.clean()")
    assert _files(tmp_path) == before


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


def test_clean_removes_compiled_files_a_lost_record_left(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A stale extension (a module since moved, or kept interpreted) would shadow its
    source or lie about; `clean` removes it even when no build record names it."""
    package = tmp_path / "streams"
    (package / "engine" / "rules").mkdir(parents=True)
    (package / "engine" / "rules" / "__init__.py").write_text("")
    stray = [package / "engine" / "rules" / "__init__.cpython-311-x86_64-linux-gnu.so",
             package / "evidence" / "pseudonymise.cpython-311-x86_64-linux-gnu.so"]
    for file in stray:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(b"\x7fELF")
    monkeypatch.setattr(native, "PACKAGE", package)
    monkeypatch.setattr(native, "ROOT", tmp_path)
    monkeypatch.setattr(native, "STAMP", package / ".native-build.json")
    monkeypatch.setattr(native, "WORK", package / ".native-work")
    monkeypatch.setattr(native, "MODULES", ())
    assert native.clean() == len(stray)
    assert not [file for file in stray if file.exists()]
    assert (package / "engine" / "rules" / "__init__.py").exists()


def test_a_compiled_file_the_last_build_did_not_write_makes_it_stale(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module deleted from a package keeps its extension until a build cleans: a build
    must not call itself fresh while one lies about."""
    package = tmp_path / "streams"
    (package / "engine" / "rules").mkdir(parents=True)
    built = "engine/core.cpython-311-x86_64-linux-gnu.so"
    (package / built).write_bytes(b"")
    monkeypatch.setattr(native, "PACKAGE", package)
    monkeypatch.setattr(native, "STAMP", package / ".native-build.json")
    native.STAMP.write_text(json.dumps({"built": [built]}), encoding="utf-8")
    assert native.strays() == []
    gone = package / "engine" / "rules" / "deleted.cpython-311-x86_64-linux-gnu.so"
    gone.write_bytes(b"")
    assert native.strays() == [gone]


def test_an_editors_lock_file_is_no_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    rules = tmp_path / "p" / "rules"
    rules.mkdir(parents=True)
    (rules / "__init__.py").write_text("")
    (rules / "a.py").write_text("")
    (rules / ".#a.py").symlink_to("user@host.1234")  # Emacs' lock: a dangling link
    monkeypatch.setattr(native, "ROOT", tmp_path)
    monkeypatch.setattr(native, "MODULES", ("p/rules",))
    assert native.sources() == ["p/rules/a.py"]
