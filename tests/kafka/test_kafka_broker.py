"""The local Kafka broker of deploy/kafka/kafka.sh: start, status, a real round trip, stop.

This test starts its own broker in a temporary dir on a free port, so it does not depend
on (or disturb) the session broker the other Kafka tests share.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():
    # kafka-python loads its protocol schemas with deprecated importlib.resources calls.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"
MESSAGES = 100
PARTITIONS = 4


def kafka_sh(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    # The first run fetches the jars with Maven: allow for that in the timeout.
    return subprocess.run(
        [str(KAFKA_SH), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def alive(pid: int) -> bool:
    """Running, that is: a zombie (exited, not yet reaped by init, which can take a
    second or two here) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(") ")[2][:1] != "Z"


def create_topic(bootstrap: str, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="broker-test")
    try:
        admin.create_topics(
            [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
            timeout_ms=30_000,
        )
        assert topic in admin.list_topics()
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, messages: dict[bytes, bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in messages.items()]
        producer.flush(timeout=30)
        partitions = {f.get(timeout=30).partition for f in futures}
    finally:
        producer.close()
    assert partitions <= set(range(PARTITIONS))


def consume(bootstrap: str, topic: str, count: int) -> tuple[dict[bytes, bytes], int]:
    """Read `count` records from the start of `topic` in a new group; commit; return the
    records by key and the group's committed offsets summed over the partitions."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    received: dict[bytes, bytes] = {}
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(received) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    received[record.key] = record.value
        consumer.commit()
        committed = sum(
            consumer.committed(TopicPartition(topic, p)) or 0 for p in range(PARTITIONS)
        )
    finally:
        consumer.close()
    return received, committed


@pytest.mark.kafka
def test_broker_starts_serves_100_messages_and_stops(tmp_path: Path) -> None:
    data_dir = tmp_path / "kafka"
    started = kafka_sh("start", "--dir", str(data_dir))
    assert started.returncode == 0, started.stderr
    bootstrap = started.stdout.strip()
    # stdout is exactly the address, and the same address is in DIR/bootstrap.
    assert re.fullmatch(r"127\.0\.0\.1:\d+\n", started.stdout), started.stdout
    assert (data_dir / "bootstrap").read_text().strip() == bootstrap
    pid = int((data_dir / "kafka.pid").read_text())
    # A new consumer group starts at once (KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS unset).
    assert "\ngroup.initial.rebalance.delay.ms=0\n" in (
        data_dir / "server.properties").read_text()
    try:
        status = kafka_sh("status", "--dir", str(data_dir), timeout=60)
        assert status.returncode == 0, status.stderr
        assert status.stdout.strip() == bootstrap

        # Starting again from the same dir finds the running broker.
        again = kafka_sh("start", "--dir", str(data_dir), timeout=120)
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == bootstrap
        assert int((data_dir / "kafka.pid").read_text()) == pid

        topic = f"broker-test-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, topic)
        sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(MESSAGES)}
        produce(bootstrap, topic, sent)
        received, committed = consume(bootstrap, topic, MESSAGES)
        assert received == sent
        assert committed == MESSAGES
    finally:
        stopped = kafka_sh("stop", "--dir", str(data_dir), timeout=90)

    assert stopped.returncode == 0, stopped.stderr
    assert not alive(pid), f"broker pid {pid} still running after stop"
    assert not (data_dir / "kafka.pid").exists()

    down = kafka_sh("status", "--dir", str(data_dir), timeout=60)
    assert down.returncode == 3
    assert down.stdout == ""
    # Stopping what is not running is fine.
    assert kafka_sh("stop", "--dir", str(data_dir), timeout=60).returncode == 0


@pytest.mark.parametrize("value", ["3s", "2147483648", "-1"])
def test_a_group_start_delay_that_is_not_a_number_of_ms_is_one_line_and_no_broker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", value)
    started = kafka_sh("start", "--dir", str(tmp_path / "kafka"), timeout=60)
    assert started.returncode == 1
    assert started.stdout == ""
    assert started.stderr.strip().splitlines() == [
        "[kafka.sh] error: KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS wants a number of ms "
        f"(0 to 2147483647), got '{value}'"]
    assert not (tmp_path / "kafka").exists()
    # A cluster's node started again writes its configuration too.
    node = kafka_sh("start-node", "1", "--dir", str(tmp_path / "kafka"), timeout=60)
    assert (node.returncode, node.stderr) == (1, started.stderr)
    # Stopping is not refused for it: there is nothing to stop.
    assert kafka_sh("stop", "--dir", str(tmp_path / "kafka"), timeout=60).returncode == 0
