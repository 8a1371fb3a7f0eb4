"""The hot path compiled with mypyc, from the very same sources.

The engine, `replay` and the readers and writers it runs are plain, typed Python.
`build` compiles them with mypyc (part of mypy) into C extension modules beside
their sources, which Python then imports in their place. There is still one
implementation of each rule: the compiled module is its source, compiled. Without a
C compiler the sources run as they are, only slower.

A build writes nothing outside the package's folder: each module is compiled on its own
(mypyc's `separate`), so its runtime library, `<module>__mypyc*.so`, sits beside it
too (one library for them all would have to sit above the package, where mypyc derives
every module's `__file__` from); mypyc works in a folder inside the package, removed
when the build is done.

    python -m streams.native build     compile (skipped when the build is fresh)
    python -m streams.native status    compiled or not, and fresh or not, per module
    python -m streams.native clean     remove the compiled modules

A build records the SHA-256 of every source it compiled (`STAMP`). An extension
module shadows its `.py`, so a compiled module whose source changed since is stale:
`./dev` rebuilds before it runs anything, and `tests/test_native.py` fails on a
stale or (unless CONSENTWATCH_NATIVE=off) a missing build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["ENV_VAR", "MODULES", "STAMP", "build", "clean", "sources", "stale", "status"]

ENV_VAR = "CONSENTWATCH_NATIVE"  # "off": run the sources as they are
PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent  # where `streams/...` paths start
STAMP = PACKAGE / ".native-build.json"
WORK = PACKAGE / ".native-work"  # mypyc's folder during a build
LOCK = PACKAGE / ".native-build.lock"  # held during a build

# What `replay` and the worker's correlate stage spend their time in. Modules that
# build classes at run time (the events, findings) stay interpreted. An entry is a
# module's file, or a path without `.py`: that module, or when it is a package every
# module in it but its `__init__.py` files (a module added to the package is compiled
# with no edit here). A package's `__init__` stays interpreted: compiled separately, one
# that imports a compiled module of its own package recurses without end on import.
MODULES = (
    "streams/engine/core.py",
    "streams/engine/state.py",
    "streams/engine/rules",
    "streams/engine/evidence.py",
    "streams/engine/taxonomy.py",
    "streams/engine/names.py",
    "streams/catalogue/__init__.py",
    "streams/model/timestamps.py",
    "streams/model/validate.py",
    "streams/privacy/pseudonymise.py",
    "streams/serde/jsonl.py",
    "streams/serde/avro.py",
    "streams/serde/datum_codec.py",
    "streams/serde/finding_writer.py",
    "streams/kafka/murmur2.py",
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


def sources() -> list[str]:
    """The source files MODULES names, as paths from ROOT."""
    found: list[str] = []
    for entry in MODULES:
        path = ROOT / entry
        if entry.endswith(".py"):
            found.append(entry)
        elif path.with_name(path.name + ".py").is_file():
            found.append(entry + ".py")
        elif (path / "__init__.py").is_file():
            # not an editor's lock or backup (`.#x.py`), nor anything but a plain file
            found += sorted(file.relative_to(ROOT).as_posix() for file in path.rglob("*.py")
                            if file.name != "__init__.py" and not file.name.startswith(".")
                            and file.is_file() and not file.is_symlink())
        else:
            raise FileNotFoundError(f"MODULES names {entry}: neither a module nor a package")
    return found


def _module_name(path: str) -> str:
    dotted = path.removesuffix(".py").replace("/", ".")
    return dotted.removesuffix(".__init__")


def _siblings(path: str, stem: str) -> list[Path]:
    source = ROOT / path
    candidates = (source.with_name(stem + suffix)
                  for suffix in importlib.machinery.EXTENSION_SUFFIXES)
    return [file for file in candidates if file.exists()]


def _extension_files(path: str) -> list[Path]:
    """The compiled files that would shadow the source `path`."""
    return _siblings(path, Path(path).stem)


def _runtime_files(path: str) -> list[Path]:
    """mypyc's runtime library of the module `path` (a package's sits beside its folder)."""
    source = Path(path)
    if source.name == "__init__.py":
        return _siblings(source.parent.as_posix(), source.parent.name + "__mypyc")
    return _siblings(path, source.stem + "__mypyc")


def _digest(path: str) -> str:
    return hashlib.sha256((ROOT / path).read_bytes()).hexdigest()


def _stamp() -> dict[str, Any]:
    try:
        data = json.loads(STAMP.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _recipe() -> str:
    """The digest of this file: a build made by another recipe is stale as a whole."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _recorded() -> dict[str, str]:
    stamp = _stamp()
    sources = stamp.get("sources")
    return sources if isinstance(sources, dict) and stamp.get("recipe") == _recipe() else {}


def status() -> dict[str, str]:
    """Per module: "compiled", "stale" (its source changed since) or "source"."""
    recorded = _recorded()
    result: dict[str, str] = {}
    for path in sources():
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


def strays() -> list[Path]:
    """Compiled files in the package that the last build did not write: of a module
    since deleted or moved, or of an older build. One could still be imported."""
    built = {str(name) for name in _stamp().get("built", [])}
    return sorted(file for file in PACKAGE.rglob("*.so")
                  if file.relative_to(PACKAGE).as_posix() not in built)


def clean() -> int:
    """Remove every compiled module and its runtime library (and the build's lock)."""
    with _lock():
        removed = _remove_compiled()
    LOCK.unlink(missing_ok=True)
    return removed


def _remove_compiled() -> int:
    removed = 0
    for path in sources():
        for file in _extension_files(path) + _runtime_files(path):
            file.unlink()
            removed += 1
    stamp = _stamp()
    for name in stamp.get("built", []):  # also those of modules MODULES no longer names
        file = PACKAGE / str(name)
        if file.resolve().is_relative_to(PACKAGE) and file.is_file():
            file.unlink()
            removed += 1
    for name in stamp.get("shared", []):
        # Builds before the separate libraries wrote one beside the package, named here.
        file = ROOT / str(name)
        if "/" not in str(name) and file.is_file():
            file.unlink()
            removed += 1
    # Left by a build whose record is gone, or of a module since moved or kept
    # interpreted: an extension beside its source would still shadow it, and one of a
    # moved module is dead weight. The package ships no other native code.
    for file in PACKAGE.rglob("*.so"):
        file.unlink()
        removed += 1
    if (ROOT / "pyproject.toml").exists():  # and kept mypyc's work in the checkout
        shutil.rmtree(ROOT / "build" / "native", ignore_errors=True)
        with contextlib.suppress(OSError):
            (ROOT / "build").rmdir()  # only when nothing else is in it
    shutil.rmtree(WORK, ignore_errors=True)
    STAMP.unlink(missing_ok=True)
    return removed


def build(force: bool = False, quiet: bool = False) -> bool:
    """Compile MODULES unless the last build is fresh. True when compiled.

    mypyc compiles a copy of the package's sources (beside an installed package sit
    other packages it must not take for ours), in WORK; the extension modules are then
    put beside the sources they were compiled from, and WORK is removed. Raises
    RuntimeError (with mypyc's or the compiler's output) when the build fails; the
    sources keep working then.
    """
    with _lock():
        if (not force and all(state == "compiled" for state in status().values())
                and not strays()):
            return True
        return _build(quiet)


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """One build at a time (two would share WORK and the files they put in place)."""
    with open(LOCK, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(quiet: bool) -> bool:
    _remove_compiled()
    paths = sources()
    digests = {path: _digest(path) for path in paths}
    try:
        built = _build_in(WORK, paths)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    missing = [path for path in paths if not _extension_files(path)]
    STAMP.write_text(json.dumps({"recipe": _recipe(), "sources": digests, "built": built},
                                indent=1, sort_keys=True) + "\n", encoding="utf-8")
    if missing:
        _remove_compiled()
        raise RuntimeError(f"mypyc build made no extension for {', '.join(missing)}")
    if not quiet:
        print(f"compiled {len(paths)} modules with mypyc", file=sys.stderr)
    return True


def _build_in(work: Path, paths: list[str]) -> list[str]:
    """Compile `paths` in `work`; the files put in the package, as paths from it."""
    stage = work / "src"
    shutil.copytree(PACKAGE, stage / PACKAGE.name, ignore=shutil.ignore_patterns(
        "*.so", "*.pyd", "__pycache__", STAMP.name, WORK.name, LOCK.name))
    config = work / "mypy.ini"
    config.write_text(_MYPY_CONFIG, encoding="utf-8")
    setup = (
        "import sys\n"
        "from setuptools import setup\n"
        "from mypyc.build import mypycify\n"
        "paths = sys.argv[1:sys.argv.index('--')]\n"
        "del sys.argv[1:sys.argv.index('--') + 1]\n"
        "setup(name='consentwatch-native', packages=[], py_modules=[],\n"
        "      ext_modules=mypycify(paths, opt_level='3', separate=True,\n"
        f"                           target_dir={str(work / 'c')!r}))\n"
    )
    command = [sys.executable, "-c", setup, "--config-file", str(config),
               "--cache-dir", str(work / "mypy-cache"), *paths, "--",
               "build_ext", "--inplace", "--build-temp", str(work / "temp"),
               "--build-lib", str(work / "lib"),
               # one library per module, each with mypyc's runtime: compile them side by side
               "--parallel", str(os.cpu_count() or 1)]
    # Whatever the tools put in a temporary folder stays in WORK too.
    env = {**os.environ, "TMPDIR": str(work), "MYPY_CACHE_DIR": str(work / "mypy-cache")}
    done = subprocess.run(command, cwd=stage, env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"mypyc build failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
    built = [file for file in stage.rglob("*") if file.is_file()
             and file.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))]
    outside = [file for file in built if not file.is_relative_to(stage / PACKAGE.name)]
    if outside:
        raise RuntimeError(f"mypyc built a library outside the package: {outside[0].name}")
    for file in built:
        target = ROOT / file.relative_to(stage)
        shutil.copyfile(file, target.with_name(target.name + ".tmp"))
        os.replace(target.with_name(target.name + ".tmp"), target)
    return sorted(file.relative_to(stage / PACKAGE.name).as_posix() for file in built)


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
