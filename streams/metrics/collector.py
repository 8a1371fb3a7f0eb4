"""Gauges read at scrape time from a `PipelineView`: watermarks, pending, state, lag.

A custom collector, not `Gauge` objects kept up to date: these values are cheap
to read when Prometheus asks and would otherwise need a loop of their own.
Partitions with no watermark yet (no event seen) have no watermark samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.metrics.view import PipelineView

__all__ = ["ScrapeCollector"]


class ScrapeCollector(Collector):
    """Yields the per-partition gauges and the consumer lag of whatever view is attached."""

    def __init__(self, view: PipelineView | None, clock: Callable[[], float]) -> None:
        self.view = view
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        # Names only, so the registry can check for clashes without collecting.
        return self._families()

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        view = self.view
        if view is None:
            return families
        watermark, lag, pending, subjects, consumer_lag = families
        now = self._clock()
        for number, part in sorted(view.partitions().items()):
            label = [str(number)]
            pending.add_metric(label, part.pending)
            subjects.add_metric(label, part.subjects)
            ms = part.watermark_ms
            if ms is not None:
                watermark.add_metric(label, ms / 1000)
                lag.add_metric(label, now - ms / 1000)
        for (topic, number), records in sorted(view.consumer_lag().items()):
            consumer_lag.add_metric([topic, str(number)], records)
        return families

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        partition = ["partition"]
        return [
            GaugeMetricFamily(
                "consentwatch_watermark_timestamp_seconds",
                "Event-time watermark of each correlation partition (Unix time).",
                labels=partition),
            GaugeMetricFamily(
                "consentwatch_watermark_lag_seconds",
                "Wall clock minus the partition's watermark: how far decisions trail reality.",
                labels=partition),
            GaugeMetricFamily(
                "consentwatch_pending_decisions",
                "Trigger decisions waiting for the watermark (open notice deadlines included).",
                labels=partition),
            GaugeMetricFamily(
                "consentwatch_state_subjects",
                "Subjects held in the partition's correlation state.",
                labels=partition),
            GaugeMetricFamily(
                "consentwatch_consumer_lag_records",
                "Records in the topic partition not yet consumed by this worker.",
                labels=["topic", "partition"]),
        ]
