"""The pipeline on a three-broker cluster, through broker and worker failures.

A module-scoped cluster from `deploy/kafka/kafka.sh start --brokers 3`: every topic has
three replicas and min.insync.replicas=2, every producer acks=all and idempotence. In
each test a worker reads a stream that a producer sends while the fault happens: a
broker killed (kill -9) and restarted, a rolling restart of all three, a worker killed
while a broker is down. The findings, by finding id, must be `replay`'s on the same
events: none lost, none doubled, and every decision taken within a deadline.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streams.kafka.kafka_io import produce_events
from streams.model.events import Event
from tests import kafka_helpers as kh
from tests.conftest import KAFKA_SH

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

BROKERS = 3
# A stream the producer sends over about 20 s, so the faults fall in the middle of it.
EVENTS, SUBJECTS, RATE = 3_000, 300, 150.0
DEADLINE_S = 240.0
PRODUCERS: list[Producer] = []  # of the running test, cancelled at its end


# -- the cluster -------------------------------------------------------------------------


@dataclass
class Cluster:
    dir: Path
    bootstrap: str

    def _sh(self, *args: str) -> None:
        done = subprocess.run([str(KAFKA_SH), *args, "--dir", str(self.dir)],
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"kafka.sh {' '.join(args)}:\n{done.stderr}"

    def kill(self, node: int) -> None:
        """kill -9 of one broker (it is also one of the three controllers)."""
        self._sh("kill-node", str(node))

    def stop(self, node: int) -> None:
        self._sh("stop-node", str(node))

    def start(self, node: int) -> None:
        """Start a node again; returns once the cluster lists all three brokers."""
        self._sh("start-node", str(node))

    def under_replicated(self) -> list[str]:
        """Partitions (of every topic) whose in-sync replicas are fewer than their replicas."""
        return asyncio.run(_under_replicated(self.bootstrap))

    def wait_fully_replicated(self, timeout: float = 120.0) -> None:
        """What a rolling restart waits for before it stops the next broker."""
        kh.wait_until(lambda: not self.under_replicated(), timeout, interval=0.5,
                      what="every partition's replicas back in sync",
                      on_timeout=lambda: str(self.under_replicated()[:10]))


async def _under_replicated(bootstrap: str) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(await admin.list_topics())
    finally:
        await admin.close()
    return [f"{topic['topic']}[{p['partition']}]" for topic in described
            for p in topic["partitions"] if len(p["isr"]) < len(p["replicas"])]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data_dir = tmp_path_factory.mktemp("kafka-cluster")
    started = subprocess.run([str(KAFKA_SH), "start", "--brokers", str(BROKERS),
                              "--dir", str(data_dir)],
                             capture_output=True, text=True, timeout=600, check=False)
    try:
        if started.returncode != 0:
            pytest.fail(f"kafka.sh start --brokers {BROKERS} failed:\n{started.stderr}",
                        pytrace=False)
        bootstrap = started.stdout.strip()
        assert len(bootstrap.split(",")) == BROKERS, bootstrap
        yield Cluster(data_dir, bootstrap)
    finally:
        subprocess.run([str(KAFKA_SH), "stop", "--dir", str(data_dir)],
                       capture_output=True, timeout=180, check=False)


@pytest.fixture
def cluster_workers(cluster: Cluster, tmp_path: Path) -> Iterator[kh.Workers]:
    started = kh.Workers(cluster.bootstrap, tmp_path)
    try:
        yield started
    finally:
        for producer in PRODUCERS:
            producer.cancel()
        PRODUCERS.clear()
        started.stop_all()


# -- a stream in the background ----------------------------------------------------------


class Producer(threading.Thread):
    """`produce_events` (acks=all, idempotent) at RATE events/s in a thread of its own."""

    def __init__(self, pipeline: kh.Pipeline, events: list[Event]) -> None:
        super().__init__(daemon=True)
        self.pipeline, self.events = pipeline, events
        self.sent: int | None = None
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[int] | None = None

    def run(self) -> None:
        async def send() -> int:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            return await produce_events(self.pipeline.connection, self.pipeline.names,
                                        self.events, rate=RATE)

        try:
            self.sent = asyncio.run(send())
        except BaseException as exc:  # handed to the test
            self.error = exc

    def cancel(self) -> None:
        """Stop sending (a failed test): its retries would outlive the cluster."""
        if self.is_alive() and self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self.join(30)

    def input_total(self) -> int:
        return sum(self.pipeline.end_offsets(self.pipeline.names.inputs.values()).values())

    def wait_sent(self, count: int) -> None:
        """Wait until `count` events are on the input topics (the stream still flows)."""
        kh.wait_until(lambda: self.error is not None or self.input_total() >= count,
                      DEADLINE_S, interval=0.2, what=f"{count} events produced")
        assert self.error is None, repr(self.error)

    def finish(self) -> None:
        self.join(DEADLINE_S)
        assert not self.is_alive(), "the producer did not finish"
        assert self.error is None, repr(self.error)
        assert self.sent == len(self.events)


@dataclass
class Run:
    pipeline: kh.Pipeline
    events: list[Event]
    expected: list[dict[str, Any]]
    producer: Producer


def begin(cluster: Cluster, workers: kh.Workers, name: str, seed: int,
          data_dir: Path) -> tuple[Run, kh.Worker]:
    """New topics, a worker with every partition, and the stream under way."""
    events = kh.mix(EVENTS, SUBJECTS, seed=seed)
    expected = kh.replay_findings(events)
    assert len(expected) > 100
    pipeline = kh.Pipeline(cluster.bootstrap, f"c-{name}-{uuid.uuid4().hex[:8]}")
    pipeline.create_topics()
    worker = workers.start(pipeline.prefix, data_dir=data_dir, name="worker")
    pipeline.wait_assigned(timeout=DEADLINE_S)
    producer = Producer(pipeline, events)
    PRODUCERS.append(producer)
    producer.start()
    return Run(pipeline, events, expected, producer), worker


def finish(run: Run, workers: kh.Workers) -> Counter[bytes]:
    """The stream's end, every decision taken; then the findings equal replay's: the
    same ids, and the same findings. Returns the copies of each id on the topic."""
    pipeline = run.pipeline
    run.producer.finish()
    pipeline.wait_consumed(timeout=DEADLINE_S)
    pipeline.end_of_input()
    pipeline.wait_consumed(timeout=DEADLINE_S)
    want = {f["finding_id"] for f in run.expected}
    kh.wait_until(lambda: set(k.decode() for k in pipeline.finding_keys()) >= want, 60,
                  what=f"{len(want)} finding ids",
                  on_timeout=lambda: f"{len(set(pipeline.finding_keys()))} of {len(want)}")
    got = pipeline.read()
    ids = Counter(f["finding_id"].encode() for f in got)
    assert set(ids) == {i.encode() for i in want}, (
        f"missing {sorted(want - {i.decode() for i in ids})[:3]}, "
        f"extra {sorted({i.decode() for i in ids} - want)[:3]}")
    # Copies of an id (a re-send after a worker restart) are the same finding.
    by_id: dict[str, Any] = {}
    for finding in got:
        core = {k: v for k, v in finding.items() if k != "detected_at"}
        assert by_id.setdefault(finding["finding_id"], core) == core, finding["finding_id"]
    assert {kh.finding_tuple(f) for f in by_id.values()} == {
        kh.finding_tuple(f) for f in run.expected}
    assert pipeline.read("amendments") == []
    assert pipeline.read("dead_letters") == []
    for each in workers.started:
        assert "Crashed reason" not in each.log(), each.tail(80)
    return ids


def doubled(ids: Counter[bytes]) -> dict[bytes, int]:
    return {key: n for key, n in ids.items() if n > 1}


def check_healthy(worker: kh.Worker) -> None:
    assert worker.running(), f"the worker exited:\n{worker.tail()}"
    assert "Traceback" not in worker.log(), worker.tail(80)


# -- the replication settings ------------------------------------------------------------


async def _replication(bootstrap: str, topics: list[str]) -> dict[str, tuple[set[int], str]]:
    """topic -> (replica counts of its partitions, its own min.insync.replicas or "")."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t, {"min.insync.replicas": None})
             for t in topics])
    finally:
        await admin.close()
    own: dict[str, str] = {}
    for response in responses:
        for _, _, _, name, entries in response.resources:
            for key, value, _read_only, source, *_ in entries:
                # Set on the topic itself, not a broker default: config_source 1
                # (v1 and later), or is_default false (v0).
                topic_level = not source if isinstance(source, bool) else source == 1
                if key == "min.insync.replicas" and topic_level:
                    own[name] = value
    return {t["topic"]: ({len(p["replicas"]) for p in t["partitions"]}, own.get(t["topic"], ""))
            for t in described}


def check_replication(cluster: Cluster, pipeline: kh.Pipeline) -> None:
    changelog = f"{pipeline.names.group_id}-state-changelog"
    topics = [*pipeline.names.all(), changelog]
    found = asyncio.run(_replication(cluster.bootstrap, topics))
    assert set(found) == set(topics)
    assert all(found[t] == ({3}, "2") for t in topics), found


# -- the faults --------------------------------------------------------------------------


def test_a_broker_killed_mid_stream_then_restarted_loses_and_doubles_nothing(
        cluster: Cluster, cluster_workers: kh.Workers, tmp_path: Path) -> None:
    run, worker = begin(cluster, cluster_workers, "kill-broker", 41, tmp_path / "data")
    check_replication(cluster, run.pipeline)  # the worker's changelog too
    run.producer.wait_sent(EVENTS // 3)
    cluster.kill(2)
    run.producer.wait_sent(EVENTS * 2 // 3)  # the stream goes on with two brokers
    check_healthy(worker)
    cluster.start(2)
    ids = finish(run, cluster_workers)
    # No worker restarted: a retried send is written once (idempotence), no finding twice.
    assert doubled(ids) == {}
    check_healthy(worker)


def test_a_rolling_restart_of_every_broker_while_events_flow(
        cluster: Cluster, cluster_workers: kh.Workers, tmp_path: Path) -> None:
    cluster.wait_fully_replicated()
    run, worker = begin(cluster, cluster_workers, "rolling", 43, tmp_path / "data")
    run.producer.wait_sent(EVENTS // 5)
    for node in range(1, BROKERS + 1):
        if node == 1:
            assert run.producer.input_total() < EVENTS, "the stream ended before the restart"
        cluster.stop(node)
        cluster.start(node)
        cluster.wait_fully_replicated()  # before the next goes down
        check_healthy(worker)
    ids = finish(run, cluster_workers)
    assert doubled(ids) == {}
    check_healthy(worker)


def test_a_worker_killed_while_a_broker_is_down_then_restarted(
        cluster: Cluster, cluster_workers: kh.Workers, tmp_path: Path) -> None:
    cluster.wait_fully_replicated()
    data_dir = tmp_path / "data"
    run, worker = begin(cluster, cluster_workers, "kill-both", 47, data_dir)
    names = run.pipeline.names
    run.producer.wait_sent(EVENTS // 4)
    cluster.kill(3)
    # The worker goes on with two brokers (commits included), then it is killed too.
    # (a one-tuple: truthy even at 0; wait_until retries while the coordinator moves)
    # Inputs and correlate topic: the correlate partitions read co-partitioned inputs
    # directly, unless the tests' workers repartition them.
    def committed() -> int:
        return sum(run.pipeline.committed_total(topic)
                   for topic in [*names.inputs.values(), names.correlate])

    (before,) = kh.wait_until(lambda: (committed(),), DEADLINE_S,
                              what="the group's committed offsets")
    kh.wait_until(lambda: committed() >= before + 200, DEADLINE_S, interval=0.2,
                  what="200 more records consumed", on_timeout=worker.tail)
    check_healthy(worker)
    worker.kill()
    # Restarted while the broker is still down: state from its data dir and the
    # changelog (two of three replicas), offsets from the group.
    worker = cluster_workers.start(run.pipeline.prefix, data_dir=data_dir, name="restart")
    run.producer.wait_sent(EVENTS * 3 // 4)
    run.pipeline.wait_assigned(timeout=DEADLINE_S)
    cluster.start(3)
    finish(run, cluster_workers)  # copies allowed (at least once), each the same finding
    check_healthy(worker)
