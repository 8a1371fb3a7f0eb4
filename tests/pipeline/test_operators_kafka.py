"""Operators get told what is wrong (issue 19): a worker's start on a real broker.

A worker started before `topics create`, or with another partition count, stops with
one line; a worker that starts says so in one line, without Faust's start-up lines;
`consentwatch status` shows a running worker's partitions from its /metrics page.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import pytest

from tests import kafka_helpers as kh

pytestmark = pytest.mark.kafka




def new_prefix(name: str) -> str:
    return f"t-{name}-{uuid.uuid4().hex[:8]}"


def run_worker(bootstrap: str, prefix: str, tmp_path: Path, *args: str) -> tuple[int, str]:
    done = kh.cli("worker", "--broker", bootstrap, "--topic-prefix", prefix,
                  "--data-dir", str(tmp_path / "data"), "--web-port", str(kh.free_port()),
                  *args, timeout=120)
    return done.returncode, done.stderr.decode(errors="replace")


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if not line.startswith("consentwatch: warning")]
    assert len(lines) == 1, stderr
    return lines[0]


def topics_of(bootstrap: str, prefix: str) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    async def run() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return list(await admin.list_topics())
        finally:
            await admin.close()

    return {name for name in asyncio.run(run()) if name.startswith(f"{prefix}.")}


def test_a_worker_before_topics_create_exits_with_one_line(kafka_bootstrap: str,
                                                           tmp_path: Path) -> None:
    prefix = new_prefix("no-topics")
    status, stderr = run_worker(kafka_bootstrap, prefix, tmp_path)
    assert status == 1
    assert one_line(stderr) == (f"consentwatch: error: the topics of prefix {prefix} do not "
                                "exist: run `consentwatch topics create`")
    # Asking about them did not have the broker create them (auto.create.topics.enable).
    assert topics_of(kafka_bootstrap, prefix) == set()


def test_topics_create_with_more_replicas_than_brokers_fails_in_one_line(
        kafka_bootstrap: str) -> None:
    """The broker answers such a request with an error per topic, not a failed request."""
    prefix = new_prefix("replicas")
    done = kh.cli("topics", "create", "--broker", kafka_bootstrap, "--topic-prefix", prefix,
                  "--replication", "3", timeout=60)
    assert done.returncode == 1
    line = one_line(done.stderr.decode(errors="replace"))
    assert line.startswith("consentwatch: error: the broker refused to create "), line
    assert "replication factor" in line.lower(), line
    assert topics_of(kafka_bootstrap, prefix) == set()


def test_a_worker_with_another_partition_count_exits_with_one_line(kafka_bootstrap: str,
                                                                   tmp_path: Path) -> None:
    pipeline = kh.Pipeline(kafka_bootstrap, new_prefix("partitions"))
    pipeline.create_topics(partitions=2)
    status, stderr = run_worker(kafka_bootstrap, pipeline.prefix, tmp_path, "--partitions", "4")
    assert status == 1
    line = one_line(stderr)
    assert re.fullmatch(rf"consentwatch: error: topic {re.escape(pipeline.prefix)}\.\S+ has 2 "
                        r"partitions, but --partitions is 4: .*", line), line


def wait_ready(worker: kh.Worker) -> str:
    ready = f"consentwatch worker: ready: metrics at http://127.0.0.1:{worker.web_port}/metrics"

    def seen() -> bool:
        assert worker.running(), f"the worker exited:\n{worker.tail()}"
        return ready in worker.log()

    kh.wait_until(seen, timeout=120, interval=0.2, what="the worker's ready line",
                  on_timeout=worker.tail)
    return worker.log()


def test_a_worker_starts_in_a_few_lines_and_says_when_it_is_ready(
        kafka_bootstrap: str, workers: kh.Workers) -> None:
    pipeline = kh.Pipeline(kafka_bootstrap, new_prefix("quiet"))
    pipeline.create_topics()
    # The default log level, not the tests' usual warning.
    log = wait_ready(workers.start(pipeline.prefix, extra_args=("--log-level", "info")))
    lines = log.splitlines()
    assert len(lines) < 15, log
    # Which way it reads its inputs, and why (`kafka_io.input_path`).
    mode = ("through the correlate topic: --repartition-inputs" if kh.repartition_inputs()
            else "directly by the correlate partitions: every subject-keyed input topic has "
            f"{kh.PARTITIONS} partitions")
    assert f"input topics read {mode}" in log, log
    assert "Starting..." not in log and "+----" not in log, log  # Faust's services and tables
    assert "Traceback" not in log and "Coordinator" not in log, log


def test_status_shows_a_running_workers_partitions(kafka_bootstrap: str, workers: kh.Workers,
                                                   tmp_path: Path) -> None:
    pipeline = kh.Pipeline(kafka_bootstrap, new_prefix("status"))
    pipeline.create_topics()
    worker = workers.start(pipeline.prefix, extra_args=("--idle-timeout", "1"))
    wait_ready(worker)
    pipeline.send_events(kh.mix(200, 20, seed=3))
    pipeline.send_raw(pipeline.names.event("ConsentChanged"), b"not an event")
    pipeline.wait_consumed(timeout=120)
    [dead_letter] = pipeline.read("dead_letters")

    def shown() -> str | None:
        done = kh.cli("status", "--web-port", str(worker.web_port), timeout=30)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        text = done.stdout.decode()
        rows = [line for line in text.splitlines() if re.match(r"│\s+\d+ │", line)]
        # every partition idle, so every watermark follows the wall clock
        dated = [row for row in rows if re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", row)]
        return text if len(dated) == kh.PARTITIONS else None

    text = kh.wait_until(shown, timeout=60, interval=0.5, what="a watermark on every partition")
    partitions = [int(line.split()[1]) for line in text.splitlines()
                  if re.match(r"│\s+\d+ │", line)]
    assert partitions == list(range(kh.PARTITIONS)), text
    assert "input lag: 0 records on 28 input partitions" in text, text
    assert re.search(rf"│ {dead_letter['reason_code']}\s+│\s+1 │", text), text


def test_inputs_of_another_partition_count_are_read_through_the_correlate_topic(
        kafka_bootstrap: str, workers: kh.Workers) -> None:
    """Not co-partitioned (an input topic grown to 6 partitions): a producer's partitioner
    put a subject's events where the correlate topic would not, so they take the second
    hop, and every decision is replay's still."""
    from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

    from streams.kafka.kafka_io import check_topics

    pipeline = kh.Pipeline(kafka_bootstrap, new_prefix("mixed"))
    pipeline.create_topics()
    grown = pipeline.names.event("ConsentChanged")

    async def grow() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_partitions({grown: NewPartitions(total_count=6)})
        finally:
            await admin.close()

    asyncio.run(grow())

    def grown_partitions() -> int:
        # The broker's metadata shows the new partitions a moment after the request
        # returns: the worker must see them when it chooses its input path.
        _, found = asyncio.run(check_topics(pipeline.connection, pipeline.names,
                                            kh.PARTITIONS))
        return found.get(grown, 0)

    kh.wait_until(lambda: grown_partitions() == 6, timeout=30, interval=0.2,
                  what=f"{grown} with 6 partitions in the broker's metadata")
    worker = workers.start(pipeline.prefix, extra_args=("--log-level", "info"))
    log = wait_ready(worker)
    if not kh.repartition_inputs():
        assert ("input topics read through the correlate topic: 1 subject-keyed input topics "
                f"do not have 4 partitions (e.g. {grown}: 6)") in log, log
    events = kh.mix(3_000, 300, seed=41)
    expected = kh.replay_findings(events)
    pipeline.send_events(events)
    pipeline.wait_consumed(timeout=180)
    pipeline.end_of_input()
    pipeline.wait_consumed(timeout=120)
    got = {kh.finding_tuple(f) for f in pipeline.read()}
    assert got == {kh.finding_tuple(f) for f in expected}
    assert worker.running(), worker.tail()
