"""The benchmark suite in one command: one table, the same figures as JSON.

    .venv/bin/python benchmarks/run.py [--quick] [--json OUT] [--broker HOST:PORT]
        [--cpu 0] [--partitions 4] [--skip foundation,pipeline,latency,scaling]
        [--code DIR] [--baseline REF] [--repeat N] [--group-start-delay-ms MS]

Measures, on the benchmark mix (benchmarks/mix.py: seeded, with a chosen number of
subjects, cached under benchmarks/data/):

* foundation (benchmarks/foundation.py's children, pinned to one core): the engine
  alone, `replay` from JSON Lines and from Avro, each beside its plain-parse
  baseline (orjson per line, fastavro.reader), and peak RSS;
* pipeline (benchmarks/pipeline.py, on a real broker started with
  deploy/kafka/kafka.sh unless --broker): one worker and two workers of one
  consumer group, each from its start to the last finding, beside a plain aiokafka
  consumer (read + decode) over the same topics in the same run, with the ratio;
  the worker's findings are checked against `replay`;
* latency: a fresh pipeline fed live at half the one-worker rate; p50/p99 of
  (finding produced - trigger appended) for the rules about the past;
* scaling: `replay`-style runs (stream-read JSON Lines, engine, flush) with the
  state on disk (the worker's TableStore over RocksDB via rocksdict, its 200,000-object
  cache) for 10,000, 100,000 and 1,000,000 subjects, same number of events:
  events/s and peak RSS, and the 1,000,000 / 10,000 throughput ratio (target >= 0.7).

  Beside them, on the topics of the one-worker run: a plain Faust agent that only
  iterates, and one that makes a table update per record (RocksDB, changelog), over
  the first --baseline-events records. The JSON's top level of `pipeline` carries
  worker_events_per_s, workers_2_events_per_s (combined), workers_2_vs_1 (the rates
  once the group formed, `pipeline._group_formed`), workers_2_vs_1_end_to_end,
  aiokafka_events_per_s, faust_agent_events_per_s, faust_table_events_per_s and
  worker_vs_faust_table; `catch_up`: a cold worker on a fresh copy of the backlog with no
  end of input, the time until every decision the events' own watermark allows is out,
  beside the limit 1.2 x events / its steady rate + 60 s;

The code measured is the tree this script is in (--code DIR for another): every child
runs it (PYTHONPATH and working directory; benchmarks/trees.py), and the table names
its commit. --baseline REF also measures REF, checked out in a temporary detached git
worktree and compiled there (`python -m streams.native build`; the worktree is removed
afterwards): the engine alone, `replay` from JSON Lines and from Avro and the one-worker
pipeline, on the same input, baseline and current in turn, --repeat rounds (default 3
with --baseline, else 1; the best of each is kept), and a second table gives both
figures and current/baseline, within 5% when >= 0.95. Both trees must be the compiled
build: a child reports the streams.engine.core it imported, and a figure from any other
code is refused.

--quick: 100,000 events for foundation and scaling, 20,000 through the pipeline and
a live minute at half its rate for latency: a few minutes. The full run: 1,000,000
events everywhere (100,000 subjects), the Faust agents on 200,000.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
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

# This checkout, or in a child told to run another tree, that tree (its PYTHONPATH).
sys.path.insert(1, str(trees.code_dir()))

import foundation  # noqa: E402
import mix  # noqa: E402
import pipeline  # noqa: E402

SUBJECT_COUNTS = (10_000, 100_000, 1_000_000)
TARGET_SCALING_RATIO = 0.7
SECTIONS = ("foundation", "pipeline", "latency", "scaling")
# --baseline: current/baseline at least this is "within 5%"
WITHIN = 0.95
# (row, section, figure of each tree compared)
COMPARED = (
    ("engine alone (1 core)", "foundation", "engine"),
    ("replay from JSON Lines", "foundation", "replay_jsonl"),
    ("replay from Avro", "foundation", "replay_avro"),
    ("pipeline, 1 worker", "pipeline", "worker"),
)


# -- scaling: a child process per subject count ---------------------------------------------


class _RocksTable:
    """The little of a Faust table that the worker's TableStore uses (`table.data`, a store
    with one RocksDB per partition and the key of its persisted offset), over one rocksdict
    database."""

    offset_key = b"__faust\0offset__"

    def __init__(self, path: str) -> None:
        from rocksdict import Rdict

        self.db = Rdict(path)
        self.data = self

    def _db_for_partition(self, partition: int) -> Any:
        return self.db


# The worker writes a correlate partition's changed state at most every 5 s
# (state_flush_interval_s): at its 20,000 events/s over 4 partitions, once per
# 25,000 events of a partition. This child is one partition.
BATCH = 25_000


def child_scaling(path: str, state_dir: str) -> dict[str, Any]:
    """Stream the file through one engine whose state lives in RocksDB."""
    import gc
    import resource

    from streams.engine import Engine, EngineParams
    from streams.model.findings import DeadLetter
    from streams.serde.jsonl import read_jsonl
    from streams.state.faust_store import TableStore

    table = _RocksTable(state_dir)
    store = TableStore(table, 0)
    engine = Engine(store, EngineParams())
    process, flush = engine.process, store.flush
    gc.disable()
    events = outputs = 0
    started, cpu = time.perf_counter(), time.process_time()
    with open(path, "rb") as fh:
        for _, item in read_jsonl(fh, path):
            if type(item) is DeadLetter:
                continue
            events += 1
            outputs += len(process(item))  # type: ignore[arg-type]
            if events % BATCH == 0:
                flush()
    outputs += len(engine.flush())
    flush()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    table.db.close()
    return {"events": events, "seconds": seconds, "cpu_seconds": cpu, "outputs": outputs,
            "peak_rss_mib": _own_peak_rss_mib(resource.getrusage(resource.RUSAGE_SELF))}


def _own_peak_rss_mib(usage: Any) -> float:
    """This process's own peak RSS since it was started (VmHWM). Not `ru_maxrss`: Linux
    carries the parent's peak over fork and exec into it, and this suite's parent holds a
    million events by the time the scaling children start (each reported the parent's
    2 GiB)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float(usage.ru_maxrss) / 1024


def measure_scaling(events: int, seed: int, cpu: int | None, work: Path,
                    tree: trees.Tree) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for subjects in SUBJECT_COUNTS:
        jsonl, _ = foundation._ensure_data(events, subjects, seed, want_avro=False)
        state = work / f"state-{subjects}"
        prefix = ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") \
            else []
        print(f"scaling: {subjects:,} subjects ...", file=sys.stderr, flush=True)
        code, wall, _, _, out, err = foundation._run(
            [*prefix, sys.executable, str(Path(__file__).resolve()), "--_child-scaling",
             str(jsonl), str(state)], tree)
        if code != 0:
            raise SystemExit(f"scaling child failed ({code}):\n{err[-2000:]}")
        run = json.loads(out.strip().splitlines()[-1])
        run.update(subjects=subjects, wall_seconds=wall,
                   events_per_s=run["events"] / run["seconds"],
                   state_on_disk_mib=_du_mib(state))
        results[str(subjects)] = run
        shutil.rmtree(state, ignore_errors=True)
    low, high = results[str(SUBJECT_COUNTS[0])], results[str(SUBJECT_COUNTS[-1])]
    ratio = high["events_per_s"] / low["events_per_s"]
    return {"events": events, "runs": results, "ratio_1m_vs_10k": ratio,
            "target_ratio": TARGET_SCALING_RATIO, "target_met": ratio >= TARGET_SCALING_RATIO}


def _du_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


# -- foundation ------------------------------------------------------------------------------


def measure_foundation(events: int, subjects: int, seed: int, cpu: int | None,
                       code: list[trees.Tree], repeat: int, require_compiled: bool
                       ) -> dict[str, Any]:
    """The figures of the last tree of `code` (the current one); with a baseline tree
    before it, the engine and the two replays of both, in turn, `repeat` rounds."""
    jsonl, avro = foundation._ensure_data(events, subjects, seed, want_avro=True)
    with open(jsonl, "rb") as fh:
        records = sum(1 for _ in fh)
    current = code[-1]
    runners = {tree.label: foundation.Runner(cpu, "off", tree, require_compiled)
               for tree in code}

    def step(tree: trees.Tree, name: str) -> Callable[[], dict[str, Any]]:
        runner = runners[tree.label]
        if name == "engine":
            return lambda: runner.child("engine", jsonl)
        return lambda: runner.replay(jsonl if name == "replay_jsonl" else avro, records)

    plain = runners[current.label]  # the plain-parse baselines run no code of ours
    plan = [(current, "baseline_jsonl", lambda: plain.child("baseline_jsonl", jsonl)),
            (current, "baseline_avro", lambda: plain.child("baseline_avro", avro))]
    plan += [(tree, name, step(tree, name))
             for name in ("engine", "replay_jsonl", "replay_avro") for tree in code]
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for round_no in range(repeat):
        for tree, name, measure in plan:
            print(f"foundation [{round_no + 1}/{repeat}]: {name}, {tree.label} {tree.commit} "
                  f"...", file=sys.stderr, flush=True)
            runs.setdefault((tree.label, name), []).append(measure())
    best = {key: foundation._best(r) for key, r in runs.items()}

    def rate(label: str, name: str, clock: str = "seconds") -> float:
        run = best[(label, name)]
        return float(run["events"] / run[clock])

    by_tree = {tree.label: {
        "commit": tree.commit, "path": str(tree.path),
        **{f"{name}_events_per_s": rate(tree.label, name)
           for name in ("engine", "replay_jsonl", "replay_avro")},
        **{f"{name}_events_per_cpu_s": rate(tree.label, name, "cpu_seconds")
           for name in ("engine", "replay_jsonl", "replay_avro")},
        "runs_seconds": {name: best[(tree.label, name)]["runs_seconds"]
                         for name in ("engine", "replay_jsonl", "replay_avro")},
        "core_module": best[(tree.label, "engine")]["core_module"],
    } for tree in code}
    cur = current.label
    return {
        "events": records, "subjects": subjects, "repeat": repeat,
        "engine_events_per_s": rate(cur, "engine"),
        "replay_jsonl_events_per_s": rate(cur, "replay_jsonl"),
        "replay_avro_events_per_s": rate(cur, "replay_avro"),
        "baseline_jsonl_events_per_s": rate(cur, "baseline_jsonl"),
        "baseline_avro_events_per_s": rate(cur, "baseline_avro"),
        "replay_jsonl_vs_baseline": rate(cur, "replay_jsonl") / rate(cur, "baseline_jsonl"),
        "replay_avro_vs_baseline": rate(cur, "replay_avro") / rate(cur, "baseline_avro"),
        "peak_rss_mib": {name: best[(cur, name)]["peak_rss_mib"]
                         for name in ("engine", "baseline_jsonl", "replay_jsonl",
                                      "baseline_avro", "replay_avro")},
        "by_tree": by_tree,
    }


# -- pipeline and latency --------------------------------------------------------------------


def measure_pipeline(broker: str, events: int, subjects: int, seed: int, partitions: int,
                     sections: set[str], work: Path, baseline_events: int,
                     code: list[trees.Tree], repeat: int) -> dict[str, Any]:
    """The figures of the last tree of `code` (the current one); with a baseline tree
    before it, the one-worker run of both, in turn, `repeat` rounds, each on fresh topics
    holding the same events."""
    from streams.kafka.kafka_io import create_topics, produce_events
    from streams.kafka.topics import TopicNames

    stream = pipeline._events(events, subjects, seed)
    expected = pipeline._expected(stream)
    decided = pipeline._decided_by_the_input(stream)
    last = max(e.occurred_at for e in stream)
    results: dict[str, Any] = {"events": events, "subjects": subjects, "partitions": partitions}
    current = code[-1]

    def topics(tag: str) -> str:
        prefix = f"bench{int(time.time())}{tag}"
        names = TopicNames(prefix)
        asyncio.run(create_topics(pipeline._connection(broker), names, partitions, 1))
        asyncio.run(produce_events(pipeline._connection(broker), names, stream))
        return prefix

    worker_rate = None
    if "pipeline" in sections:
        one: dict[str, list[dict[str, Any]]] = {tree.label: [] for tree in code}
        for round_no in range(repeat):
            for tree in code:
                prefix = topics(f"w1{tree.label[0]}{round_no}")
                if round_no == 0 and tree is code[0]:
                    first = prefix
                    print("pipeline: plain aiokafka consumer ...", file=sys.stderr, flush=True)
                    baseline = pipeline.measure_aiokafka(broker, prefix, events)
                print(f"pipeline [{round_no + 1}/{repeat}]: 1 worker, {tree.label} "
                      f"{tree.commit} ...", file=sys.stderr, flush=True)
                one[tree.label].append(pipeline.measure_worker(
                    broker, prefix, events, expected, last, partitions, work, workers=1,
                    tree=tree))
        results["by_tree"] = {tree.label: {
            "commit": tree.commit, "path": str(tree.path),
            "worker_events_per_s": max(r["events_per_s"] for r in one[tree.label]),
            "runs_events_per_s": [round(r["events_per_s"]) for r in one[tree.label]],
            "findings_match_replay": all(r["findings_match_replay"] for r in one[tree.label]),
        } for tree in code}
        run = _beside(max(one[current.label], key=lambda r: r["events_per_s"]), baseline)
        run["findings_match_replay"] = results["by_tree"][current.label][
            "findings_match_replay"]
        results["workers_1"] = run
        # Faust's own per-record path on the same topics, the first `baseline_events`
        # records (its rate is steady; a table update per record would take minutes for
        # a million).
        results.update(_faust_agents(broker, first, min(events, baseline_events), work,
                                     partitions))
        prefix = topics("w2")
        print("pipeline: plain aiokafka consumer, 2 workers ...", file=sys.stderr, flush=True)
        baseline = pipeline.measure_aiokafka(broker, prefix, events)
        print(f"pipeline: 2 workers, {current.label} {current.commit} ...", file=sys.stderr,
              flush=True)
        results["workers_2"] = _beside(pipeline.measure_worker(
            broker, prefix, events, expected, last, partitions, work, workers=2,
            tree=current), baseline)
        print(f"pipeline: catch-up, 1 worker, {current.label} {current.commit} ...",
              file=sys.stderr, flush=True)
        results["catch_up"] = pipeline.measure_worker(
            broker, topics("cu"), events, expected, last, partitions, work, workers=1,
            tree=current, decided=decided)
        _pipeline_figures(results, one[current.label])
        worker_rate = results["worker_events_per_s"]
    if "latency" in sections:
        rate = (worker_rate or 1_000.0) / 2
        # A live feed of about a minute (pipeline.LATENCY_FEED_S): the last triggers
        # of a finite feed wait for the idle timeout and are left out of the figures.
        feed = pipeline.latency_events(rate, subjects, seed + 1)
        print(f"latency: {len(feed):,} events at {rate:,.0f} events/s ...",
              file=sys.stderr, flush=True)
        results["latency"] = pipeline.measure_latency(
            broker, f"bench{int(time.time())}lat", feed, rate, partitions, work, current)
    return results


def _pipeline_figures(results: dict[str, Any], one: list[dict[str, Any]]) -> None:
    """The figures the speed issue names, all from this run, into `results` (`one`: the
    current tree's one-worker runs)."""
    worker_rate = results["workers_1"]["events_per_s"]
    results["worker_events_per_s"] = worker_rate
    results["workers_2_events_per_s"] = results["workers_2"]["events_per_s"]  # combined
    # Throughput once the group has formed (`pipeline._group_formed`): two workers wait
    # for each other's join, and the broker's group start delay, before either reads a
    # record; the end-to-end ratio beside it counts those seconds too.
    one_processing = max(r["processing_events_per_s"] for r in one)
    results["workers_1_processing_events_per_s"] = one_processing
    results["workers_2_processing_events_per_s"] = results["workers_2"][
        "processing_events_per_s"]
    results["workers_2_vs_1"] = results["workers_2_processing_events_per_s"] / one_processing
    results["workers_2_vs_1_end_to_end"] = results["workers_2_events_per_s"] / worker_rate
    results["aiokafka_events_per_s"] = results["workers_1"]["baseline_events_per_s"]
    results["faust_agent_events_per_s"] = results["faust_agent"]["events_per_s"]
    results["faust_table_events_per_s"] = results["faust_table_agent"]["events_per_s"]
    results["worker_vs_faust_table"] = worker_rate / results["faust_table_events_per_s"]
    results["worker_vs_faust_table_processing"] = (
        one_processing / results["faust_table_agent"]["processing_events_per_s"])


def _faust_agents(broker: str, prefix: str, n: int, work: Path, partitions: int
                  ) -> dict[str, Any]:
    print(f"pipeline: Faust agents, {n:,} events ...", file=sys.stderr, flush=True)
    return {"faust_agent": pipeline.measure_faust_agent(broker, prefix, n, work, partitions),
            "faust_table_agent": pipeline.measure_faust_agent(broker, prefix, n, work,
                                                              partitions, table=True)}


def _beside(run: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """A worker run with the plain consumer's rate on the same topics, and the ratios:
    the worker's rate once its group formed (the plain consumer has no group: it is
    assigned its partitions), and from its start."""
    return {**run, "baseline_events_per_s": baseline["events_per_s"],
            "vs_baseline": run["processing_events_per_s"] / baseline["events_per_s"],
            "vs_baseline_end_to_end": run["events_per_s"] / baseline["events_per_s"]}


# -- the run ---------------------------------------------------------------------------------


def compare(baseline: float, current: float) -> dict[str, Any]:
    """One row of the comparison: both rates, current/baseline, and the verdict."""
    ratio = current / baseline
    return {"baseline_events_per_s": baseline, "current_events_per_s": current,
            "ratio": round(ratio, 4), "within_5pct": ratio >= WITHIN}


def comparison(figures: dict[str, Any], code: list[trees.Tree]) -> dict[str, Any]:
    """current/baseline for each figure both trees have (a failed section has none)."""
    rows: dict[str, Any] = {}
    for label, section, name in COMPARED:
        by_tree = figures.get(section, {}).get("by_tree", {})
        if "baseline" in by_tree and "current" in by_tree:
            base, cur = by_tree["baseline"], by_tree["current"]
            row = compare(base[f"{name}_events_per_s"], cur[f"{name}_events_per_s"])
            if f"{name}_events_per_cpu_s" in cur:
                row["ratio_cpu"] = round(cur[f"{name}_events_per_cpu_s"]
                                         / base[f"{name}_events_per_cpu_s"], 4)
            rows[label] = row
    return {"trees": {t.label: {"commit": t.commit, "path": str(t.path)} for t in code},
            "within_threshold": WITHIN, "rows": rows,
            "all_within_5pct": bool(rows) and all(r["within_5pct"] for r in rows.values())}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # past the sections' error handling, through every cleanup


def _delay_ms(text: str) -> int:
    """A Kafka group start delay: 0 to 2147483647 ms (an int in the broker's config)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 2**31 - 1:
        raise argparse.ArgumentTypeError(f"wants 0 to 2147483647 ms, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_child-scaling":
        sys.stdout.write(json.dumps(child_scaling(argv[1], argv[2])) + "\n")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run of a few minutes")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--broker", help="use this Kafka broker instead of starting one")
    parser.add_argument("--group-start-delay-ms", type=_delay_ms,
                        default=pipeline.KAFKA_GROUP_START_DELAY_MS, metavar="MS",
                        help="the started broker's wait before a new consumer group's first "
                             "generation (default Kafka's own, 3000; the tests' broker: 0); "
                             "see benchmarks/README.md")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cpu", type=int, default=0, help="pin single-core children here")
    parser.add_argument("--baseline-events", type=int, default=200_000,
                        help="records the two Faust agents read (default 200,000)")
    parser.add_argument("--skip", default="", help="comma-separated sections to leave out: "
                        + ", ".join(SECTIONS))
    parser.add_argument("--code", type=Path, metavar="DIR",
                        help="the source tree measured (default: this checkout)")
    parser.add_argument("--baseline", metavar="REF",
                        help="also measure this git ref or commit (a temporary worktree, "
                             "compiled), interleaved with the current tree")
    parser.add_argument("--repeat", type=int, default=None,
                        help="rounds of the compared measurements, the best kept "
                             "(default 3 with --baseline, else 1)")
    args = parser.parse_args(argv)
    repeat = args.repeat or (3 if args.baseline else 1)
    sections = set(SECTIONS) - {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.quick:
        sizes = {"foundation": (100_000, 10_000), "pipeline": (20_000, 10_000),
                 "scaling": 100_000}
    else:
        sizes = {"foundation": (1_000_000, 100_000), "pipeline": (1_000_000, 100_000),
                 "scaling": 1_000_000}
    signal.signal(signal.SIGTERM, _interrupt)
    figures: dict[str, Any] = {
        "quick": args.quick, "seed": args.seed, "mix_version": mix.MIX_VERSION,
        "repeat": repeat,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "load_average_1m_at_start": round(os.getloadavg()[0], 2)},
    }
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="cw-bench-"))
    try:
        with contextlib.ExitStack() as stack:
            code = [trees.current_tree(args.code)]
            if args.baseline:
                code.insert(0, stack.enter_context(trees.baseline_tree(args.baseline)))
            # a child of each tree imports that tree (compiled, to compare two)
            figures["code"] = {tree.label: trees.checked(tree, bool(args.baseline))
                               for tree in code}
            _run_sections(args, sections, sizes, code, repeat, work, figures)
            if args.baseline:
                figures["comparison"] = comparison(figures, code)
    except trees.TreeError as exc:
        raise SystemExit(f"refused: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures["suite_seconds"] = round(time.perf_counter() - started, 1)
    peaks = [v for v in figures.get("foundation", {}).get("peak_rss_mib", {}).values()]
    peaks += [r["peak_rss_mib"] for r in figures.get("scaling", {}).get("runs", {}).values()]
    figures["peak_rss_mib"] = max(peaks) if peaks else None
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    print_table(figures)
    return 0


def _run_sections(args: argparse.Namespace, sections: set[str], sizes: dict[str, Any],
                  code: list[trees.Tree], repeat: int, work: Path,
                  figures: dict[str, Any]) -> None:
    compiled = bool(args.baseline)

    def pipeline_section() -> dict[str, Any]:
        with _broker(args.broker, work, args.group_start_delay_ms) as broker:
            return measure_pipeline(broker, *sizes["pipeline"], args.seed, args.partitions,
                                    sections, work, args.baseline_events, code, repeat)

    plan = {
        "foundation": lambda: measure_foundation(*sizes["foundation"], args.seed, args.cpu,
                                                 code, repeat, compiled),
        "pipeline": pipeline_section,
        "scaling": lambda: measure_scaling(sizes["scaling"], args.seed, args.cpu, work,
                                           code[-1]),
    }
    for name, measure in plan.items():
        if name in sections or (name == "pipeline" and "latency" in sections):
            try:
                figures[name] = measure()
            except (Exception, SystemExit) as exc:  # one failed section spoils no other
                figures.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
                print(f"{name} failed: {exc}", file=sys.stderr)


class _broker:  # noqa: N801 - used as a context manager, like a function
    """A broker for the pipeline sections: the given one, or one started here and stopped."""

    def __init__(self, given: str | None, work: Path, group_start_delay_ms: int = 0) -> None:
        self.given, self.dir, self.delay = given, work / "kafka", group_start_delay_ms

    def __enter__(self) -> str:
        if self.given:
            return self.given
        return pipeline.start_broker(self.dir, self.delay)

    def __exit__(self, *exc: object) -> None:
        if not self.given:
            pipeline.stop_broker(self.dir)


def print_table(figures: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    current = figures["code"]["current"]
    table = Table(title=f"consentwatch benchmarks{' (quick)' if figures['quick'] else ''}: "
                        f"{figures['machine']['cpu_count']} CPUs, load "
                        f"{figures['machine']['load_average_1m_at_start']}; code: "
                        f"{current['commit']} ({current['path']}), "
                        f"{'compiled' if current['compiled'] else 'sources'}")
    for column in ("measurement", "events", "events/s", "plain baseline events/s", "ratio",
                   "peak RSS MiB", "note"):
        table.add_column(column, justify="left" if column in ("measurement", "note")
                         else "right")

    def n(value: float | None, digits: int = 0) -> str:
        return "" if value is None else f"{value:,.{digits}f}"

    f = figures.get("foundation")
    if f:
        rss = f["peak_rss_mib"]
        table.add_row("engine alone (1 core)", n(f["events"]), n(f["engine_events_per_s"]),
                      "", "", n(rss["engine"]), "events pre-loaded")
        table.add_row("replay from JSON Lines", n(f["events"]), n(f["replay_jsonl_events_per_s"]),
                      n(f["baseline_jsonl_events_per_s"]), n(f["replay_jsonl_vs_baseline"], 3),
                      n(rss["replay_jsonl"]), "baseline: orjson.loads per line")
        table.add_row("replay from Avro", n(f["events"]), n(f["replay_avro_events_per_s"]),
                      n(f["baseline_avro_events_per_s"]), n(f["replay_avro_vs_baseline"], 3),
                      n(rss["replay_avro"]), "baseline: fastavro.reader")
    p = figures.get("pipeline", {})
    for workers in (1, 2):
        run = p.get(f"workers_{workers}")
        if run:
            table.add_row(f"pipeline, {workers} worker{'s' if workers > 1 else ''}",
                          n(run["events"]), n(run["processing_events_per_s"]),
                          n(run["baseline_events_per_s"]), n(run["vs_baseline"], 3), "",
                          f"once the group formed ({run['group_formed_s']:.1f} s in); from "
                          f"the start {n(run['events_per_s'])}/s "
                          f"({run['vs_baseline_end_to_end']:.3f}); baseline: aiokafka "
                          f"read+decode; findings = replay: {run['findings_match_replay']}"
                          + (f"; {p['workers_2_vs_1']:.2f}x one worker once formed, "
                             f"{p['workers_2_vs_1_end_to_end']:.2f}x from the start"
                             if workers == 2 and "workers_2_vs_1" in p else ""))
    run = p.get("catch_up")
    if run:
        limit = run["catch_up_limit_seconds"]
        table.add_row("catch-up: 1 worker started cold on the backlog", n(run["events"]),
                      n(run["steady_events_per_s"]), "", "", "",
                      f"every decision the input allows, with no end of input, in "
                      f"{run['catch_up_seconds']:.1f} s; limit 1.2 x events / steady rate "
                      f"+ 60 s = {'?' if limit is None else f'{limit:.1f}'} s: "
                      f"{'met' if run['catch_up_within_limit'] else 'MISSED'}; "
                      f"findings = replay: {run['findings_match_replay']}")
    for key, label in (("faust_agent", "Faust agent, iterate only"),
                       ("faust_table_agent", "Faust agent, a table update per record")):
        agent = p.get(key)
        if agent:
            ratio = p["worker_events_per_s"] / agent["events_per_s"]
            formed = (p["workers_1_processing_events_per_s"]
                      / agent["processing_events_per_s"])
            table.add_row(label, n(agent["events"]), n(agent["events_per_s"]), "", "", "",
                          f"1 worker is {ratio:.2f}x this ({formed:.2f}x once the group "
                          f"formed)")
    lat = p.get("latency")
    if lat and lat.get("past_rule_findings"):
        table.add_row("decision latency at half load", n(lat["events"]),
                      n(lat["rate_events_per_s"]), "", "", "",
                      f"p50 {lat['p50_s']:.2f} s, p99 {lat['p99_s']:.2f} s "
                      f"({lat['past_rule_findings']:,} findings)")
    s = figures.get("scaling")
    if s:
        for subjects, run in s["runs"].items():
            table.add_row(f"{int(subjects):,} subjects, state on disk", n(run["events"]),
                          n(run["events_per_s"]), "", "", n(run["peak_rss_mib"]),
                          f"RocksDB {run['state_on_disk_mib']:.0f} MiB")
        table.add_row("1,000,000 vs 10,000 subjects", "", "", "", n(s["ratio_1m_vs_10k"], 3),
                      "", f"target >= {TARGET_SCALING_RATIO}: "
                      f"{'met' if s['target_met'] else 'MISSED'}")
    if figures.get("peak_rss_mib") is not None:
        table.add_row("peak RSS (all measurements)", "", "", "", "",
                      n(figures["peak_rss_mib"]), "")
    console = Console(width=None if sys.stdout.isatty() else 170)
    console.print(table)
    if figures.get("comparison"):
        console.print(comparison_table(figures["comparison"], figures["repeat"]))
    console.print(f"suite: {figures['suite_seconds']:.0f} s")
    for name, error in figures.get("errors", {}).items():
        console.print(f"[red]{name} failed[/]: {error[:500]}")


def comparison_table(comp: dict[str, Any], repeat: int) -> Any:
    from rich.table import Table

    base, cur = comp["trees"]["baseline"], comp["trees"]["current"]
    table = Table(title=f"current {cur['commit']} ({cur['path']}) vs baseline "
                        f"{base['commit']} ({base['path']}): best of {repeat}, interleaved")
    for column in ("measurement", f"baseline {base['commit']} events/s",
                   f"current {cur['commit']} events/s", "current/baseline", "CPU ratio",
                   f"within 5% (>= {comp['within_threshold']})"):
        table.add_column(column, justify="left" if column == "measurement" else "right")
    for label, row in comp["rows"].items():
        table.add_row(label, f"{row['baseline_events_per_s']:,.0f}",
                      f"{row['current_events_per_s']:,.0f}", f"{row['ratio']:.3f}",
                      f"{row['ratio_cpu']:.3f}" if "ratio_cpu" in row else "",
                      "yes" if row["within_5pct"] else "[red]NO[/]")
    table.caption = (f"all within 5%: {'yes' if comp['all_within_5pct'] else 'NO'}; the "
                     f"baseline worktree is removed after the run")
    return table


if __name__ == "__main__":
    sys.exit(main())
