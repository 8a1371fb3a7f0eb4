"""Every consentwatch metric, on one registry, fed from engines' counters.

The engine counts as it goes (`EngineStats`); these counters only add what an
engine counted since they last looked, so the hot loop does no metric work and
an engine replaced after a rebalance (new stats, counting from zero) neither
loses nor double-counts what was already reported.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    disable_created_metrics,
)
from prometheus_client import Counter as PromCounter

from streams import __version__
from streams.catalogue import Catalogue, load_catalogue
from streams.engine import EngineStats
from streams.metrics.collector import ScrapeCollector
from streams.metrics.histogram import ScrapeHistogram
from streams.metrics.labels import BoundedLabel
from streams.metrics.view import PipelineView
from streams.model.events import EVENT_TYPES

__all__ = ["AMENDMENT_KINDS", "LATENCY_BUCKETS", "MAX_PROVIDERS", "PipelineMetrics"]

_K = TypeVar("_K")

MAX_PROVIDERS = 32  # the contract: the first 32 providers keep their name, later ones "other"
_MAX_REASONS = 64
_MAX_EVENT_TYPES = 32
AMENDMENT_KINDS = ("RETRACTED", "EVIDENCE_CHANGED", "WOULD_RAISE")
# Decisions wait for the watermark: about `allowed_lateness` (30 s) for the rules about
# the past and `notice_grace` more (330 s) for the notice rules, longer on an idle
# partition (its idle timeout) or behind consumer lag. Fine around 30 s and 330 s.
LATENCY_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 35.0, 45.0, 60.0, 120.0, 300.0,
                   330.0, 360.0, 450.0, 600.0, 900.0, 1800.0, 3600.0)


@dataclass(slots=True)
class _Seen:
    """What was already reported of one engine's stats object."""

    stats: EngineStats
    events: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    late: int = 0
    beyond_horizon: int = 0
    findings: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    amendments: Counter[str] = field(default_factory=Counter)


class PipelineMetrics:
    """The metrics of one process (a worker, or one replay run).

    `registry`: where they are registered (a fresh `CollectorRegistry()` per test;
    the worker and replay make their own too, so nothing else leaks in).
    `view`: read at scrape time for the gauges; may be attached later (`view = ...`).
    `clock`: wall time in seconds, for the watermark lag.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        view: PipelineView | None = None,
        clock: Callable[[], float] = time.time,
        catalogue: Catalogue | None = None,
    ) -> None:
        # `_created` samples would double the series and mean nothing on these
        # dashboards. The switch is process-wide; every metric of this process is ours.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry()
        self._seen: dict[Hashable, _Seen] = {}
        self._provider = BoundedLabel(MAX_PROVIDERS)
        self._reason = BoundedLabel(_MAX_REASONS)
        self._event_type = BoundedLabel(_MAX_EVENT_TYPES, lower_case=False)
        reg = self.registry
        self.events = PromCounter(
            "consentwatch_events_consumed", "Valid events consumed by the engine, by event type.",
            ["type"], registry=reg)
        self.duplicates = PromCounter(
            "consentwatch_duplicate_events", "Events seen before (same event id), ignored.",
            registry=reg)
        self.late = PromCounter(
            "consentwatch_late_events",
            "Events older than the watermark: applied, and amending decisions they change.",
            registry=reg)
        self.beyond_horizon = PromCounter(
            "consentwatch_late_events_beyond_horizon",
            "Late facts older than the watermark by more than the amendment horizon: "
            "applied, but decisions older than the horizon are no longer kept, so none of "
            "them was re-checked (a trigger that late is dead-lettered, beyond_horizon).",
            registry=reg)
        self.dead_letters = PromCounter(
            "consentwatch_dead_letters", "Records that could not be used, by reason code.",
            ["reason"], registry=reg)
        self.registry_errors = PromCounter(
            "consentwatch_schema_registry_errors",
            "Schema registry requests that failed (unreachable, timed out, server error); "
            "the batch waits and is read again.", registry=reg)
        self.findings = PromCounter(
            "consentwatch_findings", "Findings raised, by rule, severity and provider.",
            ["rule", "severity", "provider"], registry=reg)
        self.amendments = PromCounter(
            "consentwatch_amendments", "Amendments to decisions taken, caused by late events.",
            ["kind"], registry=reg)
        # Two values per finding: counted in plain lists, read at scrape time.
        self.latency = ScrapeHistogram(
            "consentwatch_finding_latency_seconds",
            "Time from a trigger to its finding: since its event time, or since it was ingested.",
            "since", ("event_time", "ingestion"), LATENCY_BUCKETS, reg)
        self._event_time_latency = self.latency.series("event_time")
        self._ingestion_latency = self.latency.series("ingestion")
        catalogue = catalogue or load_catalogue()
        self.build_info = Gauge(
            "consentwatch_build_info", "Always 1; the running version and rule catalogue.",
            ["version", "rules_version"], registry=reg)
        self.build_info.labels(version=__version__, rules_version=catalogue.version).set(1)
        # The collector holds the view; nothing refers back to this object, so an
        # engine behind the view is freed as soon as the metrics are (no cycle).
        self._collector = ScrapeCollector(view, clock)
        reg.register(self._collector)
        # Known label values start at 0, so the first increment is a visible increase.
        for event_type in EVENT_TYPES:
            self.events.labels(type=self._event_type(event_type))
        for kind in AMENDMENT_KINDS:
            self.amendments.labels(kind=kind)

    @property
    def view(self) -> PipelineView | None:
        return self._collector.view

    @view.setter
    def view(self, view: PipelineView | None) -> None:
        self._collector.view = view

    # -- engines -----------------------------------------------------------------

    def observe_engine(self, key: Hashable, stats: EngineStats) -> None:
        """Add what `stats` counted since the last call for `key`, and drain its latencies.

        A different stats object under the same key is a new engine: it counts
        from zero, so all of it is new.
        """
        seen = self._seen.get(key)
        if seen is None or seen.stats is not stats:
            seen = self._seen[key] = _Seen(stats)
        for event_type, delta in _deltas(stats.events, seen.events):
            self.events.labels(type=self._event_type(event_type)).inc(delta)
        for (rule, severity, provider), delta in _deltas(stats.findings, seen.findings):
            self.findings.labels(rule=rule, severity=severity,
                                 provider=self._provider(provider)).inc(delta)
        for kind, delta in _deltas(stats.amendments, seen.amendments):
            self.amendments.labels(kind=kind).inc(delta)
        if stats.duplicates > seen.duplicates:
            self.duplicates.inc(stats.duplicates - seen.duplicates)
        if stats.late > seen.late:
            self.late.inc(stats.late - seen.late)
        if stats.beyond_horizon > seen.beyond_horizon:
            self.beyond_horizon.inc(stats.beyond_horizon - seen.beyond_horizon)
        seen.duplicates = stats.duplicates
        seen.late = stats.late
        seen.beyond_horizon = stats.beyond_horizon
        latencies = stats.latencies
        event_time, ingestion = self._event_time_latency.observe, self._ingestion_latency.observe
        while latencies:
            event_time_ms, ingestion_ms = latencies.popleft()
            event_time(event_time_ms / 1000)
            ingestion(ingestion_ms / 1000)

    def forget_engine(self, key: Hashable) -> None:
        """Stop tracking `key` (its partition was revoked); observe it first to keep its tail."""
        self._seen.pop(key, None)

    def sync(self) -> None:
        """Observe every engine of the attached view (done before each exposition)."""
        if self.view is not None:
            for number, part in self.view.partitions().items():
                self.observe_engine(number, part.stats)

    # -- records that never reached an engine -----------------------------------------

    def observe_dead_letter(self, reason_code: str, count: int = 1) -> None:
        self.dead_letters.labels(reason=self._reason(reason_code)).inc(count)

    def observe_registry_error(self) -> None:
        self.registry_errors.inc()


def _deltas(now: Mapping[_K, int], before: Counter[_K]) -> list[tuple[_K, int]]:
    """The increases of `now` over `before`, which is brought up to date."""
    changed = [(key, count - before[key]) for key, count in now.items() if count > before[key]]
    for key, delta in changed:
        before[key] += delta
    return changed
