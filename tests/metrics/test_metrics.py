"""Metrics: values after real runs, promtool's verdict, bounded labels with no personal data."""

from __future__ import annotations

import gc
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streams import __version__
from streams.catalogue import load_catalogue
from streams.engine import EngineStats
from streams.metrics import (
    MAX_PROVIDERS,
    OTHER,
    BoundedLabel,
    PartitionView,
    PipelineMetrics,
    SingleEngineView,
    exposition,
    write_textfile,
)
from streams.model.validate import event_from_record
from tests.builders import (
    MIN,
    SEC,
    T0,
    Record,
    consent,
    joined,
    make_engine,
    matched,
    requested,
    viewed,
)
from tests.conftest import EXAMPLES_DIR, example_cases, run_cli
from tests.promql_names import CONTRACT_METRICS

PROMTOOL = "/usr/bin/promtool"
NOW = 1_800_000_000.0  # the wall clock of the fake scrapes, in seconds


# -- helpers ---------------------------------------------------------------------------


@dataclass
class FakePartition:
    watermark_ms: int | None
    pending: int
    subjects: int
    stats: EngineStats = field(default_factory=EngineStats)


@dataclass
class FakeView:
    parts: dict[int, FakePartition] = field(default_factory=dict)
    lag: dict[tuple[str, int], int] = field(default_factory=dict)

    def partitions(self) -> Mapping[int, PartitionView]:
        return self.parts

    def consumer_lag(self) -> Mapping[tuple[str, int], int]:
        return self.lag


def new_metrics(view: FakeView | None = None) -> PipelineMetrics:
    return PipelineMetrics(CollectorRegistry(), view=view, clock=lambda: NOW)


def value(metrics: PipelineMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    assert found is not None, (name, labels)
    return found


def series(metrics: PipelineMetrics) -> list[tuple[str, dict[str, str]]]:
    metrics.sync()
    return [(s.name, s.labels) for family in metrics.registry.collect() for s in family.samples]


def promtool_check(text: bytes) -> None:
    """`promtool check metrics` must exit 0 and report nothing at all."""
    assert shutil.which(PROMTOOL) or Path(PROMTOOL).exists(), "promtool is not installed"
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"" and result.stderr == b"", (result.stdout + result.stderr).decode()


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> {sorted labels: value}, from the text format."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def by_label(samples: Mapping[tuple[tuple[str, str], ...], float], label: str) -> Counter[str]:
    totals: Counter[str] = Counter()
    for labels, count in samples.items():
        totals[dict(labels)[label]] += int(count)
    return +totals


def feed_live(engine_records: Iterable[Record], wall_ms: int, **params: int) -> EngineStats:
    """Run records through an engine as the worker does (with a wall time), then flush."""
    engine = make_engine(**params)
    for record in engine_records:
        engine.process(event_from_record(record), wall_ms=wall_ms)
    engine.flush()
    return engine.stats


def write_jsonl(path: Path, records: Iterable[Record | bytes]) -> Path:
    path.write_bytes(b"".join(
        (r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in records))
    return path


# -- replay --metrics-file -----------------------------------------------------------------


@pytest.mark.parametrize("case", example_cases(), ids=lambda p: p.name)
def test_replay_metrics_file_counts_the_expected_findings(case: Path, tmp_path: Path) -> None:
    prom = tmp_path / "replay.prom"
    result = run_cli("replay", str(case / "events.jsonl"), "--quiet", "--out",
                     str(tmp_path / "f.jsonl"), "--metrics-file", str(prom))
    assert result.returncode == 0, result.stderr.decode()
    text = prom.read_bytes()
    promtool_check(text)
    metrics = parse(text.decode())
    expected = [orjson.loads(line) for line in (case / "expected.jsonl").read_bytes().splitlines()
                if line.strip()]
    findings = metrics.get("consentwatch_findings_total", {})
    assert by_label(findings, "rule") == Counter(r["rule"] for r in expected)
    catalogue = load_catalogue()
    assert by_label(findings, "severity") == Counter(
        catalogue[r["rule"]].severity for r in expected)
    events = [orjson.loads(line) for line in (case / "events.jsonl").read_bytes().splitlines()
              if line.strip()]
    assert by_label(metrics["consentwatch_events_consumed_total"], "type") == Counter(
        e["type"] for e in events)
    declared = {f.name: f.type for f in text_string_to_metric_families(text.decode())}
    assert declared == {name.removesuffix("_total"): kind
                        for name, kind in CONTRACT_METRICS.items()}
    # Everything was decided at the end of the replay; the temporary file was renamed.
    assert metrics["consentwatch_pending_decisions"] == {(("partition", "0"),): 0.0}
    assert {p.name for p in tmp_path.iterdir()} == {"f.jsonl", "replay.prom"}


def test_replay_metrics_count_dead_letters_by_reason_duplicates_and_late(tmp_path: Path) -> None:
    request = requested(0)
    records: list[Record | bytes] = [
        joined(0), request, request,                      # one duplicate
        b'{"type": "ParticipantJoined", ',                # not_json
        b'{"type": "SomethingElse", "event_id": "x"}',    # unknown_type
        b'{"type": "Nope", "event_id": "y"}',             # unknown_type
        viewed(2 * MIN),                                  # moves the watermark past the request
        consent(-10 * SEC),                               # late: retracts the consent finding
    ]
    events = write_jsonl(tmp_path / "events.jsonl", records)
    prom = tmp_path / "m.prom"
    result = run_cli("replay", str(events), "--quiet", "--out", str(tmp_path / "f.jsonl"),
                     "--metrics-file", str(prom))
    assert result.returncode == 1  # invalid records; the metrics are written all the same
    text = prom.read_bytes()
    promtool_check(text)
    metrics = parse(text.decode())
    assert by_label(metrics["consentwatch_dead_letters_total"], "reason") == {
        "not_json": 1, "unknown_type": 2}
    assert metrics["consentwatch_duplicate_events_total"] == {(): 1.0}
    assert metrics["consentwatch_late_events_total"] == {(): 1.0}
    assert metrics["consentwatch_late_events_beyond_horizon_total"] == {(): 0.0}
    assert by_label(metrics["consentwatch_amendments_total"], "kind") == {"RETRACTED": 1}
    assert sum(metrics["consentwatch_events_consumed_total"].values()) == 5
    # A replay has no ingestion time: no latency is observed (see the engine's latencies).
    assert metrics["consentwatch_finding_latency_seconds_count"] == {
        (("since", "event_time"),): 0.0, (("since", "ingestion"),): 0.0}


def test_replay_metrics_file_in_a_missing_dir_is_a_one_line_error(tmp_path: Path) -> None:
    case = EXAMPLES_DIR / "seed-scenario" / "events.jsonl"
    result = run_cli("replay", str(case), "--quiet", "--out", str(tmp_path / "f.jsonl"),
                     "--metrics-file", str(tmp_path / "missing" / "m.prom"))
    assert result.returncode == 2
    stderr = result.stderr.decode()
    errors = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "cannot write metrics" in errors[0], stderr
    assert "Traceback" not in stderr


# -- every metric, through promtool -------------------------------------------------------------


def populated() -> PipelineMetrics:
    """A registry where every metric of the contract has samples."""
    request = requested(0)
    stats = feed_live([joined(0), request, request, viewed(2 * MIN), consent(-10 * SEC)],
                      wall_ms=T0 + 5 * SEC)
    view = FakeView(
        parts={0: FakePartition(T0, pending=3, subjects=2, stats=stats),
               1: FakePartition(None, pending=0, subjects=0)},
        lag={("consentwatch.correlate", 0): 12, ("consentwatch.events.profile-viewed", 3): 0})
    metrics = new_metrics(view)
    metrics.observe_dead_letter("not_json")
    return metrics


def test_every_contract_metric_is_populated_and_promtool_reports_nothing() -> None:
    metrics = populated()
    body, content_type = exposition(metrics)
    assert content_type.startswith("text/plain; version=0.0.4")
    promtool_check(body)
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for name, kind in CONTRACT_METRICS.items():
        base = name.removesuffix("_total") if kind == "counter" else name
        assert families[base].type == kind, name
        assert families[base].samples, f"{name} has no samples"
    assert not any(name.endswith("_created") for name in families)


def test_scrape_time_gauges_read_the_view() -> None:
    metrics = populated()
    metrics.sync()
    assert value(metrics, "consentwatch_watermark_timestamp_seconds", partition="0") == T0 / 1000
    assert value(metrics, "consentwatch_watermark_lag_seconds", partition="0") == NOW - T0 / 1000
    assert metrics.registry.get_sample_value(  # no watermark before any event
        "consentwatch_watermark_timestamp_seconds", {"partition": "1"}) is None
    assert value(metrics, "consentwatch_pending_decisions", partition="0") == 3
    assert value(metrics, "consentwatch_state_subjects", partition="1") == 0
    assert value(metrics, "consentwatch_consumer_lag_records", topic="consentwatch.correlate",
                 partition="0") == 12
    assert value(metrics, "consentwatch_build_info", version=__version__,
                 rules_version=load_catalogue().version) == 1
    # The view changes between scrapes; the gauges follow without any push.
    view = metrics.view
    assert isinstance(view, FakeView)
    view.parts[0].pending = 0
    view.lag[("consentwatch.correlate", 0)] = 0
    assert value(metrics, "consentwatch_pending_decisions", partition="0") == 0
    assert value(metrics, "consentwatch_consumer_lag_records", topic="consentwatch.correlate",
                 partition="0") == 0


def test_openmetrics_is_served_when_asked() -> None:
    body, content_type = exposition(populated(), "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_write_textfile_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    path.write_text("old\n")
    write_textfile(populated(), path)
    assert b"consentwatch_findings_total" in path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["m.prom"]


def test_metrics_hold_no_reference_cycle_that_keeps_an_engine_alive() -> None:
    # `replay --metrics-file` must free the engine's state as fast as a plain replay:
    # a cycle would leave it to the collector, at exit (about a third of a second
    # per 100,000 events). Counted in references, since a compiled Engine
    # (streams.native) takes no weak reference.
    engine = make_engine()
    collecting = gc.isenabled()
    gc.disable()
    try:
        alone = sys.getrefcount(engine)
        metrics = PipelineMetrics(CollectorRegistry(), view=SingleEngineView(engine))
        exposition(metrics)
        assert sys.getrefcount(engine) > alone  # the metrics do look at it
        del metrics
        assert sys.getrefcount(engine) == alone  # and let go of it without the collector
    finally:
        if collecting:
            gc.enable()


# -- latency ------------------------------------------------------------------------------------


def test_latency_is_measured_from_event_time_and_from_ingestion() -> None:
    detected = T0 + 40 * SEC
    engine = make_engine()
    engine._clock = lambda: detected
    received = T0 + 2 * SEC
    engine.process(event_from_record(requested(0)), wall_ms=received)
    engine.process(event_from_record(joined(31 * SEC)), wall_ms=received + 29 * SEC)
    # past stage decided (no consent): one finding; the notice stage is still pending
    assert list(engine.stats.latencies) == [(40_000, 38_000)]
    metrics = new_metrics()
    metrics.observe_engine(0, engine.stats)
    assert not engine.stats.latencies  # drained
    assert value(metrics, "consentwatch_finding_latency_seconds_sum", since="event_time") == 40
    assert value(metrics, "consentwatch_finding_latency_seconds_sum", since="ingestion") == 38
    assert value(metrics, "consentwatch_finding_latency_seconds_bucket", since="ingestion",
                 le="45.0") == 1
    assert value(metrics, "consentwatch_finding_latency_seconds_bucket", since="ingestion",
                 le="35.0") == 0


def test_latency_buffer_is_bounded() -> None:
    stats = EngineStats()
    limit = stats.latencies.maxlen
    assert limit is not None
    for i in range(limit + 10):
        stats.latencies.append((i, i))
    assert len(stats.latencies) == limit


# -- deltas ---------------------------------------------------------------------------------------


def test_engine_counters_are_added_by_delta_and_survive_engine_replacement() -> None:
    metrics = new_metrics()
    first = EngineStats()
    first.events["ProfileViewed"] = 5
    first.findings[("covert-profile-view", "HIGH", "linkedin")] = 2
    first.duplicates = 1
    metrics.observe_engine(3, first)
    metrics.observe_engine(3, first)  # nothing new: nothing added
    assert value(metrics, "consentwatch_events_consumed_total", type="ProfileViewed") == 5
    first.events["ProfileViewed"] = 8
    first.late = 2
    metrics.observe_engine(3, first)
    assert value(metrics, "consentwatch_events_consumed_total", type="ProfileViewed") == 8
    # A rebalance gives partition 3 a new engine counting from zero: all of it is new.
    second = EngineStats()
    second.events["ProfileViewed"] = 3
    second.findings[("covert-profile-view", "HIGH", "linkedin")] = 1
    metrics.observe_engine(3, second)
    assert value(metrics, "consentwatch_events_consumed_total", type="ProfileViewed") == 11
    assert value(metrics, "consentwatch_findings_total", rule="covert-profile-view",
                 severity="HIGH", provider="linkedin") == 3
    # Another partition is another key.
    other = EngineStats()
    other.events["ProfileViewed"] = 1
    metrics.observe_engine(4, other)
    assert value(metrics, "consentwatch_events_consumed_total", type="ProfileViewed") == 12
    # Revoked: observed one last time, then forgotten; a later engine starts from zero.
    second.events["ProfileViewed"] = 4
    metrics.observe_engine(3, second)
    metrics.forget_engine(3)
    third = EngineStats()
    third.events["ProfileViewed"] = 2
    metrics.observe_engine(3, third)
    assert value(metrics, "consentwatch_events_consumed_total", type="ProfileViewed") == 15
    assert value(metrics, "consentwatch_duplicate_events_total") == 1
    assert value(metrics, "consentwatch_late_events_total") == 2


def test_sync_observes_every_partition_of_the_view() -> None:
    stats = EngineStats()
    view = FakeView(parts={7: FakePartition(None, 0, 0, stats)})
    metrics = new_metrics(view)
    stats.events["NoticeDelivered"] = 4
    exposition(metrics)
    exposition(metrics)
    assert value(metrics, "consentwatch_events_consumed_total", type="NoticeDelivered") == 4


# -- labels: bounded, no personal data ----------------------------------------------------------


def subjects_records(count: int) -> list[Record]:
    """Four events per subject, each subject in its own account and meeting, named."""
    records: list[Record] = []
    for i in range(count):
        who = {"subject_id": f"subj-{i:05d}", "account_id": f"acct-{i:05d}",
               "meeting_id": f"mtg-{i:05d}"}
        at = i * SEC
        records += [
            joined(at, display_name=f"Person {i:05d}", email=f"person{i:05d}@example.com",
                   **who),
            requested(at + 1, **who),
            matched(at + 2, profile_name=f"Real Person {i:05d}", **who),
            viewed(at + 3, viewer_id=f"viewer-{i:05d}", **who),
        ]
    return records


def label_values(metrics: PipelineMetrics) -> set[str]:
    return {v for _, labels in series(metrics) for v in labels.values()}


def test_series_do_not_grow_with_subjects_and_labels_hold_no_personal_data() -> None:
    def run(count: int) -> tuple[PipelineMetrics, list[Record]]:
        records = subjects_records(count)
        engine_stats = feed_live(records, wall_ms=T0)
        metrics = new_metrics(FakeView(parts={0: FakePartition(T0, 0, count, engine_stats)}))
        return metrics, records

    small, _ = run(100)
    big, records = run(10_000)
    big.sync()
    assert sum(big.registry.get_sample_value(
        "consentwatch_events_consumed_total", {"type": t}) or 0 for t in (
        "ParticipantJoined", "EnrichmentRequested", "EnrichmentMatched", "ProfileViewed")) == 40_000
    assert len(series(big)) == len(series(small))
    assert sorted(series(big), key=repr) == sorted(series(small), key=repr)
    personal = {str(r[key]) for r in records for key in (
        "subject_id", "account_id", "meeting_id", "display_name", "email", "profile_name",
        "viewer_id", "event_id") if r.get(key) is not None}
    values = label_values(big)
    assert not values & personal
    for fragment in ("subj-", "acct-", "mtg-", "Person", "person", "@", "viewer-"):
        assert not any(fragment in v for v in values), fragment


def test_providers_are_bounded_and_never_free_text() -> None:
    metrics = new_metrics()
    stats = EngineStats()
    for i in range(MAX_PROVIDERS + 8):
        stats.findings[("covert-profile-view", "HIGH", f"provider_{i:02d}")] = 1
    stats.findings[("covert-profile-view", "HIGH", "alice@example.com")] = 1
    metrics.observe_engine(0, stats)
    providers = {labels["provider"] for name, labels in series(metrics)
                 if name == "consentwatch_findings_total"}
    assert len(providers) == MAX_PROVIDERS + 1
    assert OTHER in providers
    assert value(metrics, "consentwatch_findings_total", rule="covert-profile-view",
                 severity="HIGH", provider=OTHER) == 9


@pytest.mark.parametrize("raw", ["alice@example.com", "Alice", "Alice Liddell", "a" * 65, "", None])
def test_free_text_never_becomes_a_label(raw: str | None) -> None:
    assert BoundedLabel(10)(raw) == OTHER


def test_dead_letter_reasons_are_bounded() -> None:
    metrics = new_metrics()
    for i in range(200):
        metrics.observe_dead_letter(f"reason_{i}")
    metrics.observe_dead_letter("Bob <bob@example.com>")
    reasons = {labels["reason"] for name, labels in series(metrics)
               if name == "consentwatch_dead_letters_total"}
    assert len(reasons) == 65  # 64 kept, then "other"
    assert value(metrics, "consentwatch_dead_letters_total", reason=OTHER) == 137
