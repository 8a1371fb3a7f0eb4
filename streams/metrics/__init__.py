"""Prometheus metrics: counters fed from the engines, gauges read at scrape time.

No label carries personal data, and every label set is bounded (see `labels`).
"""

from streams.metrics.exposition import exposition, write_textfile
from streams.metrics.labels import OTHER, BoundedLabel
from streams.metrics.pipeline import LATENCY_BUCKETS, MAX_PROVIDERS, PipelineMetrics
from streams.metrics.view import (
    EnginePartition,
    PartitionView,
    PipelineView,
    SingleEngineView,
)

__all__ = [
    "LATENCY_BUCKETS",
    "MAX_PROVIDERS",
    "OTHER",
    "BoundedLabel",
    "EnginePartition",
    "PartitionView",
    "PipelineMetrics",
    "PipelineView",
    "SingleEngineView",
    "exposition",
    "write_textfile",
]
