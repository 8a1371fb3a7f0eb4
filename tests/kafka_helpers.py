"""Helpers for the end-to-end tests of the Kafka pipeline (tests/pipeline/test_pipeline_kafka.py).

Everything here talks to a real broker: the worker runs as a subprocess (`consentwatch
worker`, as an operator would run it), topics are created and events produced with the
real console commands, findings are read back with `consentwatch findings`, and the
consumer group's progress is read from the broker's committed offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from streams.engine import EngineParams
from streams.kafka.connection import KafkaConnection
from streams.kafka.topics import TopicNames
from streams.model.events import ConsentChanged, Event
from streams.serde.jsonl import write_events_jsonl

T = TypeVar("T")

PARTITIONS = 4
CLI_TIMEOUT_S = 300.0
DAY_MS = 86_400_000


# -- small utilities ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.5,
               what: str = "condition", on_timeout: Callable[[], str] | None = None) -> T:
    """Poll `predicate` until it returns something truthy; return that. Fails after
    `timeout`. A retriable Kafka error (a coordinator not there yet, a rebalance in
    progress) counts as "not yet"."""
    from aiokafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
        except KafkaError as exc:
            if not exc.retriable:
                raise
            last_error, value = exc, None  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f"\n{on_timeout()}" if on_timeout is not None else ""
            if last_error is not None:
                detail += f"\nlast retriable error: {last_error!r}"
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


def cli(*args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "streams.cli.app", *args],
                          capture_output=True, timeout=timeout, check=False)


def write_jsonl(path: Path, events: Iterable[Event]) -> int:
    with open(path, "wb") as out:
        return write_events_jsonl(out, events)


# -- the worker subprocess ---------------------------------------------------------------


def repartition_inputs() -> bool:
    """Whether the tests' workers read every input through the correlate topic
    (CONSENTWATCH_TEST_INPUT_PATH=repartition) instead of reading the co-partitioned
    ones directly, as they do by default: run the Kafka tests once each way."""
    path = os.environ.get("CONSENTWATCH_TEST_INPUT_PATH", "direct")
    assert path in ("direct", "repartition"), f"CONSENTWATCH_TEST_INPUT_PATH={path}"
    return path == "repartition"


@dataclass
class Worker:
    """One `consentwatch worker` subprocess, its output in a log file."""

    bootstrap: str
    prefix: str
    data_dir: Path
    log_path: Path
    web_port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        assert self.process is None, "already started"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "streams.cli.app", "worker",
                   "--broker", self.bootstrap, "--topic-prefix", self.prefix,
                   "--data-dir", str(self.data_dir), "--web-port", str(self.web_port),
                   "--log-level", os.environ.get("CONSENTWATCH_TEST_WORKER_LOG_LEVEL", "warning"),
                   *(("--repartition-inputs",) if repartition_inputs() else ()),
                   *self.extra_args]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            # Its own session: a signal to the worker never reaches the test runner.
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """`kill -9` of the worker's own pid, and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def progress(self) -> str:
        """Its log's tail and the metrics that say where its decisions stand (watermarks,
        pending decisions, consumer lag): what a test that timed out waiting reports."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics",
                                        timeout=10) as response:
                text = response.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"{self.tail()}\n(no metrics: {type(exc).__name__})"
        wanted = ("consentwatch_watermark", "consentwatch_pending_decisions",
                  "consentwatch_consumer_lag_records")
        metrics = [line for line in text.splitlines() if line.startswith(wanted)]
        return self.tail() + "\n" + "\n".join(metrics)


class Workers:
    """Starts workers and guarantees each one is stopped (the fixture's finalizer)."""

    def __init__(self, bootstrap: str, tmp: Path) -> None:
        self.bootstrap = bootstrap
        self.tmp = tmp
        self.started: list[Worker] = []

    def start(self, prefix: str, data_dir: Path | None = None, name: str = "worker",
              extra_args: tuple[str, ...] = ()) -> Worker:
        number = len(self.started)
        worker = Worker(self.bootstrap, prefix,
                        data_dir or self.tmp / f"{name}-{number}-data",
                        self.tmp / f"{name}-{number}.log", extra_args=extra_args)
        self.started.append(worker)
        return worker.start()

    def stop_all(self) -> None:
        for worker in self.started:
            try:
                worker.stop(timeout=30)
            except Exception:  # keep stopping the others
                with contextlib.suppress(Exception):
                    worker.kill()


# -- one pipeline (a topic prefix) on the broker -----------------------------------------


@dataclass
class Pipeline:
    bootstrap: str
    prefix: str

    @property
    def names(self) -> TopicNames:
        return TopicNames(self.prefix)

    @property
    def connection(self) -> KafkaConnection:
        return KafkaConnection(self.bootstrap)

    def _kafka_args(self) -> tuple[str, ...]:
        return ("--broker", self.bootstrap, "--topic-prefix", self.prefix)

    def create_topics(self, partitions: int = PARTITIONS) -> None:
        done = cli("topics", "create", *self._kafka_args(), "--partitions", str(partitions))
        assert done.returncode == 0, done.stderr.decode(errors="replace")

    def produce(self, path: Path) -> None:
        """`consentwatch produce PATH`: every event of the file to its input topic."""
        done = cli("produce", str(path), *self._kafka_args())
        assert done.returncode == 0, done.stderr.decode(errors="replace")

    def read(self, kind: str = "findings") -> list[dict[str, Any]]:
        """`consentwatch findings [--amendments|--dead-letters]`, parsed."""
        flag = {"findings": (), "amendments": ("--amendments",),
                "dead_letters": ("--dead-letters",)}[kind]
        done = cli("findings", *self._kafka_args(), *flag)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        assert not done.stderr.strip(), done.stderr.decode(errors="replace")
        return [orjson.loads(line) for line in done.stdout.splitlines() if line.strip()]

    def send_raw(self, topic: str, value: bytes, key: bytes | None = None) -> tuple[int, int]:
        """One record as it is: returns its (partition, offset)."""
        return send_raw(self.bootstrap, topic, value, key)

    def send_events(self, events: Iterable[Event]) -> int:
        from streams.kafka.kafka_io import produce_events

        return asyncio.run(produce_events(self.connection, self.names, list(events)))

    def end_of_input(self) -> int:
        """An end-of-input control record on every input partition (streams/pipeline/
        control.py): every pending decision is taken. Send it after the last event."""
        from streams.pipeline.control import produce_end_of_input

        return asyncio.run(produce_end_of_input(self.connection, self.names))

    # -- progress of the worker group, from the broker ---------------------------------

    def group_offsets(self) -> dict[tuple[str, int], int]:
        """Committed offsets of the worker group `<prefix>.worker`."""
        return asyncio.run(_committed(self.connection, self.names.group_id))

    def end_offsets(self, topics: Iterable[str]) -> dict[tuple[str, int], int]:
        return asyncio.run(_end_offsets(self.connection, list(topics)))

    def consumed(self, topics: Iterable[str], ends: Mapping[tuple[str, int], int] | None = None
                 ) -> bool:
        """The group has committed, on every partition of `topics`, at least `ends`
        (default: the current end offsets)."""
        topics = list(topics)
        ends = self.end_offsets(topics) if ends is None else ends
        committed = self.group_offsets()
        return all(committed.get(tp, 0) >= end for tp, end in ends.items())

    def lag(self, topics: Iterable[str]) -> int:
        ends = self.end_offsets(topics)
        committed = self.group_offsets()
        return sum(max(0, end - committed.get(tp, 0)) for tp, end in ends.items())

    def committed_total(self, topic: str) -> int:
        return sum(offset for (name, _), offset in self.group_offsets().items()
                   if name == topic)

    def wait_assigned(self, timeout: float, members: int = 1) -> dict[str, set[int]]:
        """Wait until `members` workers are in the group and every correlate partition
        is assigned to one of them; returns member -> its correlate partitions."""
        def owners() -> dict[str, set[int]]:
            return correlate_owners(self.bootstrap, self.names)

        def ready() -> dict[str, set[int]] | None:
            found = owners()
            assigned = set().union(*found.values()) if found else set()
            ok = (len(found) == members and all(found.values())
                  and assigned == set(range(PARTITIONS)))
            return found if ok else None

        result = wait_until(ready, timeout, interval=0.5, what=f"{members} worker(s) with "
                            "correlate partitions", on_timeout=lambda: str(owners()))
        assert result is not None
        return result

    def wait_committed(self, topic: str, total: int, timeout: float,
                       on_timeout: Callable[[], str] | None = None) -> int:
        """Wait until the group's committed offsets on `topic` add up to `total`."""
        return wait_until(lambda: (n := self.committed_total(topic)) >= total and n,
                          timeout, interval=0.2, what=f"{total} records of {topic} consumed",
                          on_timeout=on_timeout)

    def wait_consumed(self, timeout: float) -> None:
        """Wait until the worker group has read (and committed) every input record, and
        then every correlate record that existed at that point.

        Faust flushes its producer before it commits, so once the route stage has
        committed the inputs, the correlate topic holds all they led to; once the
        correlate stage has committed up to that end, every finding those records led to
        is on the findings topic.
        """
        names = self.names
        inputs = list(names.inputs.values())
        wait_until(lambda: self.consumed(inputs), timeout, interval=0.5,
                   what=f"the route stage of {self.prefix} to consume its inputs",
                   on_timeout=lambda: f"input lag {self.lag(inputs)}")
        ends = self.end_offsets([names.correlate])
        wait_until(lambda: self.consumed([names.correlate], ends), timeout, interval=0.5,
                   what=f"the correlate stage of {self.prefix} to consume its topic",
                   on_timeout=lambda: f"correlate lag {self.lag([names.correlate])}")

    def finding_keys(self) -> list[bytes]:
        """The key (the finding id) of every record on the findings topic, copies included."""
        return asyncio.run(_keys(self.connection, self.names.findings))


# -- raw Kafka access (aiokafka) ---------------------------------------------------------


def send_raw(bootstrap: str, topic: str, value: bytes, key: bytes | None = None
             ) -> tuple[int, int]:
    """One record, its bytes as they are: returns its (partition, offset)."""
    return send_raw_many(bootstrap, [(topic, value, key)])[0]


def send_raw_many(bootstrap: str,
                  records: Iterable[tuple[str, bytes, bytes | None]
                                    | tuple[str, bytes, bytes | None, int | None]]
                  ) -> list[tuple[int, int]]:
    """Records one after the other (each acknowledged before the next is sent, so
    records with the same key land in this order); returns each (partition, offset)."""
    async def run() -> list[tuple[int, int]]:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        placed: list[tuple[int, int]] = []
        try:
            for topic, value, key, *partition in records:
                meta = await producer.send_and_wait(topic, value, key=key,
                                                    partition=partition[0] if partition else None)
                placed.append((meta.partition, meta.offset))
        finally:
            await producer.stop()
        return placed

    return asyncio.run(run())


async def _committed(connection: KafkaConnection, group: str) -> dict[tuple[str, int], int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**connection.aiokafka_options())
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()
            if meta is not None and meta.offset >= 0}


async def _partitions(connection: KafkaConnection, topics: list[str]) -> list[Any]:
    """Every partition of `topics` (that exist), from the broker's metadata."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**connection.aiokafka_options())
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return [TopicPartition(topic["topic"], partition["partition"])
            for topic in described if topic["error_code"] == 0
            for partition in sorted(topic["partitions"], key=lambda p: p["partition"])]


async def _end_offsets(connection: KafkaConnection, topics: list[str]
                       ) -> dict[tuple[str, int], int]:
    from aiokafka import AIOKafkaConsumer

    tps = await _partitions(connection, topics)
    assert {tp.topic for tp in tps} == set(topics), f"missing topics among {topics}"
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **connection.aiokafka_options())
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}


async def _keys(connection: KafkaConnection, topic: str) -> list[bytes]:
    from aiokafka import AIOKafkaConsumer

    tps = await _partitions(connection, [topic])
    assert tps, f"no topic {topic}"
    consumer = AIOKafkaConsumer(enable_auto_commit=False, auto_offset_reset="earliest",
                                **connection.aiokafka_options())
    await consumer.start()
    keys: list[bytes] = []
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1000, max_records=50_000)
            for records in batch.values():
                keys.extend(record.key or b"" for record in records)
    finally:
        await consumer.stop()
    return keys


# -- expected outputs --------------------------------------------------------------------


def finding_tuple(finding: Mapping[str, Any]) -> tuple[str, str, str, tuple[str, ...]]:
    return (finding["rule"], finding["subject_id"], finding["trigger_event_id"],
            tuple(finding["evidence_event_ids"]))


def replay_findings(events: Iterable[Event], params: EngineParams | None = None
                    ) -> list[dict[str, Any]]:
    """The findings of `replay` (in-process) over these events, in file order."""
    from streams.replay import replay_records

    out = io.BytesIO()
    replay_records(enumerate(events, 1), out, params=params)
    return [orjson.loads(line) for line in out.getvalue().splitlines() if line.strip()]


# -- a stream of events ------------------------------------------------------------------


def mix(n_events: int, n_subjects: int, seed: int) -> list[Event]:
    """The benchmarks' deterministic realistic mix (benchmarks/mix.py), moved to recent
    event time (see `recent`)."""
    from benchmarks.mix import generate

    return recent(list(generate(n_events, n_subjects, seed)))


def shifted(events: Iterable[Event], delta_ms: int) -> list[Event]:
    """The same events, every timestamp (occurred_at, expires_at) moved by `delta_ms`."""
    moved: list[Event] = []
    for event in events:
        changes: dict[str, int] = {"occurred_at": event.occurred_at + delta_ms}
        if isinstance(event, ConsentChanged) and event.expires_at is not None:
            changes["expires_at"] = event.expires_at + delta_ms
        moved.append(dataclasses.replace(event, **changes))  # type: ignore[arg-type]
    return moved


def recent(events: list[Event], last_at: int | None = None) -> list[Event]:
    """The events moved (by whole minutes) so that the last one happened `last_at`
    (default: three days ago).

    `consentwatch produce` gives every record the event's occurred_at as its Kafka
    timestamp, so on a broker an input record older than the input topics' 7-day
    retention is deleted by the next retention check (every 5 minutes), read or not,
    and a record more than an hour in the future is refused (Kafka 4's
    log.message.timestamp.after.max.ms). A test whose events lie three days back, and
    is clear of both.
    """
    if last_at is None:
        last_at = time.time_ns() // 1_000_000 - 3 * DAY_MS
    newest = max(event.occurred_at for event in events)
    delta = (last_at - newest) // 60_000 * 60_000
    return shifted(events, delta)


# -- the consumer group's members --------------------------------------------------------


def correlate_owners(bootstrap: str, names: TopicNames) -> dict[str, set[int]]:
    """member id -> the correlate partitions assigned to it."""
    return {member: {p for topic, p in tps if topic == names.correlate}
            for member, tps in group_members(bootstrap, names.group_id).items()}


def group_members(bootstrap: str, group: str) -> dict[str, set[tuple[str, int]]]:
    """member id -> the topic partitions assigned to it (empty while rebalancing)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    async def run() -> Any:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return await admin.describe_consumer_groups([group])
        finally:
            await admin.close()

    members: dict[str, set[tuple[str, int]]] = {}
    for response in asyncio.run(run()):
        for described in response.groups:
            error_code, _group_id, state, *_, group_members_ = described[:6]
            if error_code or state != "Stable":
                continue
            for member in group_members_:
                member_id, assignment = member[0], member[-1]
                tps: set[tuple[str, int]] = set()
                if assignment:
                    decoded = ConsumerProtocolMemberAssignment.decode(assignment)
                    for topic, partitions in decoded.assignment:
                        tps.update((topic, p) for p in partitions)
                members[member_id] = tps
    return members
