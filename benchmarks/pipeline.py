"""The streaming pipeline on a real broker: one worker against two baselines.

    .venv/bin/python benchmarks/pipeline.py [--quick] [--events N] [--subjects S]
        [--broker HOST:PORT] [--partitions 4] [--code DIR] [--json OUT]

Produces the benchmark mix (benchmarks/mix.py) to fresh topics, then measures on
those same topics, in one run:

* `aiokafka_events_per_s`: a plain aiokafka consumer that reads and decodes every
  input record (fastavro, the writer schema its single-object fingerprint names; not
  consentwatch's own decoder, so the baseline does not move with the code measured);
* `faust_agent_events_per_s`: a plain Faust agent that only iterates them;
* `faust_table_agent_events_per_s`: a Faust agent that makes one table update per
  event (RocksDB through rocksdict, with its changelog);
* `worker_events_per_s`: one `consentwatch worker` (RocksDB state, changelogs),
  from its start to the last finding (the events are followed on the topics by the
  end-of-input control records that close every pending decision);
* latency at half the worker's rate: a fresh pipeline fed at that rate; for the
  rules about the past, p50/p99 of (finding produced - trigger appended).

Each of the three rates counts from the start of its own client or process. Beside
them, the pace between 10% and 90% of the input (starts and ends left out): the plain
consumer's by its count, the worker's by the events its engine consumed (its metrics,
sampled every 0.5 s: `_ConsumedSamples`), and the worker's timeline. The engine consumes
events faster than that pace lets it decide them: the decisions, their findings and
the state's flushes follow on the same core, so the start-to-last-finding rate is the
worker's throughput and the pace only shows where the time goes.

The worker runs the code of one tree (--code, default this checkout;
benchmarks/trees.py); the clients of the harness use this checkout's. The worker's
findings are checked against `replay` of the same events.
Without --broker, a broker is started with deploy/kafka/kafka.sh and stopped after.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import trees  # noqa: E402

# This checkout, or in a child told to run another tree, that tree (its PYTHONPATH).
sys.path.insert(1, str(trees.code_dir()))

PAST_RULES = {"enrichment-without-consent", "enrichment-exceeds-consent",
              "automatic-egress-feature-inactive", "pseudonym-deanonymized"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _events(n: int, subjects: int, seed: int) -> list[Any]:
    from mix import generate

    return list(generate(n, subjects, seed))


def _expected(events: list[Any]) -> set[tuple[str, str, str]]:
    import io

    import orjson

    from streams.replay import replay_records

    out = io.BytesIO()
    replay_records(enumerate(events, 1), out)
    return {(f["rule"], f["subject_id"], f["trigger_event_id"])
            for f in map(orjson.loads, out.getvalue().splitlines())}


def _decided_by_the_input(events: list[Any]) -> set[tuple[str, str, str]]:
    """The findings the events' own watermark decides (the greatest time seen minus the
    allowed lateness), with no end of input: what a cold worker must find on its own."""
    from streams.engine import Engine
    from streams.engine.state import DictStore
    from streams.model.findings import Finding

    engine = Engine(DictStore())
    return {(out.rule, out.subject_id, out.trigger_event_id) for event in events
            for out in engine.process(event) if isinstance(out, Finding)}


class _FindingsSeen:
    """The findings on a topic, read incrementally: (rule, subject, trigger) -> the append
    time (ms) of its first copy."""

    def __init__(self, broker: str, topic: str) -> None:
        self.seen: dict[tuple[str, str, str], int] = {}
        self._loop = asyncio.new_event_loop()
        self._consumer: Any = None
        self._loop.run_until_complete(self._start(broker, topic))

    async def _start(self, broker: str, topic: str) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self._consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
        await self._consumer.start()
        await self._consumer._client.force_metadata_update()
        self._tps = [TopicPartition(topic, p)
                     for p in self._consumer.partitions_for_topic(topic) or ()]
        self._consumer.assign(self._tps)
        await self._consumer.seek_to_beginning(*self._tps)

    async def _read(self) -> None:
        from streams.serde.wire import decode_output

        consumer = self._consumer
        end = await consumer.end_offsets(self._tps)
        while [tp for tp in self._tps if await consumer.position(tp) < end[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    finding = decode_output(record.value)
                    key = (finding.rule, finding.subject_id,  # type: ignore[union-attr]
                           finding.trigger_event_id)  # type: ignore[union-attr]
                    self.seen.setdefault(key, record.timestamp)

    def poll(self) -> dict[tuple[str, str, str], int]:
        self._loop.run_until_complete(self._read())
        return self.seen

    def close(self) -> None:
        self._loop.run_until_complete(self._consumer.stop())
        self._loop.close()


def _steady_rate(samples: list[tuple[float, int]], n: int) -> float | None:
    """Events/s between 10% and 90% of the input consumed (committed offsets)."""
    low = next(((t, c) for t, c in samples if c >= n * 0.1), None)
    high = next(((t, c) for t, c in samples if c >= n * 0.9), None)
    if low is None or high is None or high[0] <= low[0]:
        return None
    return (high[1] - low[1]) / (high[0] - low[0])


class _ConsumedSamples(threading.Thread):
    """(time, events) every 0.5 s: the worker's `consentwatch_events_consumed_total`
    (all types) read from its metrics endpoint, named by the "ready" line of its log."""

    def __init__(self, log: Path) -> None:
        super().__init__(daemon=True)
        self.log = log
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()

    def _url(self) -> str | None:
        import re

        found = re.search(rb"ready: metrics at (http://\S+)", self.log.read_bytes())
        return found.group(1).decode() if found else None

    def run(self) -> None:
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        url = None
        while not self.done.wait(0.5):
            url = url or self._url()
            if url is None:
                continue
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    text = response.read().decode()
            except OSError:
                continue
            total = sum(sample.value for family in text_string_to_metric_families(text)
                        for sample in family.samples
                        if sample.name == "consentwatch_events_consumed_total")
            self.samples.append((time.perf_counter(), total))


def _pace(samples: list[tuple[float, float]], n: int) -> float | None:
    """Events/s between the samples where 10% and 90% of `n` were reached (interpolated)."""
    def when(target: float) -> float | None:
        for (t0, c0), (t1, c1) in itertools.pairwise(samples):
            if c0 < target <= c1:
                return t0 + (t1 - t0) * (target - c0) / (c1 - c0)
        return None

    low, high = when(n * 0.1), when(n * 0.9)
    if low is None or high is None or high <= low:
        return None
    return 0.8 * n / (high - low)


def _group_formed(samples: list[list[tuple[float, float]]], started: float) -> float:
    """When the first of the workers began to consume (their group had formed and its
    partitions were assigned): the earliest last sample before a worker's first event,
    over the workers sampled before it; `started` when none was (a worker whose
    endpoint answered only once it had events says nothing of when they began). A
    worker's start and the group's join are left out of the processing rate, as Kafka's
    consumer perf tool keeps its rebalance time apart from its fetch time; the group
    start delay (`start_broker`) is spent there."""
    begun: list[float] = []
    for series in samples:
        before: float | None = None
        for t, count in series:
            if count > 0:
                if before is not None:
                    begun.append(before)
                break
            before = t
    return min(begun, default=started)


def _timeline(samples: list[tuple[float, float]], n: int, started: float,
              last_finding: float) -> dict[str, float | None]:
    """Seconds from the worker's start to its first event consumed, to 10%, 50%, 90% and
    all of `n` consumed, and to its last finding: where a run's time goes."""
    def first(target: float) -> float | None:
        return next((t - started for t, count in samples if count >= target), None)

    return {"first_event": first(1), "10%": first(n * 0.1), "50%": first(n * 0.5),
            "90%": first(n * 0.9), "all": first(n), "last_finding": last_finding}


def _connection(broker: str) -> Any:
    from streams.kafka.connection import KafkaConnection

    return KafkaConnection(bootstrap=broker)


async def _offsets(broker: str, group: str, topics: list[str]) -> tuple[int, int]:
    """(committed, end) summed over every partition of `topics` for `group`."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(t, p) for t in topics
               for p in (consumer.partitions_for_topic(t) or ())]
        end = await consumer.end_offsets(tps)
        committed = 0
        for tp in tps:
            committed += (await consumer.committed(tp)) or 0
        return committed, sum(end.values())
    finally:
        await consumer.stop()


async def _count_findings(broker: str, topic: str) -> list[Any]:
    from streams.kafka.connection import KafkaConnection
    from streams.kafka.kafka_io import read_outputs

    return [f async for f in read_outputs(KafkaConnection(bootstrap=broker), topic, False)]


async def _finding_times(broker: str, topic: str) -> dict[str, tuple[str, str, int]]:
    """finding_id -> (rule, trigger_event_id, message timestamp of its first copy)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.serde.wire import decode_output

    consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        seen: dict[str, tuple[str, str, int]] = {}
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    finding = decode_output(record.value)
                    fid = finding.finding_id  # type: ignore[union-attr]
                    if fid not in seen:
                        seen[fid] = (finding.rule, finding.trigger_event_id,  # type: ignore[union-attr]
                                     record.timestamp)
        return seen
    finally:
        await consumer.stop()


def _wait(predicate: Any, timeout: float, every: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def _end_of_input(broker: str, prefix: str) -> None:
    from streams.kafka.topics import TopicNames
    from streams.pipeline.control import produce_end_of_input

    asyncio.run(produce_end_of_input(_connection(broker), TopicNames(prefix)))


def _start_worker(broker: str, prefix: str, data_dir: Path, log: Path,
                  partitions: int, tree: trees.Tree | None = None,
                  log_level: str | None = None) -> subprocess.Popen[bytes]:
    tree = tree or trees.current_tree()
    cmd = [sys.executable, "-m", "streams.cli.app", "worker", "--broker", broker,
           "--topic-prefix", prefix, "--data-dir", str(data_dir), "--web-port",
           str(_free_port()), "--log-level",
           # info: rebalances, Faust's recovery
           log_level or os.environ.get("CONSENTWATCH_BENCH_LOG_LEVEL", "warning"),
           "--partitions", str(partitions)]
    profile_dir = os.environ.get("CONSENTWATCH_BENCH_PROFILE")
    if profile_dir:  # where the worker's time goes: a py-spy flame graph per worker
        seconds = os.environ.get("CONSENTWATCH_BENCH_PROFILE_S", "60")
        out = Path(profile_dir) / f"{data_dir.name}.txt"  # collapsed stacks
        idle = ["--idle"] if os.environ.get("CONSENTWATCH_BENCH_PROFILE_IDLE") else []
        native = ["--native"] if os.environ.get("CONSENTWATCH_BENCH_PROFILE_NATIVE") else []
        cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "--rate", "50",
               *idle, *native, "--duration", seconds, "--format", "raw", "-o", str(out), "--", *cmd]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tree.path,
                                env=tree.env(), start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- the measurements ----------------------------------------------------------------


def _plain_decoder() -> Any:
    """What a plain consumer of the topics does with a record: fastavro reads the Avro
    single-object datum into a dict with the writer schema its fingerprint names (none
    of consentwatch's own decoding or checks, which would make the baseline move with
    the code it measures)."""
    import io

    import fastavro

    from streams.serde.wire import _known_by_fingerprint

    schemas = {fingerprint: known.writer for fingerprint, known in _known_by_fingerprint().items()}

    def decode(value: bytes) -> Any:
        stream = io.BytesIO(value)
        stream.seek(10)
        return fastavro.schemaless_reader(stream, schemas[value[2:10]], None)

    return decode


def measure_aiokafka(broker: str, prefix: str, n: int) -> dict[str, float]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.kafka.topics import TopicNames

    async def run() -> dict[str, float]:
        started = time.perf_counter()
        cpu_started = time.process_time()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        await consumer.start()
        decode = _plain_decoder()
        try:
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(t, p) for t in TopicNames(prefix).inputs.values()
                   for p in consumer.partitions_for_topic(t) or ()]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            count = 0
            marks = [round(n * 0.1), round(n * 0.9)]
            crossed: list[float] = []
            while count < n:
                for records in (await consumer.getmany(timeout_ms=500,
                                                       max_records=10_000)).values():
                    for record in records:
                        decode(record.value)
                        count += 1
                    while marks and count >= marks[0]:
                        marks.pop(0)
                        crossed.append(time.perf_counter())
            seconds = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            steady = (0.8 * n / (crossed[1] - crossed[0])
                      if len(crossed) == 2 and crossed[1] > crossed[0] else None)
            return {"events": count, "seconds": seconds, "events_per_s": count / seconds,
                    "steady_events_per_s": steady,
                    "cpu_seconds": cpu, "events_per_cpu_s": count / cpu}
        finally:
            await consumer.stop()

    return asyncio.run(run())


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` and of its children still running (the
    worker under py-spy is py-spy's child); 0 once it is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        total = 0.0
        for proc in (root, *root.children(recursive=True)):
            times = proc.cpu_times()
            total += times.user + times.system
        return total
    except psutil.Error:
        return 0.0


def _broker_pids(kafka_dir: Path | None) -> list[int]:
    """The pids of the brokers `deploy/kafka/kafka.sh` started in `kafka_dir`."""
    if kafka_dir is None:
        return []
    pids = []
    for pidfile in kafka_dir.rglob("kafka.pid"):
        text = pidfile.read_text().strip()
        if text.isdigit():
            pids.append(int(text))
    return pids


def child_faust_agent(broker: str, prefix: str, n: int, data_dir: str, table: bool,
                      partitions: int) -> None:
    """A plain Faust agent over the input topics; prints its rate and exits.

    Without `table` it only iterates; with it, it makes one table update per event
    (RocksDB store through rocksdict, with its changelog), as the issue's baseline asks.
    """
    import faust

    from streams.kafka.topics import TopicNames

    started = time.perf_counter()
    first: float | None = None  # the first event: the group has formed
    name = "faust-table-baseline" if table else "faust-baseline"
    app = faust.App(f"{prefix}.{name}", broker=f"kafka://{broker}",
                    store="rocksdb://" if table else "memory://", datadir=data_dir,
                    web_enabled=False, autodiscover=False, topic_partitions=partitions,
                    consumer_auto_offset_reset="earliest",
                    key_serializer="raw", value_serializer="raw")
    topic = app.topic(*TopicNames(prefix).inputs.values(), key_type=bytes, value_type=bytes)
    counts = app.Table("counts", default=None, key_type=bytes, value_type=bytes) if table else None
    count = 0

    @app.agent(topic)
    async def iterate(stream: Any) -> None:
        nonlocal count, first
        async for event in stream.events():
            if first is None:
                first = time.perf_counter()
            if counts is not None:
                counts[event.key or b""] = event.value
            count += 1
            if count >= n:
                now = time.perf_counter()
                seconds, processing = now - started, now - first
                print(json.dumps({"events": count, "seconds": seconds,
                                  "events_per_s": count / seconds,
                                  "processing_seconds": processing,
                                  "processing_events_per_s": count / processing}),
                      flush=True)
                os._exit(0)

    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


def measure_faust_agent(broker: str, prefix: str, n: int, work: Path, partitions: int,
                        table: bool = False) -> dict[str, float]:
    kind = "table" if table else "plain"
    cmd = [sys.executable, str(HERE / "pipeline.py"), "--child-faust-agent", broker, prefix,
           str(n), str(work / f"faust-baseline-{kind}"), kind, str(partitions)]
    result = subprocess.run(cmd, capture_output=True, timeout=3600, cwd=ROOT, check=False)
    # Faust's worker redirects stdout into its log: find the line wherever it went.
    for line in (result.stdout + result.stderr).decode().splitlines():
        if '{"events"' in line:
            return json.loads(line[line.index('{"events"'):])  # type: ignore[no-any-return]
    raise RuntimeError(f"the Faust baseline failed: {result.stderr.decode()[-2000:]}")


# What a broker waits, by default, for more members of a new consumer group before its
# first generation (`group.initial.rebalance.delay.ms`).
KAFKA_GROUP_START_DELAY_MS = 3000


def start_broker(kafka_dir: Path, group_start_delay_ms: int = KAFKA_GROUP_START_DELAY_MS
                 ) -> str:
    """A broker started with deploy/kafka/kafka.sh in `kafka_dir`: its bootstrap address.
    Its new consumer groups wait `group_start_delay_ms` before their first generation
    (Kafka's default; 0, as the tests' broker, starts a group at once, and two workers
    started together then race: the first to join takes every partition, the second's
    join moves half of them)."""
    env = {**os.environ, "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": str(group_start_delay_ms)}
    return subprocess.run([str(ROOT / "deploy/kafka/kafka.sh"), "start", "--dir",
                           str(kafka_dir)], capture_output=True, text=True, check=True,
                          env=env).stdout.strip()


def stop_broker(kafka_dir: Path) -> None:
    """Stop the broker `start_broker` started in `kafka_dir`."""
    subprocess.run([str(ROOT / "deploy/kafka/kafka.sh"), "stop", "--dir", str(kafka_dir)],
                   capture_output=True, check=False)


def measure_worker(broker: str, prefix: str, n: int, expected: set[tuple[str, str, str]],
                   last_time: int, partitions: int, work: Path,
                   workers: int = 1, tree: trees.Tree | None = None,
                   decided: set[tuple[str, str, str]] | None = None) -> dict[str, Any]:
    """`workers` processes of one consumer group (they share the partitions), running
    `tree`'s code (default this checkout), started cold on `n` events already on the
    topics behind end-of-input control records: the rate from the start to the last
    finding, all of `expected`.

    With `decided` (the findings the events' own watermark decides) the run measures the
    catch-up instead: no end of input until every one of them is out; the time from the
    start to the last of them, beside the issue's limit of 1.2 x n / the steady rate +
    60 s, the steady rate measured between 10% and 90% of the input consumed.
    """
    from streams.kafka.topics import TopicNames

    names = TopicNames(prefix)
    if decided is None:
        # The end of input is on the topics behind the events, as for a file produced at
        # once: the worker's last decisions wait for nothing the harness does.
        _end_of_input(broker, prefix)
    brokers = _broker_pids(work / "kafka")
    broker_cpu_started = sum(map(_cpu_seconds, brokers))
    started = time.perf_counter()
    started_wall = time.time()
    procs = [_start_worker(broker, prefix, work / f"{prefix}-worker{i}",
                           work / f"{prefix}-worker{i}.log", partitions, tree)
             for i in range(workers)]
    findings = _FindingsSeen(broker, names.findings)
    samples: list[tuple[float, int]] = []
    consumers = [_ConsumedSamples(work / f"{prefix}-worker{i}.log") for i in range(workers)]
    for sampler in consumers:
        sampler.start()
    consumed = consumers[0]
    try:
        def routed() -> bool:
            inputs = asyncio.run(_offsets(broker, names.group_id, list(names.inputs.values())))
            samples.append((time.perf_counter(), inputs[0]))
            return inputs[0] >= inputs[1] >= n  # end-of-input records are beyond n

        if not _wait(routed, 3600, 1.0):
            raise RuntimeError("the worker did not consume its input")
        # The correlate topic keeps growing by the route stage's watermark markers:
        # wait for what was there once the input was routed.
        correlate_end = asyncio.run(_offsets(broker, names.group_id, [names.correlate]))[1]
        if not _wait(lambda: asyncio.run(
                _offsets(broker, names.group_id, [names.correlate]))[0] >= correlate_end,
                3600, 1.0):
            raise RuntimeError("the worker did not correlate its input")
        processed = time.perf_counter() - started
        catch_up: dict[str, Any] = {}
        if decided is not None:
            if not _wait(lambda: decided <= findings.poll().keys(), 600, 2.0):
                raise RuntimeError("the worker did not take the decisions its input allows")
            steady = _steady_rate(samples, n)
            seconds = max(findings.seen[key] for key in decided) / 1000 - started_wall
            limit = 1.2 * n / steady + 60 if steady else None
            catch_up = {"catch_up_seconds": seconds, "steady_events_per_s": steady,
                        "catch_up_limit_seconds": limit,
                        "catch_up_within_limit": limit is not None and seconds <= limit,
                        "decided_by_input": len(decided)}
            _end_of_input(broker, prefix)
        _wait(lambda: len(findings.poll()) >= len(expected), 600, 2.0)
        # CPU time from the start (imports included) to now: the workers idle since their
        # last finding, which adds a little.
        cpu = sum(_cpu_seconds(proc.pid) for proc in procs)
        broker_cpu = sum(map(_cpu_seconds, brokers)) - broker_cpu_started if brokers else None
        times = findings.seen
        # From the start to the last finding's append (the polling above takes time too).
        seconds = max(times.values(), default=0) / 1000 - started_wall
        got = set(times)
        duplicates = sum(1 for f in asyncio.run(_count_findings(broker, names.findings))) - len(got)
        formed = _group_formed([sampler.samples for sampler in consumers], started)
        processing = seconds - (formed - started)
        return {"events": n, "seconds": seconds, "events_per_s": n / seconds,
                "group_formed_s": formed - started, "processing_seconds": processing,
                "processing_events_per_s": n / processing,
                "seconds_to_consume": processed, "findings": len(got),
                "expected_findings": len(expected), "findings_match_replay": got == expected,
                "missing": len(expected - got), "unexpected": len(got - expected),
                "copies_sent_again": duplicates, "cpu_seconds": cpu,
                "steady_events_per_s": (_pace(consumed.samples, n) if workers == 1
                                        else None),
                "timeline_s": _timeline(consumed.samples, n, started,
                                        max(times.values(), default=0) / 1000 - started_wall),
                "events_per_cpu_s": n / cpu if cpu else None,
                "broker_cpu_seconds": broker_cpu, **catch_up}
    finally:
        for sampler in consumers:
            sampler.done.set()
        findings.close()
        for proc in procs:
            _stop(proc)


def _jitters(events: list[Any], rate: float) -> list[tuple[int, float]]:
    """Each event's offset (ms) from its slot in a feed at `rate`, and the scale.

    In the mix, event time advances about 20 events per second; fed at `rate`, the
    watermark would then run ahead of the wall clock and hide the wait for the
    allowed lateness that a live platform's events have. Fed live, each event's time
    is the wall clock when it is sent plus this offset (its scaled out-of-orderness),
    so event time runs exactly as fast as the feed, even when the feed falls behind.
    """
    first = events[0].occurred_at
    span = max(e.occurred_at for e in events) - first
    scale = (len(events) / rate * 1000) / max(span, 1)
    return [(round((event.occurred_at - first) * scale - index * 1000 / rate), scale)
            for index, event in enumerate(events)]


def _live(event: Any, now_ms: int, offset_ms: int, scale: float) -> Any:
    """`event` at `now_ms + offset_ms` (its expiry, if any, moved along, scaled)."""
    names = _FIELD_NAMES[type(event)]
    values = list(_EVENT_VALUES[type(event)](event))
    at = now_ms + offset_ms
    values[names.index("occurred_at")] = at
    if getattr(event, "expires_at", None) is not None:
        values[names.index("expires_at")] = at + round(
            (event.expires_at - event.occurred_at) * scale)
    return _EVENT_MAKERS[event.TYPE](*values)


def _event_forms() -> tuple[dict[type, list[str]], dict[type, Any], dict[str, Any]]:
    """Per event class its field names; the project's value getters and constructors."""
    import dataclasses

    from streams.model.events import EVENT_MAKERS, EVENT_TYPES, EVENT_VALUES

    names = {cls: [f.name for f in dataclasses.fields(cls)] for cls in EVENT_TYPES.values()}
    return names, EVENT_VALUES, EVENT_MAKERS


_FIELD_NAMES, _EVENT_VALUES, _EVENT_MAKERS = _event_forms()


LATENCY_FEED_S = 60.0
# Only triggers appended this long before the feed ends count: the last ones wait for the
# idle timeout (nothing follows them), which says nothing of a live platform's latency.
LATENCY_TAIL_S = 45.0


def latency_events(rate: float, subjects: int, seed: int) -> list[Any]:
    """Enough events to feed for LATENCY_FEED_S at `rate`."""
    return _events(max(10_000, round(rate * LATENCY_FEED_S)), subjects, seed)


async def _feed_live(broker: str, names: Any, events: list[Any],
                     jitters: list[tuple[int, float]], rate: float,
                     appended: dict[str, float], feed_end: list[float]) -> None:
    """Feed `events` live at `rate`; `appended`: trigger id -> when its batch was acked."""
    from aiokafka import AIOKafkaProducer

    from streams.kafka.kafka_io import event_key
    from streams.kafka.murmur2 import partition_for
    from streams.serde.wire import SingleObjectFraming

    # The load generator appends to producer batches itself (one per partition,
    # sent whenever it is ahead of its schedule): a send() per record would take
    # it most of a core at these rates, a core the worker under test then lacks.
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await producer.start()
    encode = SingleObjectFraming().encode
    loop = asyncio.get_running_loop()
    counts = {topic: len(await producer.partitions_for(topic))
              for topic in names.inputs.values()}
    open_batches: dict[tuple[str, int], tuple[Any, list[str]]] = {}
    sent: list[asyncio.Future[Any]] = []

    def stamp(trigger_ids: list[str]) -> None:
        now = time.time()
        for eid in trigger_ids:
            appended.setdefault(eid, now)

    async def send(where: tuple[str, int]) -> None:
        builder, trigger_ids = open_batches.pop(where)
        future = await producer.send_batch(builder, where[0], partition=where[1])
        future.add_done_callback(lambda _, ids=trigger_ids: stamp(ids))
        sent.append(future)

    started = loop.time()
    try:
        pairs = zip(events, jitters, strict=True)
        for index, (planned, (offset, scale)) in enumerate(pairs, 1):
            event = _live(planned, time.time_ns() // 1_000_000, offset, scale)
            topic, key = names.inputs[event.TYPE], event_key(event)
            where = (topic, partition_for(key, counts[topic]))
            value = encode(event)
            if where not in open_batches:
                open_batches[where] = (producer.create_batch(), [])
            if open_batches[where][0].append(key=key, value=value,
                                             timestamp=None) is None:
                await send(where)
                open_batches[where] = (producer.create_batch(), [])
                open_batches[where][0].append(key=key, value=value, timestamp=None)
            if event.TYPE in ("EnrichmentRequested", "ProfileViewed"):
                open_batches[where][1].append(event.event_id)
            ahead = index / rate - (loop.time() - started)
            if ahead > 0.002:
                for open_where in list(open_batches):
                    await send(open_where)
                await asyncio.sleep(ahead)
        for open_where in list(open_batches):
            await send(open_where)
        await asyncio.gather(*sent)
        feed_end.append(time.time())
    finally:
        await producer.stop()


def measure_latency(broker: str, prefix: str, events: list[Any], rate: float,
                    partitions: int, work: Path, tree: trees.Tree | None = None
                    ) -> dict[str, Any]:
    """Feed a fresh pipeline live at `rate`; latency of the past rules' findings."""
    from streams.kafka.kafka_io import create_topics
    from streams.kafka.topics import TopicNames

    names = TopicNames(prefix)
    asyncio.run(create_topics(_connection(broker), names, partitions, 1))
    proc = _start_worker(broker, prefix, work / "latency-worker", work / "latency.log",
                         partitions, tree)
    appended: dict[str, float] = {}
    try:
        time.sleep(15)  # let the worker join its group first

        feed_end: list[float] = []
        jitters = _jitters(events, rate)
        asyncio.run(_feed_live(broker, names, events, jitters, rate, appended, feed_end))
        time.sleep(60)  # the last decisions need the watermark to pass them
        times = asyncio.run(_finding_times(broker, names.findings))
    finally:
        _stop(proc)
    cutoff = feed_end[0] - LATENCY_TAIL_S
    latencies = sorted(ts / 1000 - appended[trigger]
                       for rule, trigger, ts in times.values()
                       if rule in PAST_RULES and appended.get(trigger, cutoff) < cutoff)
    if not latencies:
        return {"rate": rate, "findings": 0}

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    return {"rate_events_per_s": rate, "events": len(events), "past_rule_findings":
            len(latencies), "p50_s": pct(0.50), "p99_s": pct(0.99), "max_s": latencies[-1]}


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one run, in order
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child-faust-agent":
        child_faust_agent(argv[1], argv[2], int(argv[3]), argv[4], argv[5] == "table",
                          int(argv[6]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="100,000 events, 10,000 subjects")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--broker", help="use this broker instead of starting one")
    parser.add_argument("--latency-events", type=int, default=50_000)
    parser.add_argument("--baseline-events", type=int, default=200_000,
                        help="events read by the two Faust baselines (their rate is steady: "
                             "a table update per event takes minutes per 100,000)")
    parser.add_argument("--latency-only", type=float, metavar="RATE",
                        help="only the latency measurement, fed at RATE events/s (to compare "
                             "two builds at one rate)")
    parser.add_argument("--no-latency", action="store_true",
                        help="skip the latency measurement")
    parser.add_argument("--code", type=Path, metavar="DIR",
                        help="the source tree the worker runs (default: this checkout)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.subjects = 100_000, 10_000
    try:
        tree = trees.current_tree(args.code)
        code = trees.checked(tree, require_compiled=False)
    except trees.TreeError as exc:
        raise SystemExit(str(exc)) from exc

    from streams.kafka.kafka_io import create_topics, produce_events
    from streams.kafka.topics import TopicNames

    work = Path(tempfile.mkdtemp(prefix="cw-pipeline-bench-"))
    broker = args.broker
    kafka_dir = work / "kafka"
    if broker is None:
        broker = start_broker(kafka_dir)
    try:
        if args.latency_only:
            rate = args.latency_only
            latency = measure_latency(broker, f"bench{int(time.time())}lat",
                                      latency_events(rate, args.subjects, args.seed + 1),
                                      rate, args.partitions, work, tree)
            print(json.dumps(latency, indent=2))
            if args.json:
                args.json.write_text(json.dumps({"latency": latency}, indent=2))
            return 0
        print(f"generating {args.events:,} events over {args.subjects:,} subjects", flush=True)
        events = _events(args.events, args.subjects, args.seed)
        expected = _expected(events)
        prefix = f"bench{int(time.time())}"
        names = TopicNames(prefix)
        asyncio.run(create_topics(_connection(broker), names, args.partitions, 1))
        started = time.perf_counter()
        asyncio.run(produce_events(_connection(broker), names, events))
        produce_s = time.perf_counter() - started
        print(f"produced in {produce_s:.1f} s", flush=True)
        results: dict[str, Any] = {
            "params": {"events": args.events, "subjects": args.subjects,
                       "partitions": args.partitions, "store": "rocksdb",
                       "cpu_count": os.cpu_count()},
            "produce_events_per_s": args.events / produce_s,
        }
        results["aiokafka"] = measure_aiokafka(broker, prefix, args.events)
        print(f"aiokafka: {results['aiokafka']['events_per_s']:,.0f} events/s", flush=True)
        baseline_n = min(args.events, args.baseline_events)
        results["faust_agent"] = measure_faust_agent(broker, prefix, baseline_n, work,
                                                     args.partitions)
        print(f"faust agent: {results['faust_agent']['events_per_s']:,.0f} events/s", flush=True)
        results["faust_table_agent"] = measure_faust_agent(broker, prefix, baseline_n, work,
                                                           args.partitions, table=True)
        print(f"faust agent with a table update per event: "
              f"{results['faust_table_agent']['events_per_s']:,.0f} events/s", flush=True)
        results["worker"] = measure_worker(broker, prefix, args.events, expected,
                                           max(e.occurred_at for e in events),
                                           args.partitions, work, tree=tree)
        print(f"worker: {results['worker']['events_per_s']:,.0f} events/s", flush=True)
        worker_rate = results["worker"]["events_per_s"]
        results["aiokafka_events_per_s"] = results["aiokafka"]["events_per_s"]
        results["faust_agent_events_per_s"] = results["faust_agent"]["events_per_s"]
        results["worker_events_per_s"] = worker_rate
        results["worker_vs_aiokafka"] = worker_rate / results["aiokafka_events_per_s"]
        # The same ratio per CPU-second of each (steadier on a busy machine): the worker's
        # process against the plain consumer's, the broker left out of both.
        if results["worker"].get("events_per_cpu_s"):
            results["worker_vs_aiokafka_cpu"] = (results["worker"]["events_per_cpu_s"]
                                                 / results["aiokafka"]["events_per_cpu_s"])
        # Both from 10% to 90% of the input, the starts and the ends left out.
        steady = results["worker"].get("steady_events_per_s")
        if steady and results["aiokafka"].get("steady_events_per_s"):
            results["worker_steady_vs_aiokafka_steady"] = (
                steady / results["aiokafka"]["steady_events_per_s"])
        results["worker_vs_faust_agent"] = worker_rate / results["faust_agent_events_per_s"]
        results["faust_table_agent_events_per_s"] = results["faust_table_agent"]["events_per_s"]
        results["worker_vs_faust_table_agent"] = (
            worker_rate / results["faust_table_agent_events_per_s"])
        if not args.no_latency:
            results["latency"] = measure_latency(
                broker, f"{prefix}lat", latency_events(worker_rate / 2, args.subjects,
                                                       args.seed + 1),
                worker_rate / 2, args.partitions, work, tree)
        results["code"] = code
        _print_table(results)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        if args.broker is None:
            stop_broker(kafka_dir)
    return 0


def _print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"consentwatch pipeline: {results['params']['events']:,} events, "
                        f"{results['params']['partitions']} partitions, one worker")
    table.add_column("measurement")
    table.add_column("events/s", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("ratio to worker", justify="right")
    worker = results["worker_events_per_s"]
    for key, label in (("aiokafka", "plain aiokafka consumer (read + decode)"),
                       ("faust_agent", "plain Faust agent (iterate)"),
                       ("faust_table_agent", "Faust agent, one table update per event"),
                       ("worker", "consentwatch worker (start to last finding)")):
        row = results[key]
        table.add_row(label, f"{row['events_per_s']:,.0f}", f"{row['seconds']:.1f}",
                      f"{worker / row['events_per_s']:.3f}")
    Console().print(table)
    w = results["worker"]
    if results.get("worker_vs_aiokafka_cpu"):
        broker = w.get("broker_cpu_seconds")
        print(f"per CPU-second: worker {w['events_per_cpu_s']:,.0f} events "
              f"({w['cpu_seconds']:.1f} s of CPU in {w['seconds']:.1f} s), plain aiokafka "
              f"{results['aiokafka']['events_per_cpu_s']:,.0f}: ratio "
              f"{results['worker_vs_aiokafka_cpu']:.3f}"
              + (f"; the broker used {broker:.1f} s of CPU meanwhile" if broker else ""))
    if results.get("worker_steady_vs_aiokafka_steady"):
        print(f"from 10% to 90% of the input: worker {w['steady_events_per_s']:,.0f} "
              f"events/s (events its engine consumed), plain aiokafka "
              f"{results['aiokafka']['steady_events_per_s']:,.0f}: ratio "
              f"{results['worker_steady_vs_aiokafka_steady']:.3f}")
    if w.get("timeline_s"):
        print("worker timeline (s from its start): " + ", ".join(
            f"{key} {value:.1f}" for key, value in w["timeline_s"].items()
            if value is not None))
    print(f"worker findings match replay: {w['findings_match_replay']} "
          f"({w['findings']:,} of {w['expected_findings']:,}; missing {w['missing']}, "
          f"unexpected {w['unexpected']})")
    lat = results.get("latency", {})
    if lat.get("past_rule_findings"):
        print(f"latency at {lat['rate_events_per_s']:,.0f} events/s (half the worker's rate), "
              f"rules about the past: p50 {lat['p50_s']:.2f} s, p99 {lat['p99_s']:.2f} s, "
              f"max {lat['max_s']:.2f} s over {lat['past_rule_findings']:,} findings")


if __name__ == "__main__":
    sys.exit(main())
