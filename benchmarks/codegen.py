"""The two `exec` code generators against plain closures, in the same run.

    .venv/bin/python benchmarks/codegen.py [--mypyc] [--repeat 7] [--number 20000]

`streams.model.events.fast_constructor` (a frozen slotted event built from its field
values) and `streams.serde.jsonl.json_form` (an event's JSON form, pseudonymised
fields transformed) generate their function's source and `exec` it; the closure
versions are in `benchmarks/codegen_closures.py`. Each is timed per event type (best
of `--repeat` runs of `--number` calls) and the ratio closure / exec printed: above
1.05, `exec` pays more than 5% and stays.

A function made by `exec` is interpreted wherever it is made, but a closure in a
module mypyc compiles (`streams/serde/jsonl.py` is one, `streams/native.py`) is
compiled with it: `--mypyc` compiles `codegen_closures.py` alone with mypyc (into a
temporary folder) and times that build of the closures.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent


def _closures(compiled: bool, folder: Path) -> ModuleType:
    if not compiled:
        sys.path.insert(0, str(HERE))
        return importlib.import_module("codegen_closures")
    shutil.copy(HERE / "codegen_closures.py", folder)
    subprocess.run([sys.executable, "-m", "mypyc", "codegen_closures.py"], cwd=folder,
                   check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "MYPYPATH": str(HERE.parent)})
    (folder / "codegen_closures.py").unlink()  # import the extension, not the source
    sys.path.insert(0, str(folder))
    module = importlib.import_module("codegen_closures")
    if not str(module.__file__).endswith((".so", ".pyd")):
        raise SystemExit(f"not compiled: {module.__file__}")
    return module


def _sample(cls: type[Any]) -> list[Any]:
    """Field values of the annotated types (a tuple of two keys for the arrays)."""
    plain = {"str": "user.contact.email", "int": 1_700_000_000_000, "bool": True}
    return [plain.get(str(field.type).removesuffix(" | None"), ("user.name", "user.email"))
            for field in fields(cls)]


def _best(call: Callable[[], Any], number: int, repeat: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mypyc", action="store_true", help="time the closures compiled")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=20_000)
    args = parser.parse_args()

    from streams.evidence.pseudonymise import HASHED_FIELDS
    from streams.model.events import EVENT_TYPES, fast_constructor
    from streams.serde.jsonl import json_form

    with tempfile.TemporaryDirectory() as folder:
        closures = _closures(args.mypyc, Path(folder))
        jsonl_file = Path(str(sys.modules["streams.serde.jsonl"].__file__)).name
        print(f"closures: {'compiled with mypyc' if args.mypyc else 'interpreted'}; "
              f"streams.serde.jsonl from {jsonl_file}")
        print(f"{'event':20} {'make exec':>10} {'closure':>9} {'ratio':>6}   "
              f"{'json_form exec':>14} {'closure':>9} {'ratio':>6}")
        totals = [0.0, 0.0, 0.0, 0.0]
        for cls in EVENT_TYPES.values():
            values = _sample(cls)
            by_exec, by_closure = fast_constructor(cls), closures.closure_constructor(cls)
            event = by_exec(*values)
            if by_closure(*values) != event:
                raise SystemExit(f"{cls.TYPE}: the closure constructor differs")
            hashed = HASHED_FIELDS[cls.TYPE]
            form_exec = json_form(cls, hashed)
            form_closure = closures.closure_json_form(cls, hashed)
            if form_exec(event, str.upper) != form_closure(event, str.upper):
                raise SystemExit(f"{cls.TYPE}: the closure json_form differs")
            times = [
                _best(lambda f=by_exec, v=values: f(*v), args.number, args.repeat),
                _best(lambda f=by_closure, v=values: f(*v), args.number, args.repeat),
                _best(lambda f=form_exec, e=event: f(e, str.upper), args.number, args.repeat),
                _best(lambda f=form_closure, e=event: f(e, str.upper), args.number, args.repeat),
            ]
            totals = [total + time for total, time in zip(totals, times, strict=True)]
            print(f"{cls.TYPE:20} {times[0] * 1e9:8.0f}ns {times[1] * 1e9:7.0f}ns "
                  f"{times[1] / times[0]:6.2f}   {times[2] * 1e9:12.0f}ns "
                  f"{times[3] * 1e9:7.0f}ns {times[3] / times[2]:6.2f}")
        print(f"{'all seven':20} {totals[0] * 1e9:8.0f}ns {totals[1] * 1e9:7.0f}ns "
              f"{totals[1] / totals[0]:6.2f}   {totals[2] * 1e9:12.0f}ns "
              f"{totals[3] * 1e9:7.0f}ns {totals[3] / totals[2]:6.2f}")
        print("ratio = closure / exec: above 1.05, exec pays more than 5%")


if __name__ == "__main__":
    main()
