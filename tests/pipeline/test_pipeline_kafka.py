"""The Kafka pipeline end to end: `consentwatch worker` on a real broker.

Each test has its own topic prefix (so its own topics and consumer group: the spec's
examples reuse event ids), its own data dirs and free web ports. A finite input never
pushes a partition's watermark past its last deadlines, so once the worker has consumed
everything (its group's committed offsets reach the end of the input and correlate
topics) a test sends end-of-input control records (streams/pipeline/control.py), one on
every input partition, so every correlate partition decides everything it has read.
"""

from __future__ import annotations

import base64
import hashlib
import io
import time
import uuid
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest

from streams.engine import EngineParams
from streams.errors import InvalidEvent
from streams.model.events import Event, FeatureToggled
from streams.model.findings import Amendment, DeadLetter, Finding
from streams.model.validate import event_from_record
from streams.serde.avro import load_schema
from streams.serde.sources import read_events
from streams.serde.wire import SINGLE_OBJECT_MARKER, SingleObjectFraming, fingerprint_of
from tests import kafka_helpers as kh
from tests.conftest import example_cases

pytestmark = pytest.mark.kafka

DAY_MS = kh.DAY_MS
FRAMING = SingleObjectFraming()


# -- fixtures --------------------------------------------------------------------------




def new_pipeline(bootstrap: str, name: str) -> kh.Pipeline:
    pipeline = kh.Pipeline(bootstrap, f"t-{name}-{uuid.uuid4().hex[:8]}")
    pipeline.create_topics()
    return pipeline


def wait_correlated(pipeline: kh.Pipeline, events: list[Event], share: float, timeout: float,
                    on_timeout: Any) -> None:
    """Wait until the correlate stage has consumed (and committed) `share` of the
    stream: of the correlate topic, which holds every event (toggles once per
    partition) when the inputs are repartitioned; of the inputs, which the correlate
    partitions read themselves otherwise."""
    names = pipeline.names
    if kh.repartition_inputs():
        toggles = sum(1 for event in events if isinstance(event, FeatureToggled))
        correlate_records = len(events) + (kh.PARTITIONS - 1) * toggles
        pipeline.wait_committed(names.correlate, int(correlate_records * share),
                                timeout=timeout, on_timeout=on_timeout)
        return
    kh.wait_until(lambda: sum(pipeline.committed_total(topic) for topic in
                              names.inputs.values()) >= int(len(events) * share),
                  timeout=timeout, interval=0.2, what=f"{share:.0%} of the inputs consumed",
                  on_timeout=on_timeout)


# -- checks shared by the tests ---------------------------------------------------------


def check_ids(findings: list[dict[str, Any]]) -> None:
    for finding in findings:
        expected = hashlib.sha256(
            f"{finding['rule']}|{finding['trigger_event_id']}".encode()).hexdigest()
        assert finding["finding_id"] == expected, finding


def check_copies_agree(findings: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Copies of a finding (a re-send after a restart) agree on all but detected_at;
    returns one copy per finding id."""
    by_id: dict[str, dict[str, Any]] = {}
    for finding in findings:
        core = {k: v for k, v in finding.items() if k != "detected_at"}
        first = by_id.setdefault(finding["finding_id"], core)
        assert first == core, f"copies of {finding['finding_id']} disagree:\n{first}\n{core}"
    return by_id


def compare(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """The same set of (rule, subject, trigger, evidence), with a readable difference."""
    got_set = {kh.finding_tuple(f) for f in got}
    expected_set = {kh.finding_tuple(f) for f in expected}
    missing = expected_set - got_set
    extra = got_set - expected_set
    assert not missing and not extra, (
        f"{len(expected_set)} expected, {len(got_set)} on the findings topic: "
        f"{len(missing)} missing (e.g. {sorted(missing)[:3]}), "
        f"{len(extra)} extra (e.g. {sorted(extra)[:3]})")


def check_worker_healthy(worker: kh.Worker) -> None:
    assert worker.running(), f"the worker exited:\n{worker.tail()}"
    log = worker.log()
    assert "Crashed reason" not in log, f"an agent crashed:\n{worker.tail(80)}"
    assert "Traceback" not in log, f"the worker logged a traceback:\n{worker.tail(80)}"


def events_of(path: Path) -> list[Event]:
    with open(path, "rb") as stream:
        items = [item for _, item in read_events(stream, str(path))]
    events = [item for item in items if not isinstance(item, DeadLetter)]
    assert len(events) == len(items), f"invalid lines in {path}"
    return events


# -- 1. the spec's examples -------------------------------------------------------------


@pytest.mark.parametrize("case", example_cases(), ids=lambda p: p.name)
def test_examples_through_kafka_give_the_findings_of_replay(
        case: Path, kafka_bootstrap: str, workers: kh.Workers, tmp_path: Path) -> None:
    # The case moved to recent event time (see kh.recent: `produce` makes occurred_at the
    # Kafka timestamp, and the broker deletes input records older than 7 days); the
    # shift changes none of the case's findings.
    original = events_of(case / "events.jsonl")
    moved = tmp_path / "events.jsonl"
    kh.write_jsonl(moved, kh.recent(original))
    expected = replay_cli(moved)
    assert {kh.finding_tuple(f) for f in expected} == {
        kh.finding_tuple(f) for f in replay_cli(case / "events.jsonl")}

    pipeline = new_pipeline(kafka_bootstrap, case.name)
    worker = workers.start(pipeline.prefix)
    pipeline.wait_assigned(timeout=120)
    pipeline.produce(moved)
    pipeline.wait_consumed(timeout=180)
    pipeline.end_of_input()
    pipeline.wait_consumed(timeout=180)

    got = pipeline.read()
    check_ids(got)
    check_copies_agree(got)
    compare(got, expected)
    check_worker_healthy(worker)


def replay_cli(path: Path) -> list[dict[str, Any]]:
    replayed = kh.cli("replay", str(path), "--quiet")
    assert replayed.returncode == 0, replayed.stderr.decode()
    return [orjson.loads(line) for line in replayed.stdout.splitlines() if line.strip()]


# -- 2. poison records ------------------------------------------------------------------


def _joined(i: int, n: int, at: int) -> dict[str, Any]:
    return {"type": "ParticipantJoined", "event_id": f"p-j{n}-{i}", "occurred_at": at,
            "account_id": "acct-p", "meeting_id": "m-p", "subject_id": f"u-p{i}",
            "display_name": "Night Owl", "email": None, "is_guest": False}


def _requested(i: int, n: int, at: int) -> dict[str, Any]:
    return {"type": "EnrichmentRequested", "event_id": f"p-r{n}-{i}", "occurred_at": at,
            "account_id": "acct-p", "meeting_id": "m-p", "subject_id": f"u-p{i}",
            "provider": "linkedin_sales_navigator",
            "data_use": "third_party_sharing.enrichment", "data_sent": ["user.name"],
            "trigger": "AUTOMATIC", "requested_by": None}


def _matched(i: int, n: int, at: int) -> dict[str, Any]:
    return {"type": "EnrichmentMatched", "event_id": f"p-m{n}-{i}", "occurred_at": at,
            "account_id": "acct-p", "meeting_id": "m-p", "subject_id": f"u-p{i}",
            "provider": "linkedin_sales_navigator", "request_event_id": f"p-r{n}-{i}",
            "matched": True, "profile_name": "Zoë Müller", "data_returned": ["user.name"]}


def _viewed(i: int, n: int, at: int) -> dict[str, Any]:
    return {"type": "ProfileViewed", "event_id": f"p-v{n}-{i}", "occurred_at": at,
            "account_id": "acct-p", "meeting_id": "m-p", "subject_id": f"u-p{i}",
            "viewer_id": "u-viewer", "provider": "linkedin_sales_navigator",
            "data_disclosed": ["user.name", "user.workplace"]}


def poison_payloads() -> dict[str, bytes]:
    """One record of each kind of poison, each checked against the decoder first."""
    valid = FRAMING.encode(event_from_record(_joined(9, 9, 1_772_445_600_000)))
    schema = load_schema("ParticipantJoined")
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), {
        "event_id": "", "occurred_at": 1_772_445_600_000, "account_id": "acct-p",
        "meeting_id": "m-p", "subject_id": "u-p0", "display_name": "Night Owl",
        "email": None, "is_guest": False})
    payloads = {
        "bad_marker": b'{"type": "ParticipantJoined", "event_id": "json-not-avro"}',
        "unknown_fingerprint": SINGLE_OBJECT_MARKER + b"\x01" * 8 + valid[10:],
        "truncated_avro": valid[:14],
        "trailing_bytes": valid + b"\x00\x00",
        "invalid_field": SINGLE_OBJECT_MARKER + fingerprint_of(schema) + body.getvalue(),
    }
    for code, payload in payloads.items():
        with pytest.raises(InvalidEvent) as info:
            FRAMING.decode(payload)
        assert info.value.code == code, (code, info.value)
    return payloads


def test_poison_records_go_to_the_dead_letter_topic(kafka_bootstrap: str,
                                                    workers: kh.Workers) -> None:
    pipeline = new_pipeline(kafka_bootstrap, "poison")
    topics = pipeline.names.inputs
    base = (time.time_ns() // 1_000_000 - 3 * DAY_MS) // 60_000 * 60_000
    # Five subjects; each has two events on each of four input topics (all within 10 s
    # of event time, so arrival order across topics cannot make any of them late).
    builders = {"ParticipantJoined": _joined, "EnrichmentRequested": _requested,
                "EnrichmentMatched": _matched, "ProfileViewed": _viewed}
    offsets = {"ParticipantJoined": 0, "EnrichmentRequested": 1000,
               "EnrichmentMatched": 2000, "ProfileViewed": 3000}
    # (subject, event type) -> the poison that goes between that subject's two events
    # of that type, on the same topic with the same key (so the same partition).
    poison_at = {(0, "ParticipantJoined"): "bad_marker",
                 (1, "EnrichmentRequested"): "unknown_fingerprint",
                 (2, "EnrichmentMatched"): "truncated_avro",
                 (3, "ProfileViewed"): "trailing_bytes",
                 (4, "ParticipantJoined"): "invalid_field"}
    payloads = poison_payloads()

    records: list[tuple[str, bytes, bytes | None]] = []
    valid: list[Event] = []
    poison_index: dict[str, int] = {}
    for i in range(5):
        key = f"u-p{i}".encode()
        for kind, build in builders.items():
            for n in (1, 2):
                event = event_from_record(build(i, n, base + i * 100 + offsets[kind] + n * 10))
                valid.append(event)
                records.append((topics[kind], FRAMING.encode(event), key))
                if n == 1 and (i, kind) in poison_at:
                    code = poison_at[(i, kind)]
                    poison_index[code] = len(records)
                    records.append((topics[kind], payloads[code], key))
    expected = kh.replay_findings(valid)
    assert expected, "the valid records must raise findings of their own"

    worker = workers.start(pipeline.prefix)
    pipeline.wait_assigned(timeout=120)
    placed = kh.send_raw_many(kafka_bootstrap, records)
    pipeline.wait_consumed(timeout=180)
    pipeline.end_of_input()
    pipeline.wait_consumed(timeout=180)

    letters = pipeline.read("dead_letters")
    by_code = {letter["reason_code"]: letter for letter in letters}
    assert len(letters) == len(payloads), letters
    assert set(by_code) == set(payloads)
    for code, index in poison_index.items():
        topic, payload, _ = records[index]
        partition, offset = placed[index]
        letter = by_code[code]
        assert letter["source"] == topic
        assert letter["partition"] == partition
        assert letter["position"] == offset
        assert base64.b64decode(letter["payload"]) == payload
        assert letter["reason"]
        # The valid records just before and after it share its partition.
        assert placed[index - 1] == (partition, offset - 1)
        assert placed[index + 1] == (partition, offset + 1)

    got = pipeline.read()
    check_ids(got)
    compare(got, expected)
    check_worker_healthy(worker)


# -- 3. kill -9 in the middle of 200,000 events -------------------------------------------

STREAM_EVENTS = 200_000
STREAM_SUBJECTS = 20_000


def check_stream_findings(pipeline: kh.Pipeline, expected: list[dict[str, Any]],
                          workers: kh.Workers) -> int:
    """Exactly the expected findings, every copy agreeing; no event was late (no
    amendment), none dead-lettered; no agent crash in any worker's log. Returns how many
    finding records (copies included) are on the topic."""
    want = len(expected)
    # Every finding is out once the group committed past the end of input (Faust flushes
    # before it commits); the count of distinct ids must also have stopped there.
    kh.wait_until(lambda: len(set(pipeline.finding_keys())) >= want, timeout=60,
                  what=f"{want} distinct finding ids",
                  on_timeout=lambda: f"{len(set(pipeline.finding_keys()))} of {want}")
    got = pipeline.read()
    check_ids(got)
    unique = check_copies_agree(got)
    compare(list(unique.values()), expected)
    assert len(unique) == want
    assert pipeline.read("amendments") == []
    assert pipeline.read("dead_letters") == []
    for each in workers.started:
        assert "Crashed reason" not in each.log(), each.tail(80)
    return len(got)


def correlate_total(pipeline: kh.Pipeline) -> int:
    return sum(pipeline.end_offsets([pipeline.names.correlate]).values())


def test_kill_9_mid_stream_then_restart_loses_no_finding(kafka_bootstrap: str,
                                                        workers: kh.Workers,
                                                        tmp_path: Path) -> None:
    started = time.monotonic()

    def note(text: str) -> None:  # progress, shown with -s
        print(f"{time.monotonic() - started:6.1f}s {text}", flush=True)

    events = kh.mix(STREAM_EVENTS, STREAM_SUBJECTS, seed=11)
    expected = kh.replay_findings(events)
    pipeline = new_pipeline(kafka_bootstrap, "kill9")
    names = pipeline.names
    stream = tmp_path / "stream.jsonl"
    kh.write_jsonl(stream, events)
    pipeline.produce(stream)
    note(f"{len(events)} events produced; {len(expected)} findings expected")

    data_dir = tmp_path / "worker-data"
    worker = workers.start(pipeline.prefix, data_dir=data_dir, name="first")

    # kill -9 mid-stream, once findings are coming out (so some are decided but not yet
    # sent, or sent but not committed), and restart on the same data dir: RocksDB as
    # the killed process left it, the rest from the changelog.
    kh.wait_until(lambda: sum(pipeline.end_offsets([names.findings]).values()) > 0, 400,
                  interval=0.2, what="the first findings", on_timeout=worker.tail)
    check_worker_healthy(worker)
    behind = pipeline.lag([*names.inputs.values(), names.correlate])
    worker.kill()
    assert behind > 0, "the worker had consumed everything before the kill"
    note(f"kill -9 at correlate offset {pipeline.committed_total(names.correlate)}, "
         f"{len(pipeline.finding_keys())} finding records out")
    worker = workers.start(pipeline.prefix, data_dir=data_dir, name="restart")

    # Stopped at three quarters, and restarted on an empty data dir: the table can only
    # come back from its changelog topic (the worker's log says so at info level).
    wait_correlated(pipeline, events, 3 / 4, timeout=400, on_timeout=worker.tail)
    check_worker_healthy(worker)
    assert worker.stop(timeout=120) is not None
    note(f"stopped at correlate offset {pipeline.committed_total(names.correlate)}")
    fresh = workers.start(pipeline.prefix, data_dir=tmp_path / "fresh-data", name="fresh",
                          extra_args=("--log-level", "info"))

    pipeline.wait_consumed(timeout=400)
    note("all consumed")
    pipeline.end_of_input()
    pipeline.wait_consumed(timeout=120)
    records = check_stream_findings(pipeline, expected, workers)
    note(f"{records} finding records for {len(expected)} findings")
    assert "Restoring state from changelog topics" in fresh.log(), fresh.tail(80)
    assert "Done reading from changelog topics" in fresh.log(), fresh.tail(80)
    check_worker_healthy(fresh)


# -- 4. two workers, one leaves -----------------------------------------------------------


@pytest.mark.parametrize("lateness", [
    # The default 30 s: the spec's pipeline as deployed. Each correlate partition gets
    # records from both workers' route stages, in no common order; its watermark is the
    # minimum over the input partitions (watermarks.py), so none of them is late.
    pytest.param(None, id="default-lateness"),
    # A day: nothing is late and nothing decided before the end of input, whatever the order
    # in which the two route stages hand events over; what is left to check is the
    # hand-over itself (state from the changelog, offsets from the group).
    pytest.param(86_400, id="lateness-1-day"),
])
def test_two_workers_share_partitions_and_one_leaves(lateness: int | None,
                                                     kafka_bootstrap: str,
                                                     workers: kh.Workers,
                                                     tmp_path: Path) -> None:
    events = kh.mix(20_000, 2_000, seed=23)
    expected = kh.replay_findings(events)
    pipeline = new_pipeline(kafka_bootstrap, "pair")
    args = ("--allowed-lateness", str(lateness)) if lateness else ()
    first = workers.start(pipeline.prefix, name="a", extra_args=args)
    second = workers.start(pipeline.prefix, name="b", extra_args=args)
    pipeline.wait_assigned(timeout=180, members=2)  # each holds correlate partitions

    stream = tmp_path / "stream.jsonl"
    kh.write_jsonl(stream, events)
    pipeline.produce(stream)
    # Both are busy with the stream; half way through, one of them leaves.
    wait_correlated(pipeline, events, 1 / 2, timeout=240, on_timeout=first.tail)
    check_worker_healthy(first)
    assert first.stop(timeout=60) is not None
    owners = pipeline.wait_assigned(timeout=120, members=1)
    assert list(owners.values()) == [{0, 1, 2, 3}]

    pipeline.wait_consumed(timeout=240)
    pipeline.end_of_input()
    pipeline.wait_consumed(timeout=120)
    check_stream_findings(pipeline, expected, workers)
    check_worker_healthy(second)


# -- 5. an idle pipeline still decides --------------------------------------------------


def test_idle_inputs_advance_with_the_wall_clock_and_notice_deadlines_fire(
        kafka_bootstrap: str, workers: kh.Workers) -> None:
    """No end-of-input record: once every input is quiet for the idle timeout, the watermarks move
    with the wall clock, and both a past rule and a notice rule (grace 2 s) decide."""
    events, expected = _a_request_just_now("idle")
    pipeline = new_pipeline(kafka_bootstrap, "idle")
    worker = workers.start(pipeline.prefix, extra_args=_IDLE_ARGS)
    pipeline.wait_assigned(timeout=180)
    pipeline.send_events(events)
    got = _wait_all(pipeline, expected, worker, 60, "the findings of an idle pipeline")
    compare(got, expected)
    check_worker_healthy(worker)


# A second's lateness, a 2-s notice grace, an input idle after a second of nothing.
_IDLE_ARGS = ("--allowed-lateness", "1", "--notice-grace", "2", "--idle-timeout", "1")


def _a_request_just_now(name: str) -> tuple[list[Event], list[dict[str, Any]]]:
    """A subject joins and is enriched now, with neither consent nor notice: a rule
    about the past and a notice rule fire, once the watermark passes now + 2 s (only the
    wall clock moves it: nothing comes after)."""
    from tests import builders

    at = time.time_ns() // 1_000_000 - builders.T0  # builders place events at T0 + at
    subject = f"u-{name}-{uuid.uuid4().hex[:6]}"
    events = [event_from_record(builders.joined(at, subject_id=subject)),
              event_from_record(builders.requested(at + 100, subject_id=subject))]
    expected = kh.replay_findings(events, EngineParams(allowed_lateness_ms=1_000,
                                                       notice_grace_ms=2_000))
    assert {f["rule"] for f in expected} == {"enrichment-without-consent",
                                             "enrichment-without-notice"}
    return events, expected


def _wait_all(pipeline: kh.Pipeline, expected: list[dict[str, Any]], worker: kh.Worker,
              timeout: float, what: str) -> list[dict[str, Any]]:
    """The findings on the topic once there are as many as `expected`."""
    def all_out() -> list[dict[str, Any]] | None:
        findings = pipeline.read()
        return findings if len(findings) >= len(expected) else None

    found: list[dict[str, Any]] = kh.wait_until(all_out, timeout=timeout, interval=1.0,
                                                what=what, on_timeout=worker.tail)
    return found


async def _send_in_transactions(pipeline: kh.Pipeline, events: list[Event]) -> None:
    """Each event in a transaction of its own: every input partition written to ends
    with a transaction marker, a control record no consumer is handed."""
    from aiokafka import AIOKafkaProducer

    from streams.kafka.kafka_io import event_key

    producer = AIOKafkaProducer(transactional_id=f"tx-{uuid.uuid4().hex[:8]}",
                                **pipeline.connection.aiokafka_options())
    await producer.start()
    try:
        for event in events:
            async with producer.transaction():
                await producer.send_and_wait(pipeline.names.inputs[event.TYPE],
                                             FRAMING.encode(event), key=event_key(event))
    finally:
        await producer.stop()


def test_inputs_written_in_transactions_are_read_to_their_end_and_go_idle(
        kafka_bootstrap: str, workers: kh.Workers) -> None:
    """The offset of a transaction's marker is never handed to the worker: an input
    partition ending with one counted as not read to its end, so it never went idle
    (the decisions below waited for new traffic for ever) and its committed offset
    stayed one below the end (a consumer lag of one, for good)."""
    import asyncio

    events, expected = _a_request_just_now("tx")
    pipeline = new_pipeline(kafka_bootstrap, "transactions")
    asyncio.run(_send_in_transactions(pipeline, events))
    inputs = list(pipeline.names.inputs.values())
    ends = pipeline.end_offsets(inputs)
    assert sorted(end for end in ends.values() if end) == [2, 2]  # a record, a marker
    worker = workers.start(pipeline.prefix, extra_args=_IDLE_ARGS)
    got = _wait_all(pipeline, expected, worker, 120, "the decisions, with every input idle")
    compare(got, expected)
    kh.wait_until(lambda: pipeline.consumed(inputs, ends), timeout=60, interval=0.5,
                  what="the inputs committed to their end, markers included",
                  on_timeout=lambda: f"committed {pipeline.group_offsets()}, ends {ends}")
    check_worker_healthy(worker)


def test_a_second_worker_on_a_data_dir_in_use_exits_and_every_decision_is_still_taken(
        kafka_bootstrap: str, workers: kh.Workers, tmp_path: Path) -> None:
    """The stalled worker (issue: a second worker on the same data dir looped on a locked
    RocksDB while the first held pending decisions for ever): the second exits at once
    with one line, and the first then decides everything with no new traffic; so does a
    restarted worker, from the watermark saved with its state."""
    events = kh.mix(2_000, 300, seed=31)
    params = EngineParams(notice_grace_ms=3_000)
    expected = kh.replay_findings(events, params)
    pipeline = new_pipeline(kafka_bootstrap, "stall")
    args = ("--notice-grace", "3", "--idle-timeout", "1")
    data_dir = tmp_path / "shared-data"
    # Sent before the worker starts, as a backlog: sent live, one input partition's next
    # batch could come more than the 1-s idle timeout after its last (a busy machine),
    # and its records would then be late (spec: idle input partitions), not what replay
    # decides.
    pipeline.send_events(events)
    first = workers.start(pipeline.prefix, data_dir=data_dir, name="first", extra_args=args)
    pipeline.wait_assigned(timeout=180)
    second = workers.start(pipeline.prefix, data_dir=data_dir, name="second", extra_args=args)
    assert second.process is not None
    status = second.process.wait(60)
    assert status == 1, second.tail()
    lines = [line for line in second.log().splitlines() if line.strip()]
    assert len(lines) == 1 and "in use by another worker" in lines[0], second.log()

    def all_out() -> list[dict[str, Any]] | None:
        findings = pipeline.read()
        return findings if len({f["finding_id"] for f in findings}) >= len(expected) else None

    got = kh.wait_until(all_out, timeout=240, interval=1.0,
                        what="every decision, with no new traffic", on_timeout=first.progress)
    compare(got, expected)
    check_worker_healthy(first)


def test_a_restarted_worker_takes_its_pending_decisions_with_no_new_traffic(
        kafka_bootstrap: str, workers: kh.Workers, tmp_path: Path) -> None:
    """The watermark survives the restart (saved with the state): the notice rules still
    pending when the worker stopped are decided by the next one, though nothing new
    arrives and every input partition is idle."""
    events = kh.mix(1_000, 150, seed=37)
    params = EngineParams(notice_grace_ms=45_000)
    expected = kh.replay_findings(events, params)
    notice_rules = {"enrichment-without-notice", "covert-profile-view"}
    assert {f["rule"] for f in expected} & notice_rules
    pipeline = new_pipeline(kafka_bootstrap, "restart-idle")
    args = ("--notice-grace", "45", "--idle-timeout", "1", "--state-flush-interval", "0.5")
    data_dir = tmp_path / "data"
    pipeline.send_events(events)  # a backlog, as above: no input goes idle mid-send
    first = workers.start(pipeline.prefix, data_dir=data_dir, name="first", extra_args=args)
    pipeline.wait_assigned(timeout=180)
    kh.wait_until(lambda: any(f["rule"] not in notice_rules for f in pipeline.read()) or None,
                  timeout=180, interval=1.0, what="the first findings", on_timeout=first.tail)
    assert len({f["finding_id"] for f in pipeline.read()}) < len(expected)
    assert first.stop(timeout=60) is not None
    second = workers.start(pipeline.prefix, data_dir=data_dir, name="second", extra_args=args)

    def all_out() -> list[dict[str, Any]] | None:
        findings = pipeline.read()
        return findings if len({f["finding_id"] for f in findings}) >= len(expected) else None

    got = kh.wait_until(all_out, timeout=240, interval=1.0,
                        what="the pending decisions after the restart", on_timeout=second.tail)
    compare(got, expected)
    check_worker_healthy(second)


def test_two_workers_that_both_stay_decide_every_partition(kafka_bootstrap: str,
                                                            workers: kh.Workers,
                                                            tmp_path: Path) -> None:
    """Each correlate partition needs the watermarks of the input partitions the other
    worker reads; the worker that does not lead the group must know them all too."""
    events = kh.mix(10_000, 1_000, seed=29)
    expected = kh.replay_findings(events)
    pipeline = new_pipeline(kafka_bootstrap, "both")
    workers.start(pipeline.prefix, name="a")
    workers.start(pipeline.prefix, name="b")
    pipeline.wait_assigned(timeout=180, members=2)
    stream = tmp_path / "stream.jsonl"
    kh.write_jsonl(stream, events)
    pipeline.produce(stream)
    pipeline.wait_consumed(timeout=240)
    pipeline.end_of_input()
    pipeline.wait_consumed(timeout=120)
    check_stream_findings(pipeline, expected, workers)


def test_two_workers_each_get_partition_p_of_every_input_the_correlate_topic_and_changelog(
        kafka_bootstrap: str, workers: kh.Workers) -> None:
    """What the direct read of co-partitioned inputs rests on (worker.py): Faust's
    assignor gives topics of one partition count that the same members subscribe one
    assignment (faust/assignor/partition_assignor.py, `_get_copartitioned_groups`), so
    the worker that owns correlate partition p owns partition p of every input topic and
    of the state table's changelog."""
    pipeline = new_pipeline(kafka_bootstrap, "copart")
    workers.start(pipeline.prefix, name="a")
    workers.start(pipeline.prefix, name="b")
    pipeline.wait_assigned(timeout=180, members=2)
    names = pipeline.names
    members = kh.group_members(kafka_bootstrap, names.group_id)
    assert len(members) == 2
    changelogs = {topic for tps in members.values() for topic, _ in tps
                  if topic.endswith("-state-changelog")}
    assert len(changelogs) == 1, changelogs
    topics = [*names.inputs.values(), names.correlate, *changelogs]
    owned: list[set[int]] = []
    for tps in members.values():
        by_topic = {topic: {p for name, p in tps if name == topic} for topic in topics}
        assert len({frozenset(ps) for ps in by_topic.values()}) == 1, by_topic
        owned.append(by_topic[names.correlate])
    assert all(owned) and not owned[0] & owned[1]
    assert owned[0] | owned[1] == set(range(kh.PARTITIONS))


# -- 6. late events of every type, amendments on the wire ---------------------------------


def test_late_events_of_every_type_publish_their_amendments(
        kafka_bootstrap: str, workers: kh.Workers) -> None:
    """Each event type arrives late after its triggers were decided; the amendments (and
    late findings) are those of the engine fed in the same order. A late event with an
    array field (consent, match) once crashed the worker's encoder, and its retraction
    was lost after the restart."""
    from tests import builders as b

    tag = uuid.uuid4().hex[:6]
    s = {name: f"u-{name}-{tag}" for name in ("consent", "notice", "toggle", "match",
                                              "join", "request", "view")}
    account = f"acct-{tag}"
    first = [
        b.requested(10_000, subject_id=s["consent"]),
        b.requested(10_000, subject_id=s["notice"]),
        b.requested(10_000, subject_id=s["toggle"], trigger="AUTOMATIC", account_id=account),
        b.joined(1_000, subject_id=s["match"], display_name="Night Owl"),
        b.viewed(10_000, subject_id=s["match"]),
        b.matched(1_000, subject_id=s["join"], profile_name="Alice Liddell"),
        b.viewed(10_000, subject_id=s["join"]),
    ]
    late = [
        b.consent(5_000, subject_id=s["consent"]),
        b.notice(9_000, subject_id=s["notice"]),
        b.toggle(5_000, account_id=account),
        b.matched(5_000, subject_id=s["match"], profile_name="Alice Liddell"),
        b.joined(5_000, subject_id=s["join"], display_name="Night Owl"),
        b.requested(2_000, subject_id=s["request"]),
        b.viewed(2_000, subject_id=s["view"]),
    ]
    first_events = [event_from_record(r) for r in first]
    late_events = [event_from_record(r) for r in late]
    assert len({type(e) for e in late_events}) == 7  # every event type

    engine = b.make_engine()
    expected_first = [out for e in first_events for out in engine.process(e)]
    expected_first += engine.decide_pending()
    expected_late = [out for e in late_events for out in engine.process(e)]
    expected_late += engine.decide_pending()
    amendments = {(a.amendment_id, a.kind, a.late_event_id)
                  for a in expected_late if isinstance(a, Amendment)}
    late_types = {type(e).__name__ for e in late_events
                  if any(a[2] == e.event_id for a in amendments)}
    assert {"ConsentChanged", "EnrichmentMatched"} <= late_types, late_types
    findings = {f.finding_id for f in [*expected_first, *expected_late]
                if isinstance(f, Finding)}

    pipeline = new_pipeline(kafka_bootstrap, "late")
    worker = workers.start(pipeline.prefix)
    pipeline.wait_assigned(timeout=180)
    pipeline.send_events(first_events)
    pipeline.end_of_input()
    first_ids = {f.finding_id for f in expected_first if isinstance(f, Finding)}
    kh.wait_until(lambda: first_ids <= {f["finding_id"] for f in pipeline.read()},
                  timeout=180, interval=1.0, what="the first findings", on_timeout=worker.tail)
    pipeline.send_events(late_events)
    pipeline.end_of_input()

    def all_out() -> tuple[set[tuple[str, str, str]], set[str]] | None:
        got = {(a["amendment_id"], a["kind"], a["late_event_id"])
               for a in pipeline.read("amendments")}
        ids = {f["finding_id"] for f in pipeline.read()}
        return (got, ids) if len(got) >= len(amendments) and len(ids) >= len(findings) else None

    got = kh.wait_until(all_out, timeout=180, interval=1.0,
                        what="the amendments and late findings", on_timeout=worker.tail)
    assert got == (amendments, findings)
    for amendment in pipeline.read("amendments"):
        assert amendment["late_event"]["event_id"] == amendment["late_event_id"]
    check_worker_healthy(worker)


# -- 7. time from the future -------------------------------------------------------------


def test_an_event_from_the_future_is_dead_lettered_and_moves_no_watermark(
        kafka_bootstrap: str, workers: kh.Workers) -> None:
    """A FeatureToggled dated five years ahead of its Kafka timestamp once made every
    honest event after it late; now it is a dead letter (future_timestamp, its bytes
    kept) and the findings are those of the honest events alone."""
    import dataclasses

    honest = kh.mix(1_500, 150, seed=41)
    toggle = next(e for e in honest if isinstance(e, FeatureToggled))
    future = dataclasses.replace(toggle, event_id=f"future-{uuid.uuid4().hex[:6]}",
                                 occurred_at=time.time_ns() // 1_000_000 + 5 * 365 * 86_400_000)
    events = [*honest[:100], future, *honest[100:]]
    expected = kh.replay_findings(honest)
    pipeline = new_pipeline(kafka_bootstrap, "future")
    worker = workers.start(pipeline.prefix)
    pipeline.wait_assigned(timeout=180)
    pipeline.send_events(events)
    pipeline.wait_consumed(timeout=180)
    pipeline.end_of_input()
    pipeline.wait_consumed(timeout=180)
    got = kh.wait_until(lambda: (found := pipeline.read()) and len(
        {f["finding_id"] for f in found}) >= len(expected) and found,
        timeout=120, interval=1.0, what="the findings", on_timeout=worker.tail)
    compare(got, expected)
    assert pipeline.read("amendments") == []  # nothing honest was made late
    letters = pipeline.read("dead_letters")
    assert [letter["reason_code"] for letter in letters] == ["future_timestamp"]
    assert base64.b64decode(letters[0]["payload"]) == FRAMING.encode(future)
    check_worker_healthy(worker)
