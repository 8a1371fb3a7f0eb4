"""`consentwatch ledger run` against a real broker: `kill -9` loses nothing, doubles nothing.

Findings and amendments are produced (as the worker writes them: single-object Avro,
keyed by id) to a fresh topic prefix, some twice, plus a record that is not Avro.
`ledger run` runs as a subprocess with small batches and is killed with SIGKILL twice
while it works, then restarted and stopped with SIGTERM. At each kill, every record
below the group's committed offsets must already be in the ledger (offsets are never
committed ahead of the ledger); at the end the ledger holds every finding and
amendment exactly once, and a signed checkpoint of the whole tree.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import rfc8785

from streams.evidence.checkpoint import verify_checkpoint
from streams.evidence.keys import generate_keypair, load_public_key
from streams.evidence.ledger import open_ledger
from streams.evidence.merkle import leaf_hash, root_hash
from streams.kafka.connection import KafkaConnection
from streams.kafka.kafka_io import create_topics
from streams.kafka.topics import TopicNames
from streams.model.findings import Amendment, Finding, amendment_id, finding_id
from streams.privacy.pseudonymise import default_pseudonymiser
from streams.serde.wire import encode_output
from tests.kafka_helpers import _committed, wait_until
from tests.postgres_fixture import fresh_database

pytestmark = pytest.mark.kafka

FINDINGS = 3_000
AMENDMENTS = 300
T0 = 1_772_445_600_000


def make_findings(count: int) -> list[Finding]:
    result = []
    for n in range(count):
        trigger = f"e{n:06d}"
        rule = "enrichment-without-consent" if n % 2 else "notice-missing"
        result.append(Finding(
            finding_id=finding_id(rule, trigger), rule=rule, severity="HIGH",
            subject_id=f"u-{n % 50}", account_id=f"acct{n % 3}", meeting_id=f"m{n % 9}",
            provider="linkedin_sales_navigator", trigger_event_id=trigger,
            evidence_event_ids=(trigger,), occurred_at=T0 + n * 1000,
            detected_at=T0 + n * 1000 + 60_000, explanation=f"finding {n}"))
    return result


def make_amendments(findings: list[Finding]) -> list[Amendment]:
    return [Amendment(
        amendment_id=amendment_id(f.finding_id, "late-1", "RETRACTED"), kind="RETRACTED",
        finding_id=f.finding_id, rule=f.rule, subject_id=f.subject_id,
        trigger_event_id=f.trigger_event_id, late_event_id="late-1",
        evidence_event_ids=("late-1",), occurred_at=f.occurred_at,
        detected_at=f.detected_at + 1, explanation="retracted")
        for f in findings[:AMENDMENTS]]


async def produce(connection: KafkaConnection, names: TopicNames,
                  messages: list[tuple[str, bytes, bytes]]) -> dict[tuple[str, int, int], bytes]:
    """Send (topic, key, value); returns (topic, partition, offset) -> key."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(acks="all", linger_ms=5, **connection.aiokafka_options())
    await producer.start()
    try:
        futures = [(key, await producer.send(topic, value, key=key))
                   for topic, key, value in messages]
        placed = {}
        for key, future in futures:
            meta = await future
            placed[(meta.topic, meta.partition, meta.offset)] = key
        return placed
    finally:
        await producer.stop()


def ledger_ids(url: str) -> list[str]:
    with open_ledger(url) as store:
        return ([e.entry_id for e in store.entries(kind="finding")]
                + [e.entry_id for e in store.entries(kind="amendment")])


def start_run(url: str, bootstrap: str, prefix: str, key: Path,
              log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli.app", "ledger", "run", "--ledger", url,
             "--broker", bootstrap, "--topic-prefix", prefix, "--private-key", str(key),
             "--batch-size", "20", "--checkpoint-interval", "0.2"],
            stdout=subprocess.DEVNULL, stderr=err)


def wait_for_size(url: str, at_least: int, process: subprocess.Popen[bytes],
                  timeout: float = 40) -> int:
    """Poll the ledger (a reader beside the writer) until it holds `at_least` entries."""
    with open_ledger(url) as store:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert process.poll() is None, "ledger run exited early"
            size = store.size()
            if size >= at_least:
                return size
            time.sleep(0.02)
    raise AssertionError(f"the ledger did not reach {at_least} entries in {timeout} s")


def stop_and_check(process: subprocess.Popen[bytes], url: str, log: Path, expected: set[str],
                   pub_path: Path) -> None:
    """Wait for the whole topics and a checkpoint of every entry, SIGTERM, then: each id
    once, and a checkpoint of it all."""
    wait_for_size(url, len(expected), process)
    key = load_public_key(pub_path)

    def checkpointed() -> bool:  # the run signs a last checkpoint once the topics go quiet
        with open_ledger(url) as store:
            note = store.latest_checkpoint()
        return note is not None and verify_checkpoint(note, key).size >= len(expected)

    wait_until(checkpointed, timeout=40, interval=0.05, what="a checkpoint of every entry")
    # A checkpoint of every entry can come before the last duplicates are read (a poll that
    # returns nothing mid-topic signs one), so wait for the whole topics too.
    wait_until(lambda: "caught up" in log.read_text(), timeout=40, interval=0.05,
               what="the run to read the topics to their end")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    text = log.read_text()
    assert "stopped:" in text and "skipped" in text and "junk" not in text
    ids = ledger_ids(url)
    assert len(ids) == len(set(ids)) == len(expected)
    assert set(ids) == expected
    with open_ledger(url) as store:
        assert store.size() == len(expected)
        note = store.latest_checkpoint()
        assert note is not None
        checkpoint = verify_checkpoint(note, load_public_key(pub_path))
        assert (checkpoint.size, checkpoint.root) == (len(expected),
                                                      root_hash(store.leaf_hashes()))


def topics_with_duplicates(bootstrap: str, findings: list[Finding],
                           ) -> tuple[TopicNames, dict[tuple[str, int, int], bytes], set[str]]:
    """A fresh prefix whose findings and amendments topics hold `findings` and amendments
    of the first AMENDMENTS, some twice, and one record that is not Avro."""
    names = TopicNames(f"ledger-{uuid.uuid4().hex[:10]}")
    connection = KafkaConnection.resolve(bootstrap)
    asyncio.run(create_topics(connection, names, partitions=3, replication=1))
    amendments = make_amendments(findings)
    seal = default_pseudonymiser()
    messages = [(names.findings, f.finding_id.encode(), encode_output(seal.finding(f)))
                for f in findings]
    messages += [(names.amendments, a.amendment_id.encode(), encode_output(seal.amendment(a)))
                 for a in amendments]
    # Delivered twice: what a worker restart does. And one record that is not Avro.
    messages += messages[100:700:3] + messages[-50:]
    messages.append((names.findings, b"junk", b"not an avro record"))
    placed = asyncio.run(produce(connection, names, messages))
    expected = {f.finding_id for f in findings} | {a.amendment_id for a in amendments}
    return names, placed, expected


def test_kill_9_mid_batch_loses_nothing_and_doubles_nothing(kafka_bootstrap: str,
                                                             tmp_path: Path) -> None:
    findings = make_findings(FINDINGS)
    names, placed, expected = topics_with_duplicates(kafka_bootstrap, findings)
    key_path, pub_path = generate_keypair(tmp_path / "keys")
    url = str(tmp_path / "ledger.db")
    log = tmp_path / "ledger-run.log"
    connection = KafkaConnection.resolve(kafka_bootstrap)

    for fraction in (0.25, 0.6):  # two kill -9 while it works
        process = start_run(url, kafka_bootstrap, names.prefix, key_path, log)
        wait_for_size(url, int(len(expected) * fraction), process)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        stored = set(ledger_ids(url))
        with open_ledger(url) as store:
            group = f"{names.prefix}.ledger.{store.ledger_id()}"
        committed = asyncio.run(_committed(connection, group))
        below = {key.decode() for (topic, partition, offset), key in placed.items()
                 if offset < committed.get((topic, partition), 0) and key != b"junk"}
        assert below <= stored, "an offset was committed before its record was stored"
        assert len(stored) < len(expected), "killed too late to test anything"

    process = start_run(url, kafka_bootstrap, names.prefix, key_path, log)
    stop_and_check(process, url, log, expected, pub_path)
    with open_ledger(url) as store:
        # The leaf of a finding read from Kafka is the canonical JSON of the finding, as
        # `ledger load` of a replay file stores it.
        by_id = {f.finding_id: f for f in findings}
        for entry in store.entries(kind="finding", rule="notice-missing", account="acct1"):
            assert entry.leaf == rfc8785.dumps(by_id[entry.entry_id].to_dict())
            assert leaf_hash(entry.leaf) == store.leaf_hashes(entry.index + 1)[-1]


def test_ledger_run_on_postgresql(kafka_bootstrap: str, postgres_url: str,
                                  tmp_path: Path) -> None:
    """The same consumer into a PostgreSQL ledger: duplicates stored once, a clean stop."""
    names, _, expected = topics_with_duplicates(kafka_bootstrap, make_findings(800))
    key_path, pub_path = generate_keypair(tmp_path / "keys")
    log = tmp_path / "ledger-run.log"
    with fresh_database(postgres_url) as url:
        process = start_run(url, kafka_bootstrap, names.prefix, key_path, log)
        try:
            stop_and_check(process, url, log, expected, pub_path)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def run_until_stored(url: str, bootstrap: str, prefix: str, key: Path, log: Path,
                     expected: set[str], pub_path: Path) -> str:
    """`ledger run` until the ledger holds `expected`, then SIGTERM; returns its stderr."""
    process = start_run(url, bootstrap, prefix, key, log)
    try:
        stop_and_check(process, url, log, expected, pub_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return log.read_text()


def test_a_new_ledger_reads_the_topics_from_the_beginning(kafka_bootstrap: str,
                                                          tmp_path: Path) -> None:
    """Ledger A consumes everything; ledger B, a new file run afterwards on the same
    topics, stores everything too: each ledger keeps its own position."""
    names, placed, expected = topics_with_duplicates(kafka_bootstrap, make_findings(400))
    on_topic = {topic: sum(1 for (t, _, _), key in placed.items() if t == topic
                           and key != b"junk") for topic in (names.findings, names.amendments)}
    key_path, pub_path = generate_keypair(tmp_path / "keys")
    log_a = run_until_stored(str(tmp_path / "a.db"), kafka_bootstrap, names.prefix, key_path,
                             tmp_path / "a.log", expected, pub_path)
    log_b = run_until_stored(str(tmp_path / "b.db"), kafka_bootstrap, names.prefix, key_path,
                             tmp_path / "b.log", expected, pub_path)
    for log in (log_a, log_b):
        caught_up = [line for line in log.splitlines() if "caught up" in line]
        assert caught_up == [f"consentwatch: caught up {on_topic[names.findings]} findings, "
                             f"{on_topic[names.amendments]} amendments from the topics "
                             f"({len(expected)} new to this ledger)"], log
    with open_ledger(str(tmp_path / "a.db")) as a, open_ledger(str(tmp_path / "b.db")) as b:
        assert a.ledger_id() != b.ledger_id()
