"""How fast a cold worker restores its state from the changelog (a rebalance, a new
worker joining, a disk lost): records restored per second.

    .venv/bin/python benchmarks/restore.py [--events 200000] [--subjects 20000]
        [--partitions 4] [--seed 1] [--repeat 3] [--broker HOST:PORT]
        [--code DIR] [--baseline-code DIR] [--keep DIR]

On a broker started with deploy/kafka/kafka.sh (unless --broker), the mix
(benchmarks/mix.py) is produced once and one worker decides it to the end, filling
the state's changelog. Then, --repeat rounds, a worker of each tree (--baseline-code
first, if given, then --code, default this checkout; benchmarks/trees.py) is started
on that group with an empty data directory: it reads back every changelog record of
its partitions before it goes on. The figure is the records restored over the time
from its "Restoring state from changelog topics" line to its "Done reading from
changelog topics" line (Faust's, kept at INFO by the worker), the best of the rounds;
the worker is stopped after each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import trees  # noqa: E402

sys.path.insert(1, str(trees.code_dir()))

import pipeline  # noqa: E402

_STARTED = "Restoring state from changelog topics"
_DONE = "Done reading from changelog topics"
_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


def _stamp(line: str) -> float | None:
    """The time of a log line (mode's format: `[2026-12-07 16:40:01,123] ...`)."""
    match = _STAMP.match(line)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _restore_span(log: Path) -> tuple[float, float] | None:
    """The times of the first restore's start and end lines in a worker's log."""
    started = done = None
    for line in log.read_text(errors="replace").splitlines():
        if started is None and _STARTED in line:
            started = _stamp(line)
        elif started is not None and _DONE in line:
            done = _stamp(line)
            break
    return None if started is None or done is None else (started, done)


def changelog_records(broker: str, group: str) -> int:
    """Records on the state's changelog, every partition (beginning to end)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def count() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=broker)
        await consumer.start()
        try:
            await consumer._client.force_metadata_update()
            topic = f"{group}-state-changelog"
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            return sum(ends[tp] - starts[tp] for tp in tps)
        finally:
            await consumer.stop()

    return asyncio.run(count())


def measure_restore(broker: str, prefix: str, records: int, partitions: int, work: Path,
                    tree: trees.Tree, tag: str) -> dict[str, Any]:
    """A cold worker of `tree` on `prefix`'s group: the time its restore took."""
    log = work / f"restore-{tag}.log"
    proc = pipeline._start_worker(broker, prefix, work / f"restore-{tag}", log, partitions,
                                  tree, log_level="info")
    try:
        if not pipeline._wait(lambda: _restore_span(log) is not None, 600, 0.5):
            raise RuntimeError(f"the worker did not restore its state; see {log}")
        span = _restore_span(log)
        assert span is not None
        seconds = max(span[1] - span[0], 1e-3)
        return {"records": records, "seconds": seconds, "records_per_s": records / seconds}
    finally:
        pipeline._stop(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--subjects", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--broker", help="HOST:PORT of a running broker (default: start one)")
    parser.add_argument("--code", type=Path, help="the tree measured (default: this one)")
    parser.add_argument("--baseline-code", type=Path, help="a tree measured beside it")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="work in DIR and keep it (the workers' logs; default: a "
                             "temporary directory, removed)")
    args = parser.parse_args(argv)
    try:
        code = [trees.current_tree(args.code)]
        if args.baseline_code:
            code.insert(0, trees.current_tree(args.baseline_code, label="baseline"))
    except trees.TreeError as exc:
        parser.error(str(exc))

    from streams.kafka.kafka_io import create_topics, produce_events
    from streams.kafka.topics import TopicNames

    with (contextlib.nullcontext(str(args.keep)) if args.keep
          else tempfile.TemporaryDirectory(prefix="cw-restore-")) as tmp:
        work = Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        broker = args.broker
        if broker is None:
            broker = pipeline.start_broker(work / "kafka")
        try:
            events = pipeline._events(args.events, args.subjects, args.seed)
            expected = pipeline._expected(events)
            prefix = f"restore{int(time.time())}"
            names = TopicNames(prefix)
            asyncio.run(create_topics(pipeline._connection(broker), names, args.partitions, 1))
            asyncio.run(produce_events(pipeline._connection(broker), names, events))
            print("filling the changelog: one worker decides the input ...", file=sys.stderr,
                  flush=True)
            filled = pipeline.measure_worker(
                broker, prefix, len(events), expected, max(e.occurred_at for e in events),
                args.partitions, work, workers=1, tree=code[-1])
            records = changelog_records(broker, names.group_id)
            rounds: dict[str, list[dict[str, Any]]] = {tree.label: [] for tree in code}
            for round_no in range(args.repeat):
                for tree in code:
                    print(f"[{round_no + 1}/{args.repeat}] {tree.label} {tree.commit}: "
                          f"restoring {records:,} records ...", file=sys.stderr, flush=True)
                    rounds[tree.label].append(measure_restore(
                        broker, prefix, records, args.partitions, work, tree,
                        f"{tree.label}{round_no}"))
        finally:
            if args.broker is None:
                pipeline.stop_broker(work / "kafka")
    print(f"changelog of {len(events):,} events over {args.subjects:,} subjects "
          f"({args.partitions} partitions): {records:,} records; the filling run's findings "
          f"= replay: {filled['findings_match_replay']}")
    best = {label: max(runs, key=lambda r: r["records_per_s"]) for label, runs in rounds.items()}
    for tree in code:
        run = best[tree.label]
        print(f"{tree.label} {tree.commit}: {run['records_per_s']:,.0f} records/s "
              f"({run['seconds']:.2f} s; rounds: "
              + ", ".join(f"{r['records_per_s']:,.0f}" for r in rounds[tree.label]) + ")")
    if len(code) == 2:
        ratio = best[code[1].label]["records_per_s"] / best[code[0].label]["records_per_s"]
        print(f"{code[1].label} / {code[0].label}: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
