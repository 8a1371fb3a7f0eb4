"""Throughput and memory of the foundation: the engine alone, and `replay` end to end.

    .venv/bin/python benchmarks/foundation.py [--events 1000000] [--subjects 100000]
        [--seed 1] [--quick] [--repeat 1] [--cpu 0] [--code DIR] [--json OUT]

Generates the event mix (benchmarks/mix.py) as JSON Lines and Avro if the cached
files for these parameters are missing (benchmarks/data/), then measures, each
in a fresh subprocess pinned to one core (`taskset -c CPU`, or
os.sched_setaffinity in the child), with that child's own peak RSS (ru_maxrss from
os.wait4, so one measurement never inherits another's peak):

* engine: the events are loaded into memory first (from the JSON Lines file, not
  timed); only the `engine.process` loop and the final `flush` over a DictStore
  are timed.
* replay_jsonl / replay_avro: the real CLI, `consentwatch replay FILE --out
  /dev/null -q`, timed by the wall clock around the subprocess (interpreter start,
  imports and all).
* replay_startup: the same CLI on an empty file: the fixed cost inside the above.
* baseline_jsonl: a plain loop, `orjson.loads` of every line of the same file.
* baseline_avro: a plain loop over `fastavro.reader` of the same file.
  (Baselines time the loop only, in a child pinned to the same core.)

The children run the code of one tree (--code, default the checkout this script is
in; benchmarks/trees.py): PYTHONPATH and the working directory are that tree's, and
the table names it and its commit.

Machines are noisy, so the ratios against the baselines measured in the same run
are the figures to compare across machines and runs. With --repeat R every
measurement is taken R times, interleaved; the best time is kept (the least
disturbed), and peak RSS is the maximum over all runs.

Targets (the issue, one core): engine >= 200,000 events/s, replay from Avro >=
100,000 events/s, peak RSS < 1 GiB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import trees  # noqa: E402

VENV_BIN = Path(sys.executable).parent
CLI = VENV_BIN / "consentwatch"

TARGET_ENGINE = 200_000
TARGET_REPLAY_AVRO = 100_000
TARGET_RSS_MIB = 1024

# -- children: each runs in its own process ---------------------------------------------


def _pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})


def _rss_now_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_engine(path: str, gc_mode: str) -> dict[str, Any]:
    import gc

    # The tree under test comes from PYTHONPATH (trees.Tree.env), never from this file's
    # own checkout.
    import streams.engine.core
    from streams.engine import DictStore, Engine, EngineParams
    from streams.model.findings import DeadLetter
    from streams.serde.jsonl import read_jsonl

    with open(path, "rb") as fh:
        events = [item for _, item in read_jsonl(fh, path) if type(item) is not DeadLetter]
    gc.collect()
    if gc_mode == "freeze":
        gc.freeze()
    elif gc_mode == "off":
        gc.disable()
    loaded_rss = _rss_now_mib()
    engine = Engine(DictStore(), EngineParams())
    process = engine.process
    outputs = 0
    cpu = time.process_time()
    started = time.perf_counter()
    for event in events:
        out = process(event)
        if out:
            outputs += len(out)
    outputs += len(engine.flush())
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    return {"events": len(events), "seconds": seconds, "cpu_seconds": cpu, "outputs": outputs,
            "duplicates": engine.stats.duplicates, "late": engine.stats.late,
            "rss_after_load_mib": loaded_rss, "core_module": streams.engine.core.__file__}


def child_baseline_jsonl(path: str) -> dict[str, Any]:
    import orjson

    loads = orjson.loads
    count = 0
    cpu = time.process_time()
    started = time.perf_counter()
    with open(path, "rb") as fh:
        for line in fh:
            loads(line)
            count += 1
    return {"events": count, "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu}


def child_baseline_avro(path: str) -> dict[str, Any]:
    import fastavro

    count = 0
    cpu = time.process_time()
    started = time.perf_counter()
    with open(path, "rb") as fh:
        for _ in fastavro.reader(fh):
            count += 1
    return {"events": count, "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu}


def _child_main(argv: list[str]) -> int:
    kind, path, cpu, gc_mode = argv[0], argv[1], argv[2], argv[3]
    _pin(int(cpu) if cpu != "-" else None)
    if kind == "engine":
        result = child_engine(path, gc_mode)
    elif kind == "baseline_jsonl":
        result = child_baseline_jsonl(path)
    elif kind == "baseline_avro":
        result = child_baseline_avro(path)
    else:
        raise SystemExit(f"unknown child {kind}")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


# -- the parent ------------------------------------------------------------------------


def _run(cmd: list[str], tree: trees.Tree | None = None
         ) -> tuple[int, float, float, float, str, str]:
    """Run cmd on `tree`'s code (default: this checkout); return (exit status, wall s,
    CPU s, peak RSS MiB of the child, stdout, stderr)."""
    tree = tree or trees.current_tree()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                cwd=tree.path, env=tree.env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen never waits again
        out.seek(0)
        err.seek(0)
        return (proc.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                out.read().decode(errors="replace"), err.read().decode(errors="replace"))


class Runner:
    """Runs the children on one tree's code (`tree`, default this checkout)."""

    def __init__(self, cpu: int | None, gc_mode: str, tree: trees.Tree | None = None,
                 require_compiled: bool = False) -> None:
        self.cpu = cpu
        self.gc_mode = gc_mode
        self.tree = tree or trees.current_tree()
        self.require_compiled = require_compiled
        self.taskset = shutil.which("taskset") if cpu is not None else None

    def _prefix(self) -> list[str]:
        return ["taskset", "-c", str(self.cpu)] if self.taskset else []

    def child(self, kind: str, path: Path) -> dict[str, Any]:
        cmd = [*self._prefix(), sys.executable, str(Path(__file__).resolve()), "--_child",
               kind, str(path), str(self.cpu) if self.cpu is not None and not self.taskset
               else "-", self.gc_mode]
        code, wall, _, rss, out, err = _run(cmd, self.tree)
        if code != 0:
            raise SystemExit(f"{kind} failed ({code}):\n{err}")
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        if "core_module" in result:  # the child says which code it ran: refuse another
            trees.verify(self.tree, result["core_module"], self.require_compiled)
        result.update(wall_seconds=wall, peak_rss_mib=rss)
        return result

    def replay(self, path: Path, expected: int) -> dict[str, Any]:
        cmd = [*self._prefix(), str(CLI), "replay", str(path), "--out", os.devnull, "-q"]
        code, wall, cpu, rss, _, err = _run(cmd, self.tree)
        if code != 0:
            raise SystemExit(f"replay of {path} failed ({code}):\n{err[-2000:]}")
        return {"events": expected, "seconds": wall, "cpu_seconds": cpu, "wall_seconds": wall,
                "peak_rss_mib": rss}


def _ensure_data(events: int, subjects: int, seed: int, want_avro: bool) -> tuple[Path, Path]:
    sys.path.insert(0, str(HERE))
    import mix

    jsonl, avro = mix.data_paths(events, subjects, seed)
    need_jsonl = not jsonl.exists()
    need_avro = want_avro and not avro.exists()
    if need_jsonl or need_avro:
        print(f"generating {events} events over {subjects} subjects (seed {seed}) ...",
              file=sys.stderr)
        started = time.perf_counter()
        mix.write_files(events, subjects, seed, jsonl if need_jsonl else None,
                        avro if need_avro else None)
        print(f"  done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return jsonl, avro


def _avro_available() -> bool:
    sys.path.insert(0, str(ROOT))
    try:
        from streams.serde.avro import read_event_container, write_event_container  # noqa: F401
    except ImportError:
        return False
    return True


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The least disturbed run: the shortest wall time (and, apart, the least CPU time)."""
    best = dict(min(runs, key=lambda r: r["seconds"]))
    best["cpu_seconds"] = min(r["cpu_seconds"] for r in runs)
    best["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
    best["runs_seconds"] = [round(r["seconds"], 3) for r in runs]
    return best


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_child":
        return _child_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="100,000 events over 10,000 subjects")
    parser.add_argument("--repeat", type=int, default=1,
                        help="take each measurement this many times, keep the best")
    parser.add_argument("--cpu", type=int, default=0, help="the core to pin children to")
    parser.add_argument("--no-pin", action="store_true", help="do not pin children")
    parser.add_argument("--engine-gc", choices=("on", "freeze", "off"), default="off",
                        help="engine child: after loading the events, disable the garbage "
                             "collector (default: as `replay` runs the engine), gc.freeze() "
                             "them, or leave it on")
    parser.add_argument("--code", type=Path, metavar="DIR",
                        help="the source tree the children run (default: this checkout)")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.subjects = 100_000, 10_000
    try:
        tree = trees.current_tree(args.code)
        code = trees.checked(tree, require_compiled=False)
    except trees.TreeError as exc:
        raise SystemExit(str(exc)) from exc

    avro_ok = _avro_available()
    if not avro_ok:
        print("streams.serde.avro is not available: skipping the Avro measurements",
              file=sys.stderr)
    jsonl, avro = _ensure_data(args.events, args.subjects, args.seed, avro_ok)
    with open(jsonl, "rb") as fh:
        n_records = sum(1 for _ in fh)
    empty = Path(tempfile.mkdtemp()) / "empty.jsonl"
    empty.write_bytes(b"")

    runner = Runner(None if args.no_pin else args.cpu, args.engine_gc, tree)
    plan: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("engine", lambda: runner.child("engine", jsonl)),
        ("baseline_jsonl", lambda: runner.child("baseline_jsonl", jsonl)),
        ("replay_jsonl", lambda: runner.replay(jsonl, n_records)),
        ("replay_startup", lambda: runner.replay(empty, 0)),
    ]
    if avro_ok:
        plan += [
            ("baseline_avro", lambda: runner.child("baseline_avro", avro)),
            ("replay_avro", lambda: runner.replay(avro, n_records)),
        ]
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {}
    for round_no in range(args.repeat):
        for name, measure in plan:
            print(f"[{round_no + 1}/{args.repeat}] {name} ...", file=sys.stderr, flush=True)
            runs.setdefault(name, []).append(measure())
    load_after = os.getloadavg()
    empty.unlink()
    empty.parent.rmdir()
    best = {name: _best(r) for name, r in runs.items()}
    figures = _figures(args, best, n_records, jsonl, avro if avro_ok else None)
    figures["code"] = code
    figures["machine"]["load_average_1m_before_after"] = [round(load_before[0], 2),
                                                          round(load_after[0], 2)]
    _print_table(figures)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _rate(best: dict[str, Any], name: str, clock: str = "seconds") -> float | None:
    run = best.get(name)
    if not run or not run["events"] or run[clock] <= 0:
        return None
    return float(run["events"] / run[clock])


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a and b else None


def _round(value: float | None, digits: int | None = None) -> float | None:
    return None if value is None else round(value, digits)


# Each measurement: (name in figures, key in best, baseline it is compared with)
_MEASURES = (
    ("engine", "engine", "baseline_jsonl"),
    ("baseline_jsonl_parse", "baseline_jsonl", "baseline_jsonl"),
    ("replay_jsonl", "replay_jsonl", "baseline_jsonl"),
    ("baseline_avro_read", "baseline_avro", "baseline_avro"),
    ("replay_avro", "replay_avro", "baseline_avro"),
)


def _figures(args: argparse.Namespace, best: dict[str, Any], n_records: int, jsonl: Path,
             avro: Path | None) -> dict[str, Any]:
    peak = max(r["peak_rss_mib"] for n, r in best.items() if n != "replay_startup")
    figures: dict[str, Any] = {
        "params": {"events": args.events, "subjects": args.subjects, "seed": args.seed,
                   "records": n_records, "repeat": args.repeat,
                   "pinned_cpu": None if args.no_pin else args.cpu,
                   "engine_gc": args.engine_gc,
                   "jsonl_file": str(jsonl), "jsonl_mib": round(jsonl.stat().st_size / 2**20, 1),
                   "avro_file": str(avro) if avro else None,
                   "avro_mib": round(avro.stat().st_size / 2**20, 1) if avro else None},
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "processor": platform.processor()},
    }
    for name, key, _ in _MEASURES:
        run = best.get(key)
        figures[f"{name}_events_per_s"] = _round(_rate(best, key))
        figures[f"{name}_events_per_cpu_s"] = _round(_rate(best, key, "cpu_seconds"))
        figures[f"{name}_seconds"] = _round(run["seconds"], 3) if run else None
        figures[f"{name}_cpu_seconds"] = _round(run["cpu_seconds"], 3) if run else None
        figures[f"{name}_peak_rss_mib"] = _round(run["peak_rss_mib"], 1) if run else None
    engine = best["engine"]
    figures.update(
        engine_rss_after_load_mib=round(engine["rss_after_load_mib"], 1),
        engine_outputs=engine["outputs"],
        engine_duplicates=engine["duplicates"],
        engine_late=engine["late"],
        replay_startup_seconds=round(best["replay_startup"]["seconds"], 3),
        peak_rss_mib=round(peak, 1),
    )
    bj, ba = _rate(best, "baseline_jsonl"), _rate(best, "baseline_avro")
    bj_cpu, ba_cpu = (_rate(best, "baseline_jsonl", "cpu_seconds"),
                      _rate(best, "baseline_avro", "cpu_seconds"))
    engine_rate, ra, rj = _rate(best, "engine"), _rate(best, "replay_avro"), _rate(best,
                                                                                  "replay_jsonl")
    figures["ratios"] = {
        "replay_jsonl_vs_baseline_jsonl": _ratio(rj, bj),
        "replay_avro_vs_baseline_avro": _ratio(ra, ba),
        "engine_vs_baseline_jsonl": _ratio(engine_rate, bj),
        "engine_vs_baseline_avro": _ratio(engine_rate, ba),
    }
    figures["ratios_cpu"] = {
        "replay_jsonl_vs_baseline_jsonl": _ratio(_rate(best, "replay_jsonl", "cpu_seconds"),
                                                 bj_cpu),
        "replay_avro_vs_baseline_avro": _ratio(_rate(best, "replay_avro", "cpu_seconds"),
                                               ba_cpu),
        "engine_vs_baseline_jsonl": _ratio(_rate(best, "engine", "cpu_seconds"), bj_cpu),
        "engine_vs_baseline_avro": _ratio(_rate(best, "engine", "cpu_seconds"), ba_cpu),
    }
    figures["us_per_event_over_baseline"] = {
        "replay_jsonl": round(1e6 / rj - 1e6 / bj, 2) if rj and bj else None,
        "replay_avro": round(1e6 / ra - 1e6 / ba, 2) if ra and ba else None,
    }
    figures["runs_seconds"] = {name: r["runs_seconds"] for name, r in best.items()}
    figures["targets"] = {
        "engine_events_per_s": TARGET_ENGINE,
        "replay_avro_events_per_s": TARGET_REPLAY_AVRO,
        "peak_rss_mib_below": TARGET_RSS_MIB,
    }
    figures["targets_met"] = {
        "engine": bool(engine_rate and engine_rate >= TARGET_ENGINE),
        "replay_avro": bool(ra and ra >= TARGET_REPLAY_AVRO),
        "peak_rss": peak < TARGET_RSS_MIB,
    }
    return figures


def _print_table(figures: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    params = figures["params"]
    machine = figures["machine"]
    met = figures["targets_met"]
    table = Table(title=(f"consentwatch foundation: {params['records']:,} records over "
                         f"{params['subjects']:,} subjects, pinned to cpu "
                         f"{params['pinned_cpu']} of {machine['cpu_count']}, load "
                         f"{machine.get('load_average_1m_before_after')}"))
    for column in ("measurement", "events/s", "seconds", "events/CPU-s", "peak RSS MiB",
                   "vs baseline (wall | CPU)", "target"):
        table.add_column(column, justify="left" if column == "measurement" else "right")

    def verdict(ok: bool) -> str:
        return "[green]met[/]" if ok else "[red]MISSED[/]"

    labels = {
        "engine": "engine alone (process+flush)",
        "baseline_jsonl_parse": "baseline: orjson.loads per line",
        "replay_jsonl": "replay CLI from JSON Lines",
        "baseline_avro_read": "baseline: fastavro.reader",
        "replay_avro": "replay CLI from Avro",
    }
    targets = {
        "engine": f">= {TARGET_ENGINE:,}: {verdict(met['engine'])}",
        "replay_avro": f">= {TARGET_REPLAY_AVRO:,}: {verdict(met['replay_avro'])}",
    }
    for name, _, base in _MEASURES:
        rate = figures[f"{name}_events_per_s"]
        if rate is None:
            table.add_row(labels[name], "n/a", "", "", "", "", targets.get(name, ""))
            continue
        base_name = {"baseline_jsonl": "baseline_jsonl_parse",
                     "baseline_avro": "baseline_avro_read"}[base]
        b, b_cpu = figures[f"{base_name}_events_per_s"], figures[f"{base_name}_events_per_cpu_s"]
        vs = (f"{rate / b:.3f}x | {figures[f'{name}_events_per_cpu_s'] / b_cpu:.3f}x"
              if b and b_cpu else "")
        table.add_row(labels[name], f"{rate:,.0f}", f"{figures[f'{name}_seconds']:.2f}",
                      f"{figures[f'{name}_events_per_cpu_s']:,.0f}",
                      f"{figures[f'{name}_peak_rss_mib']:.0f}",
                      vs + (" (jsonl)" if name == "engine" else ""), targets.get(name, ""))
    table.add_row("replay CLI on an empty file", "", f"{figures['replay_startup_seconds']:.2f}",
                  "", "", "", "")
    table.add_row("peak RSS (max over runs)", "", "", "", f"{figures['peak_rss_mib']:.0f}", "",
                  f"< {TARGET_RSS_MIB:,}: {verdict(met['peak_rss'])}")
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    code = figures.get("code")
    if code:
        console.print(f"code: {code['commit']} ({code['path']}), "
                      f"{'compiled' if code['compiled'] else 'sources'}")
    console.print(f"engine: RSS after loading the events, before the loop "
                  f"{figures['engine_rss_after_load_mib']:.0f} MiB; findings+amendments "
                  f"{figures['engine_outputs']:,}; duplicates {figures['engine_duplicates']:,}; "
                  f"late {figures['engine_late']:,}. Ratio vs engine over Avro read: "
                  f"{figures['ratios']['engine_vs_baseline_avro']}")


if __name__ == "__main__":
    sys.exit(main())
