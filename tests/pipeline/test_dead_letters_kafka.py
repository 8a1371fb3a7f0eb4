"""`consentwatch dead-letters resend` against a real broker and worker.

An event whose Kafka record carries a producer clock an hour behind is dead-lettered
(`future_timestamp`, a transient cause); once re-sent (with a fresh record timestamp)
the worker accepts it and decides it, and `findings` (with its filters) shows the
findings `replay` gives for the event.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from pathlib import Path

import orjson
import pytest

import tests.kafka_helpers as kh
from streams.kafka.kafka_io import event_key
from streams.model.validate import event_from_record
from streams.serde.wire import SingleObjectFraming
from tests.builders import requested

pytestmark = pytest.mark.kafka


def send_with_timestamp(bootstrap: str, topic: str, value: bytes, key: bytes | None,
                        timestamp_ms: int) -> None:
    async def run() -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key, timestamp_ms=timestamp_ms)
        finally:
            await producer.stop()

    asyncio.run(run())


def test_a_dead_letter_of_a_transient_cause_is_resent_and_decided(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    now = time.time_ns() // 1_000_000
    event = event_from_record(requested(event_id=f"r-{uuid.uuid4().hex[:8]}")
                              | {"occurred_at": now + 120_000})
    expected = kh.replay_findings([event])
    assert expected, "the event alone must raise findings"
    pipeline = kh.Pipeline(kafka_bootstrap, f"t-resend-{uuid.uuid4().hex[:8]}")
    pipeline.create_topics()
    names = pipeline.names
    topic = names.inputs[event.TYPE]
    workers = kh.Workers(kafka_bootstrap, tmp_path)
    try:
        worker = workers.start(pipeline.prefix)
        pipeline.wait_assigned(timeout=180)
        # The producer's clock an hour behind: the event looks 62 minutes in the future.
        send_with_timestamp(kafka_bootstrap, topic, SingleObjectFraming().encode(event),
                            event_key(event), now - 3_600_000)
        pipeline.send_raw(topic, b"not avro at all", b"k")  # poison: cannot be re-sent
        letters = kh.wait_until(lambda: len(found := pipeline.read("dead_letters")) == 2
                                and found, timeout=120, what="two dead letters",
                                on_timeout=worker.tail)
        assert sorted(letter["reason_code"] for letter in letters) == [
            "bad_marker", "future_timestamp"]
        args = ("--broker", kafka_bootstrap, "--topic-prefix", pipeline.prefix)

        everything = kh.cli("dead-letters", "resend", *args, "--dry-run")
        assert everything.returncode == 1, everything.stderr.decode()
        assert everything.stdout.strip(), everything.stderr.decode()
        lines = sorted(everything.stdout.decode().splitlines())
        assert lines[0].startswith(f"cannot resend {topic}[") and "(bad_marker)" in lines[0]
        assert "its bytes do not decode (bad_marker)" in lines[0]
        assert lines[1].startswith(f"would resend {topic}[") and lines[1].endswith(
            f"(future_timestamp) to {topic}")
        assert pipeline.read() == []  # a dry run sends nothing; the event was never seen

        done = kh.cli("dead-letters", "resend", *args, "--reason", "future_timestamp",
                      "--since", str(now - 60_000))
        assert done.returncode == 0, done.stderr
        assert b"1 dead letters selected, 1 re-sent" in done.stderr
        pipeline.wait_consumed(timeout=180)
        pipeline.end_of_input()
        got = kh.wait_until(lambda: len(found := pipeline.read()) >= len(expected) and found,
                            timeout=120, what="the findings", on_timeout=worker.tail)
        assert sorted(f["finding_id"] for f in got) == sorted(f["finding_id"]
                                                              for f in expected)
        assert len(pipeline.read("dead_letters")) == 2  # accepted this time
        rule = expected[0]["rule"]
        filtered = kh.cli("findings", *args, "--rule", rule, "--from", str(now),
                          "--subject", event.subject_id)
        assert [orjson.loads(line)["rule"] for line in filtered.stdout.splitlines()] == [rule]
        none = kh.cli("findings", *args, "--to", str(now))
        assert none.returncode == 0 and none.stdout == b""
    finally:
        workers.stop_all()


def test_a_trigger_beyond_the_horizon_is_a_dead_letter_of_the_worker(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """A request three days behind the watermark: the worker does not decide it on pruned
    state but dead-letters it (`beyond_horizon`), its record's bytes kept."""
    now = time.time_ns() // 1_000_000
    subject = f"u-{uuid.uuid4().hex[:8]}"
    recent = event_from_record(requested(event_id=f"r-{uuid.uuid4().hex[:8]}",
                                         subject_id=subject) | {"occurred_at": now - 60_000})
    old = event_from_record(requested(event_id=f"r-{uuid.uuid4().hex[:8]}",
                                      subject_id=subject) | {"occurred_at": now - 3 * 86_400_000})
    pipeline = kh.Pipeline(kafka_bootstrap, f"t-horizon-{uuid.uuid4().hex[:8]}")
    pipeline.create_topics()
    workers = kh.Workers(kafka_bootstrap, tmp_path)
    try:
        worker = workers.start(pipeline.prefix, extra_args=("--idle-timeout", "1",
                                                            "--allowed-lateness", "1"))
        pipeline.wait_assigned(timeout=180)
        pipeline.send_events([recent])
        # Its past rules decided: the watermark has passed it (the other inputs idle).
        kh.wait_until(lambda: any(f["trigger_event_id"] == recent.event_id
                                  for f in pipeline.read()), timeout=120,
                      what="the recent request's finding", on_timeout=worker.tail)
        topic = pipeline.names.inputs[old.TYPE]
        payload = SingleObjectFraming().encode(old)
        pipeline.send_raw(topic, payload, event_key(old))
        (letter,) = kh.wait_until(lambda: pipeline.read("dead_letters"), timeout=120,
                                  what="the dead letter", on_timeout=worker.tail)
        assert letter["reason_code"] == "beyond_horizon"
        assert letter["source"] == topic
        assert base64.b64decode(letter["payload"]) == payload
        assert not [f for f in pipeline.read() if f["trigger_event_id"] == old.event_id]
    finally:
        workers.stop_all()
