"""The benchmark suite in one command: one table, the same figures as JSON.

    .venv/bin/python benchmarks/run.py [--quick] [--json OUT] [--broker HOST:PORT]
        [--cpu 0] [--partitions 4] [--skip foundation,pipeline,latency,scaling]

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
  worker_events_per_s, workers_2_events_per_s (combined), aiokafka_events_per_s,
  faust_agent_events_per_s, faust_table_events_per_s and worker_vs_faust_table;

--quick: 100,000 events for foundation and scaling, 20,000 through the pipeline and
a live minute at half its rate for latency: a few minutes. The full run: 1,000,000
events everywhere (100,000 subjects), the Faust agents on 200,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import foundation  # noqa: E402
import mix  # noqa: E402
import pipeline  # noqa: E402

SUBJECT_COUNTS = (10_000, 100_000, 1_000_000)
TARGET_SCALING_RATIO = 0.7
SECTIONS = ("foundation", "pipeline", "latency", "scaling")


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
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure_scaling(events: int, seed: int, cpu: int | None, work: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for subjects in SUBJECT_COUNTS:
        jsonl, _ = foundation._ensure_data(events, subjects, seed, want_avro=False)
        state = work / f"state-{subjects}"
        prefix = ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") \
            else []
        print(f"scaling: {subjects:,} subjects ...", file=sys.stderr, flush=True)
        code, wall, _, rss, out, err = foundation._run(
            [*prefix, sys.executable, str(Path(__file__).resolve()), "--_child-scaling",
             str(jsonl), str(state)])
        if code != 0:
            raise SystemExit(f"scaling child failed ({code}):\n{err[-2000:]}")
        run = json.loads(out.strip().splitlines()[-1])
        run.update(subjects=subjects, wall_seconds=wall, peak_rss_mib=rss,
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


def measure_foundation(events: int, subjects: int, seed: int, cpu: int | None
                       ) -> dict[str, Any]:
    jsonl, avro = foundation._ensure_data(events, subjects, seed, want_avro=True)
    with open(jsonl, "rb") as fh:
        records = sum(1 for _ in fh)
    runner = foundation.Runner(cpu, "off")
    plan = {
        "engine": lambda: runner.child("engine", jsonl),
        "baseline_jsonl": lambda: runner.child("baseline_jsonl", jsonl),
        "replay_jsonl": lambda: runner.replay(jsonl, records),
        "baseline_avro": lambda: runner.child("baseline_avro", avro),
        "replay_avro": lambda: runner.replay(avro, records),
    }
    runs = {}
    for name, measure in plan.items():
        print(f"foundation: {name} ...", file=sys.stderr, flush=True)
        runs[name] = measure()
    rate = {name: run["events"] / run["seconds"] for name, run in runs.items()}
    return {
        "events": records, "subjects": subjects,
        "engine_events_per_s": rate["engine"],
        "replay_jsonl_events_per_s": rate["replay_jsonl"],
        "replay_avro_events_per_s": rate["replay_avro"],
        "baseline_jsonl_events_per_s": rate["baseline_jsonl"],
        "baseline_avro_events_per_s": rate["baseline_avro"],
        "replay_jsonl_vs_baseline": rate["replay_jsonl"] / rate["baseline_jsonl"],
        "replay_avro_vs_baseline": rate["replay_avro"] / rate["baseline_avro"],
        "peak_rss_mib": {name: run["peak_rss_mib"] for name, run in runs.items()},
    }


# -- pipeline and latency --------------------------------------------------------------------


def measure_pipeline(broker: str, events: int, subjects: int, seed: int, partitions: int,
                     sections: set[str], work: Path, baseline_events: int) -> dict[str, Any]:
    from streams.kafka.kafka_io import create_topics, produce_events
    from streams.kafka.topics import TopicNames

    stream = pipeline._events(events, subjects, seed)
    expected = pipeline._expected(stream)
    last = max(e.occurred_at for e in stream)
    results: dict[str, Any] = {"events": events, "subjects": subjects, "partitions": partitions}
    worker_rate = None
    if "pipeline" in sections:
        for workers in (1, 2):
            prefix = f"bench{int(time.time())}w{workers}"
            names = TopicNames(prefix)
            asyncio.run(create_topics(pipeline._connection(broker), names, partitions, 1))
            asyncio.run(produce_events(pipeline._connection(broker), names, stream))
            print(f"pipeline: baseline consumer, {workers} worker(s) ...", file=sys.stderr,
                  flush=True)
            baseline = pipeline.measure_aiokafka(broker, prefix, events)
            print(f"pipeline: {workers} worker(s) ...", file=sys.stderr, flush=True)
            run = pipeline.measure_worker(broker, prefix, events, expected, last, partitions,
                                          work, workers=workers)
            run["baseline_events_per_s"] = baseline["events_per_s"]
            run["vs_baseline"] = run["events_per_s"] / baseline["events_per_s"]
            results[f"workers_{workers}"] = run
            if workers == 1:
                # Faust's own per-record path on the same topics, the first
                # `baseline_events` records (its rate is steady; a table update per
                # record would take minutes for a million).
                n = min(events, baseline_events)
                print(f"pipeline: Faust agents, {n:,} events ...", file=sys.stderr, flush=True)
                results["faust_agent"] = pipeline.measure_faust_agent(
                    broker, prefix, n, work, partitions)
                results["faust_table_agent"] = pipeline.measure_faust_agent(
                    broker, prefix, n, work, partitions, table=True)
        worker_rate = results["workers_1"]["events_per_s"]
        # The figures the speed issue names, all from this run.
        results["worker_events_per_s"] = worker_rate
        results["workers_2_events_per_s"] = results["workers_2"]["events_per_s"]  # combined
        results["aiokafka_events_per_s"] = results["workers_1"]["baseline_events_per_s"]
        results["faust_agent_events_per_s"] = results["faust_agent"]["events_per_s"]
        results["faust_table_events_per_s"] = results["faust_table_agent"]["events_per_s"]
        results["worker_vs_faust_table"] = worker_rate / results["faust_table_events_per_s"]
    if "latency" in sections:
        rate = (worker_rate or 1_000.0) / 2
        # A live feed of about a minute (pipeline.LATENCY_FEED_S): the last triggers
        # of a finite feed wait for the idle timeout and are left out of the figures.
        feed = pipeline.latency_events(rate, subjects, seed + 1)
        print(f"latency: {len(feed):,} events at {rate:,.0f} events/s ...",
              file=sys.stderr, flush=True)
        results["latency"] = pipeline.measure_latency(
            broker, f"bench{int(time.time())}lat", feed, rate, partitions, work)
    return results


# -- the run ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_child-scaling":
        sys.stdout.write(json.dumps(child_scaling(argv[1], argv[2])) + "\n")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run of a few minutes")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--broker", help="use this Kafka broker instead of starting one")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cpu", type=int, default=0, help="pin single-core children here")
    parser.add_argument("--baseline-events", type=int, default=200_000,
                        help="records the two Faust agents read (default 200,000)")
    parser.add_argument("--skip", default="", help="comma-separated sections to leave out: "
                        + ", ".join(SECTIONS))
    args = parser.parse_args(argv)
    sections = set(SECTIONS) - {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.quick:
        sizes = {"foundation": (100_000, 10_000), "pipeline": (20_000, 10_000),
                 "scaling": 100_000}
    else:
        sizes = {"foundation": (1_000_000, 100_000), "pipeline": (1_000_000, 100_000),
                 "scaling": 1_000_000}
    work = Path(tempfile.mkdtemp(prefix="cw-bench-"))
    figures: dict[str, Any] = {
        "quick": args.quick, "seed": args.seed, "mix_version": mix.MIX_VERSION,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "load_average_1m_at_start": round(os.getloadavg()[0], 2)},
    }
    started = time.perf_counter()
    def pipeline_section() -> dict[str, Any]:
        with _broker(args.broker, work) as broker:
            return measure_pipeline(broker, *sizes["pipeline"], args.seed, args.partitions,
                                    sections, work, args.baseline_events)

    plan = {
        "foundation": lambda: measure_foundation(*sizes["foundation"], args.seed, args.cpu),
        "pipeline": pipeline_section,
        "scaling": lambda: measure_scaling(sizes["scaling"], args.seed, args.cpu, work),
    }
    try:
        for name, measure in plan.items():
            if name in sections or (name == "pipeline" and "latency" in sections):
                try:
                    figures[name] = measure()
                except (Exception, SystemExit) as exc:  # one failed section spoils no other
                    figures.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
                    print(f"{name} failed: {exc}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures["suite_seconds"] = round(time.perf_counter() - started, 1)
    peaks = [v for v in figures.get("foundation", {}).get("peak_rss_mib", {}).values()]
    peaks += [r["peak_rss_mib"] for r in figures.get("scaling", {}).get("runs", {}).values()]
    figures["peak_rss_mib"] = max(peaks) if peaks else None
    print_table(figures)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


class _broker:  # noqa: N801 - used as a context manager, like a function
    """A broker for the pipeline sections: the given one, or one started here and stopped."""

    def __init__(self, given: str | None, work: Path) -> None:
        self.given, self.dir = given, work / "kafka"

    def __enter__(self) -> str:
        if self.given:
            return self.given
        script = str(ROOT / "deploy/kafka/kafka.sh")
        return subprocess.run([script, "start", "--dir", str(self.dir)], capture_output=True,
                              text=True, check=True).stdout.strip()

    def __exit__(self, *exc: object) -> None:
        if not self.given:
            subprocess.run([str(ROOT / "deploy/kafka/kafka.sh"), "stop", "--dir",
                            str(self.dir)], capture_output=True, check=False)


def print_table(figures: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"consentwatch benchmarks{' (quick)' if figures['quick'] else ''}: "
                        f"{figures['machine']['cpu_count']} CPUs, load "
                        f"{figures['machine']['load_average_1m_at_start']}")
    for column in ("measurement", "events", "events/s", "baseline events/s", "ratio",
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
                          n(run["events"]), n(run["events_per_s"]),
                          n(run["baseline_events_per_s"]), n(run["vs_baseline"], 3), "",
                          f"baseline: aiokafka read+decode; findings = replay: "
                          f"{run['findings_match_replay']}")
    for key, label in (("faust_agent", "Faust agent, iterate only"),
                       ("faust_table_agent", "Faust agent, a table update per record")):
        agent = p.get(key)
        if agent:
            ratio = p["worker_events_per_s"] / agent["events_per_s"]
            table.add_row(label, n(agent["events"]), n(agent["events_per_s"]), "", "", "",
                          f"1 worker is {ratio:.2f}x this")
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
    console.print(f"suite: {figures['suite_seconds']:.0f} s")
    for name, error in figures.get("errors", {}).items():
        console.print(f"[red]{name} failed[/]: {error[:500]}")


if __name__ == "__main__":
    sys.exit(main())
