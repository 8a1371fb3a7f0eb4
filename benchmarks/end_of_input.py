"""The engine's end of input after a backlog: every trigger of the mix pending, then
`decide_pending` (what a worker's correlate partition does when its inputs end, having
read them one topic after another: nothing was decided on the way).

    .venv/bin/python benchmarks/end_of_input.py [--events 1000000] [--subjects 100000]
        [--seed 1] [--repeat 3] [--cpu 0] [--baseline-code DIR]

Each measurement is a fresh child pinned to one core (as foundation.py's), running one
tree's code: this checkout, and with --baseline-code another checkout (a compiled
`git worktree` of an older commit) measured in the same rounds, interleaved. The events
are loaded first (not timed); `process` of every event with the watermark held (an
engine whose watermark comes from outside, never moved) and `decide_pending` are timed
apart. The best of --repeat rounds is kept; the ratio is baseline / current seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import foundation  # noqa: E402
import trees  # noqa: E402


def child(path: str) -> dict[str, Any]:
    import gc
    import time

    import streams.engine.core
    from streams.engine import DictStore, Engine, EngineParams
    from streams.model.findings import DeadLetter
    from streams.serde.jsonl import read_jsonl

    with open(path, "rb") as fh:
        events = [item for _, item in read_jsonl(fh, path) if type(item) is not DeadLetter]
    gc.collect()
    gc.disable()  # as foundation.py's engine child by default
    engine = Engine(DictStore(), EngineParams(), external_watermark=True)
    process = engine.process
    started = time.perf_counter()
    for event in events:
        process(event)
    processed = time.perf_counter()
    pending = engine.pending()
    outputs = engine.decide_pending()
    ended = time.perf_counter()
    return {"events": len(events), "process_seconds": processed - started,
            "end_seconds": ended - processed, "pending": pending, "outputs": len(outputs),
            "pending_after": engine.pending(), "core_module": streams.engine.core.__file__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--baseline-code", type=Path, metavar="DIR")
    args = parser.parse_args(argv)
    try:
        measured = [trees.current_tree()]
        if args.baseline_code:
            measured.append(trees.current_tree(args.baseline_code, label="baseline"))
    except trees.TreeError as exc:
        raise SystemExit(str(exc)) from exc
    jsonl, _ = foundation._ensure_data(args.events, args.subjects, args.seed, False)
    # Pinned as foundation.py's children are; unpinned where taskset is missing.
    pin = ["taskset", "-c", str(args.cpu)] if shutil.which("taskset") else []
    best: dict[str, dict[str, Any]] = {}
    for round_no in range(args.repeat):
        for tree in measured:
            cmd = [*pin, sys.executable, str(Path(__file__).resolve()), "--_child", str(jsonl)]
            code, _, _, _, out, err = foundation._run(cmd, tree)
            if code != 0:
                raise SystemExit(f"{tree.describe()} failed ({code}):\n{err[-2000:]}")
            result = json.loads(out.strip().splitlines()[-1])
            try:
                trees.verify(tree, result["core_module"], require_compiled=False)
            except trees.TreeError as exc:
                raise SystemExit(str(exc)) from exc
            print(f"[{round_no + 1}/{args.repeat}] {tree.describe()}: process "
                  f"{result['process_seconds']:.2f} s, end of input {result['end_seconds']:.2f} s "
                  f"({result['pending']:,} pending, {result['outputs']:,} outputs, "
                  f"{result['pending_after']:,} left)", file=sys.stderr, flush=True)
            kept = best.get(tree.label)
            if kept is None or result["end_seconds"] < kept["end_seconds"]:
                best[tree.label] = result
    for label, result in best.items():
        per = result["end_seconds"] / max(result["outputs"], 1) * 1e6
        print(f"{label}: end of input {result['end_seconds']:.3f} s for {result['outputs']:,} "
              f"outputs ({per:.1f} us each); process with the watermark held "
              f"{result['process_seconds']:.3f} s")
    if "baseline" in best:
        ratio = best["baseline"]["end_seconds"] / best["current"]["end_seconds"]
        print(f"end of input: current is {ratio:.2f}x the baseline's speed")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_child":
        sys.stdout.write(json.dumps(child(sys.argv[2])) + "\n")
        raise SystemExit(0)
    raise SystemExit(main())
