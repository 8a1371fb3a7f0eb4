"""The code a benchmark measures: a source tree, and a baseline checked out beside it.

A benchmark child runs the tree it is given: `PYTHONPATH=<tree>` (ahead of the venv's
editable install, which points at /work/main) and its working directory in the tree
(so `python -m streams...` finds it first too). `verify` asks a child where it
imported `streams.engine.core` from, and refuses a tree the child did not import, or,
when asked, one that is not the compiled build.

    with baseline_tree("bfbcc37") as base:   # a detached `git worktree`, compiled
        ...                                   # removed afterwards, also on Ctrl-C
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ENV_VAR", "ROOT", "Tree", "TreeError", "baseline_tree", "build", "checked",
           "code_dir", "current_tree", "probe", "verify"]

ROOT = Path(__file__).resolve().parent.parent
# Set in every child's environment: benchmark scripts run as children put this tree
# (not their own checkout) first on sys.path.
ENV_VAR = "CONSENTWATCH_BENCH_CODE"

_PROBE = ("import json, streams, streams.engine.core as core\n"
          "print(json.dumps({'core': core.__file__, 'streams': streams.__file__}))\n")


class TreeError(Exception):
    """A tree that cannot be measured: not checked out, not built, not the one imported."""


@dataclass(frozen=True)
class Tree:
    path: Path
    label: str  # "current" or "baseline"
    commit: str  # short hash, "+dirty" when its tracked streams/ files differ from it

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.path)
        env[ENV_VAR] = str(self.path)
        return env

    def describe(self) -> str:
        return f"{self.label} {self.commit} ({self.path})"


def code_dir() -> Path:
    """The tree a benchmark script imports: the one it was told to run, else its own."""
    return Path(os.environ.get(ENV_VAR) or ROOT)


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise TreeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def _commit(path: Path) -> str:
    try:
        short = _git(path, "rev-parse", "--short", "HEAD")
        dirty = _git(path, "status", "--porcelain", "--untracked-files=no", "--", "streams")
    except (TreeError, OSError):
        return "unknown"
    return short + ("+dirty" if dirty else "")


def current_tree(path: Path | None = None, label: str = "current") -> Tree:
    """The checkout at `path` (default this one) as it is, named `label` in the tables
    ("baseline" for a checkout given to measure beside this one)."""
    path = (path or ROOT).resolve()
    if not (path / "streams" / "__init__.py").is_file():
        raise TreeError(f"{path} holds no streams package")
    return Tree(path, label, _commit(path))


def build(tree: Tree) -> None:
    """Compile the tree's hot path in place (its own streams.native, this interpreter)."""
    done = subprocess.run([sys.executable, "-m", "streams.native", "build"], cwd=tree.path,
                          env=tree.env(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TreeError(f"building {tree.describe()} failed:\n{done.stderr[-3000:]}")


@contextlib.contextmanager
def baseline_tree(ref: str, repo: Path = ROOT, compile_it: bool = True) -> Iterator[Tree]:
    """`ref` checked out in a temporary detached worktree (compiled unless told not to);
    the worktree is removed on the way out, whatever the way out."""
    commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    parent = Path(tempfile.mkdtemp(prefix="cw-bench-baseline-"))
    path = parent / "tree"
    try:
        _git(repo, "worktree", "add", "--detach", str(path), commit)
        tree = Tree(path, "baseline", commit[:7])
        if compile_it:
            print(f"building {tree.describe()} ...", file=sys.stderr, flush=True)
            build(tree)
        yield tree
    finally:
        with contextlib.suppress(TreeError, OSError):
            _git(repo, "worktree", "remove", "--force", str(path))
        shutil.rmtree(parent, ignore_errors=True)
        with contextlib.suppress(TreeError, OSError):
            _git(repo, "worktree", "prune")


def probe(tree: Tree) -> dict[str, str]:
    """Where a child given `tree` imports streams from, in both ways benchmark children
    start: a script (sys.path[0] is the script's own folder, as for the console script
    and the benchmark scripts) and `-m` (sys.path[0] is the working directory)."""
    with tempfile.TemporaryDirectory(prefix="cw-bench-probe-") as folder:
        script = Path(folder) / "probe.py"
        script.write_text(_PROBE, encoding="utf-8")
        found: dict[str, str] = {}
        for cmd in ([sys.executable, str(script)], [sys.executable, "-c", _PROBE]):
            done = subprocess.run(cmd, cwd=tree.path, env=tree.env(), capture_output=True,
                                  text=True, check=False, timeout=120)
            if done.returncode != 0:
                raise TreeError(f"{tree.describe()}: the probe failed:\n{done.stderr[-2000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            if found and result != found:
                raise TreeError(f"{tree.describe()}: a script imports {found['core']}, "
                                f"`-m` imports {result['core']}")
            found = result
    return found


def verify(tree: Tree, core_file: str, require_compiled: bool) -> bool:
    """Raise TreeError unless `core_file` (a child's streams.engine.core.__file__) is in
    the tree and, when required, the compiled module. True when compiled."""
    path = Path(core_file).resolve()
    if not path.is_relative_to(tree.path.resolve()):
        raise TreeError(f"{tree.describe()}: the child imported {path}, outside the tree")
    compiled = path.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    if require_compiled and not compiled:
        raise TreeError(f"{tree.describe()}: the child imported {path}, not the compiled "
                        f"build (run `python -m streams.native build` in the tree; "
                        f"CONSENTWATCH_NATIVE must not be off)")
    return compiled


def checked(tree: Tree, require_compiled: bool) -> dict[str, object]:
    """`probe` then `verify`: what the figures of `tree` say of their code."""
    core = probe(tree)["core"]
    compiled = verify(tree, core, require_compiled)
    print(f"code: {tree.describe()}, {'compiled' if compiled else 'sources'}",
          file=sys.stderr, flush=True)
    return {"commit": tree.commit, "path": str(tree.path), "core_module": core,
            "compiled": compiled}
