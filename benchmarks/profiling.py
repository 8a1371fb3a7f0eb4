"""cProfile of the engine loop and of `replay`, to see where the time goes.

    .venv/bin/python benchmarks/profiling.py engine [--events N --subjects S --seed K]
        [--top 25] [--sort tottime] [--out FILE.prof]
    .venv/bin/python benchmarks/profiling.py replay-avro [...]
    .venv/bin/python benchmarks/profiling.py replay-jsonl [...]

Uses the cached mix files of benchmarks/foundation.py (generating them if missing).
`engine` loads the events first and profiles only `engine.process` + `flush`;
`replay-*` profiles the real CLI entry point in-process
(`consentwatch replay FILE --out /dev/null -q`). cProfile roughly doubles the run
time of such call-heavy code, so read the shares, not the absolute seconds.
(Not named profile.py: that would shadow the stdlib module cProfile imports.)
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("engine", "replay-avro", "replay-jsonl"))
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--out", type=Path, help="also save the raw profile here")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.subjects = 100_000, 10_000

    from foundation import _avro_available, _ensure_data

    jsonl, avro = _ensure_data(args.events, args.subjects, args.seed,
                               args.what == "replay-avro" and _avro_available())
    profiler = cProfile.Profile()
    if args.what == "engine":
        from streams.engine import DictStore, Engine, EngineParams
        from streams.model.findings import DeadLetter
        from streams.serde.jsonl import read_jsonl

        with open(jsonl, "rb") as fh:
            events = [it for _, it in read_jsonl(fh, str(jsonl)) if type(it) is not DeadLetter]
        engine = Engine(DictStore(), EngineParams())
        process = engine.process
        gc.collect()
        gc.disable()  # as `replay` runs the engine (and the foundation's engine child)
        profiler.enable()
        for event in events:
            process(event)
        engine.flush()
        profiler.disable()
    else:
        from streams.cli.app import main as cli_main

        path = avro if args.what == "replay-avro" else jsonl
        profiler.enable()
        code = cli_main(["replay", str(path), "--out", os.devnull, "-q"])
        profiler.disable()
        if code:
            print(f"replay exited {code}", file=sys.stderr)
    if args.out:
        profiler.dump_stats(str(args.out))
    stats = pstats.Stats(profiler)
    stats.strip_dirs().sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
