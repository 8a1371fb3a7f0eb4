"""The hot path compiled with mypyc, from the very same sources.

The engine, `replay` and the readers and writers it runs are plain, typed Python.
`build` compiles them with mypyc (part of mypy) into C extension modules beside
their sources, which Python then imports in their place. There is still one
implementation of each rule: the compiled module is its source, compiled. Without a
C compiler the sources run as they are, only slower.

    python -m streams.native build     compile (skipped when the build is fresh)
    python -m streams.native status    compiled or not, and fresh or not, per module
    python -m streams.native clean     remove the compiled modules

A build records the SHA-256 of every source it compiled (`STAMP`). An extension
module shadows its `.py`, so a compiled module whose source changed since is stale:
`./dev` rebuilds before it runs anything, and `tests/test_native.py` fails on a
stale or (unless CONSENTWATCH_NATIVE=off) a missing build.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["ENV_VAR", "MODULES", "STAMP", "build", "clean", "stale", "status"]

ENV_VAR = "CONSENTWATCH_NATIVE"  # "off": run the sources as they are
PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent  # where `streams/...` paths start
STAMP = PACKAGE / ".native-build.json"

# What `replay` and the worker's correlate stage spend their time in. Modules that
# build classes at run time (the events, findings) stay interpreted.
MODULES = (
    "streams/engine/core.py",
    "streams/engine/state.py",
    "streams/engine/rules/__init__.py",
    "streams/engine/rules/base.py",
    "streams/engine/rules/lookups.py",
    "streams/engine/rules/enrichment_without_consent.py",
    "streams/engine/rules/enrichment_exceeds_consent.py",
    "streams/engine/rules/enrichment_without_notice.py",
    "streams/engine/rules/automatic_egress_feature_inactive.py",
    "streams/engine/rules/covert_profile_view.py",
    "streams/engine/rules/pseudonym_deanonymized.py",
    "streams/engine/rules/disclosure_without_consent.py",
    "streams/engine/evidence.py",
    "streams/engine/taxonomy.py",
    "streams/engine/names.py",
    "streams/catalogue/__init__.py",
    "streams/model/timestamps.py",
    "streams/model/validate.py",
    "streams/privacy/pseudonymise.py",
    "streams/serde/jsonl.py",
    "streams/serde/avro.py",
    "streams/replay.py",
)

# mypyc type-checks what it compiles, with the project's settings for third-party
# libraries (pyproject.toml's, which a built package does not ship): these are Any.
_MYPY_CONFIG = """\
[mypy]
python_version = 3.11
ignore_missing_imports = True
follow_imports = silent

[mypy-fastavro,fastavro.*,avro,avro.*,faust,faust.*,mode,mode.*,aiokafka,aiokafka.*,kafka,kafka.*,rocksdict,rocksdict.*]
follow_imports = skip
"""


def _module_name(path: str) -> str:
    dotted = path.removesuffix(".py").replace("/", ".")
    return dotted.removesuffix(".__init__")


def _extension_files(path: str) -> list[Path]:
    """The compiled files that would shadow the source `path`."""
    source = ROOT / path
    candidates = (source.with_name(source.stem + suffix)
                  for suffix in importlib.machinery.EXTENSION_SUFFIXES)
    return [file for file in candidates if file.exists()]


def _digest(path: str) -> str:
    return hashlib.sha256((ROOT / path).read_bytes()).hexdigest()


def _stamp() -> dict[str, Any]:
    try:
        data = json.loads(STAMP.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _recorded() -> dict[str, str]:
    sources = _stamp().get("sources")
    return sources if isinstance(sources, dict) else {}


def status() -> dict[str, str]:
    """Per module: "compiled", "stale" (its source changed since) or "source"."""
    recorded = _recorded()
    result: dict[str, str] = {}
    for path in MODULES:
        if not _extension_files(path):
            result[path] = "source"
        elif recorded.get(path) != _digest(path):
            result[path] = "stale"
        else:
            result[path] = "compiled"
    return result


def stale() -> list[str]:
    """The compiled modules whose source changed since they were built."""
    return [path for path, state in status().items() if state == "stale"]


def clean() -> int:
    """Remove every compiled module (and the shared runtime library mypyc adds)."""
    removed = 0
    for path in MODULES:
        for file in _extension_files(path):
            file.unlink()
            removed += 1
    for name in _stamp().get("shared", []):  # only the ones this build made
        file = ROOT / str(name)
        if "/" not in str(name) and file.is_file():
            file.unlink()
            removed += 1
    STAMP.unlink(missing_ok=True)
    return removed


def build(force: bool = False, quiet: bool = False) -> bool:
    """Compile MODULES unless the last build is fresh. True when compiled.

    mypyc compiles a copy of the package's sources (beside an installed package sit
    other packages it must not take for ours); the extension modules are then put
    beside the sources they were compiled from. Raises RuntimeError (with mypyc's or
    the compiler's output) when the build fails; the sources keep working then.
    """
    if not force and all(state == "compiled" for state in status().values()):
        return True
    clean()
    digests = {path: _digest(path) for path in MODULES}
    if (ROOT / "pyproject.toml").exists():  # a checkout: keep mypyc's C and its cache
        return _build_in(ROOT / "build" / "native", digests, quiet)
    with tempfile.TemporaryDirectory(prefix="consentwatch-native-") as temporary:
        # an installed package (the image): leave nothing but the modules
        return _build_in(Path(temporary), digests, quiet)


def _build_in(work: Path, digests: dict[str, str], quiet: bool) -> bool:
    stage = work / "src"
    shutil.rmtree(stage, ignore_errors=True)
    shutil.copytree(PACKAGE, stage / PACKAGE.name, ignore=shutil.ignore_patterns(
        "*.so", "*.pyd", "__pycache__", STAMP.name))
    config = work / "mypy.ini"
    config.write_text(_MYPY_CONFIG, encoding="utf-8")
    setup = (
        "import sys\n"
        "from setuptools import setup\n"
        "from mypyc.build import mypycify\n"
        "paths = sys.argv[1:sys.argv.index('--')]\n"
        "del sys.argv[1:sys.argv.index('--') + 1]\n"
        "setup(name='consentwatch-native', packages=[], py_modules=[],\n"
        f"      ext_modules=mypycify(paths, opt_level='3', target_dir={str(work / 'c')!r}))\n"
    )
    command = [sys.executable, "-c", setup, "--config-file", str(config),
               "--cache-dir", str(work / "mypy-cache"), *MODULES, "--",
               "build_ext", "--inplace", "--build-temp", str(work / "temp"),
               "--build-lib", str(work / "lib")]
    done = subprocess.run(command, cwd=stage, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"mypyc build failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
    built = [file for file in stage.rglob("*") if file.is_file()
             and file.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))]
    for file in built:
        target = ROOT / file.relative_to(stage)
        shutil.copyfile(file, target.with_name(target.name + ".tmp"))
        os.replace(target.with_name(target.name + ".tmp"), target)
    missing = [path for path in MODULES if not _extension_files(path)]
    shared = sorted(file.name for file in built if file.parent == stage)
    STAMP.write_text(json.dumps({"sources": digests, "shared": shared}, indent=1,
                                sort_keys=True) + "\n", encoding="utf-8")
    if missing:
        clean()
        raise RuntimeError(f"mypyc build made no extension for {', '.join(missing)}")
    if not quiet:
        print(f"compiled {len(MODULES)} modules with mypyc", file=sys.stderr)
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else ""
    if command == "build":
        if not shutil.which(os.environ.get("CC", "cc")):
            print("streams.native: no C compiler (cc): the sources run as they are",
                  file=sys.stderr)
            return 1
        try:
            build(force="--force" in args[1:])
        except RuntimeError as exc:
            print(f"streams.native: {exc}", file=sys.stderr)
            return 1
        return 0
    if command == "status":
        for path, state in status().items():
            print(f"{state:9} {_module_name(path)}")
        return 0
    if command == "clean":
        print(f"removed {clean()} compiled files", file=sys.stderr)
        return 0
    print("usage: python -m streams.native build [--force] | status | clean", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
