"""The metrics page of a running worker, read back: what `consentwatch status` shows.

Only the gauges and counters of `collector.py` and `pipeline.py` are read; a page
without `consentwatch_build_info` is not a worker's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from streams.errors import ConsentwatchError

__all__ = ["NotWorkerMetrics", "PartitionStatus", "WorkerStatus", "parse_status"]

_CORRELATE_SUFFIX = ".correlate"  # TopicNames.correlate; input topics end in an event type


class NotWorkerMetrics(ConsentwatchError):
    """The text is not the metrics page of a consentwatch worker."""


@dataclass(slots=True)
class PartitionStatus:
    """One correlate partition the worker owns."""

    partition: int
    watermark_s: float | None = None  # Unix time; None before any event
    watermark_lag_s: float | None = None  # the worker's wall clock minus the watermark
    pending: int = 0
    subjects: int = 0
    consumer_lag: int | None = None  # records of its correlate partition not yet read


@dataclass(slots=True)
class WorkerStatus:
    version: str
    partitions: dict[int, PartitionStatus] = field(default_factory=dict)
    input_lag: dict[tuple[str, int], int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)  # reason -> count


def parse_status(text: str) -> WorkerStatus:
    """The worker's state from its exposition text (Prometheus text format)."""
    try:
        samples = [sample for family in text_string_to_metric_families(text)
                   for sample in family.samples]
    except ValueError as exc:
        raise NotWorkerMetrics("not a Prometheus metrics page") from exc
    version = next((s.labels.get("version", "?") for s in samples
                    if s.name == "consentwatch_build_info"), None)
    if version is None:
        raise NotWorkerMetrics("not a consentwatch worker's metrics page "
                               "(no consentwatch_build_info)")
    status = WorkerStatus(version)
    for sample in samples:
        _apply(status, sample)
    return status


def _apply(status: WorkerStatus, sample: Sample) -> None:
    name, labels, value = sample.name, sample.labels, sample.value
    if name == "consentwatch_dead_letters_total":
        reason = labels.get("reason", "?")
        status.dead_letters[reason] = status.dead_letters.get(reason, 0) + int(value)
    elif name == "consentwatch_consumer_lag_records":
        topic, number = labels.get("topic", ""), _number(labels)
        if number is None:
            return
        if topic.endswith(_CORRELATE_SUFFIX):
            _partition(status, number).consumer_lag = int(value)
        else:
            status.input_lag[(topic, number)] = int(value)
    elif name in _PER_PARTITION:
        number = _number(labels)
        if number is not None:
            setattr(_partition(status, number), _PER_PARTITION[name],
                    value if name.endswith("_seconds") else int(value))


_PER_PARTITION = {
    "consentwatch_watermark_timestamp_seconds": "watermark_s",
    "consentwatch_watermark_lag_seconds": "watermark_lag_s",
    "consentwatch_pending_decisions": "pending",
    "consentwatch_state_subjects": "subjects",
}


def _number(labels: dict[str, str]) -> int | None:
    try:
        return int(labels["partition"])
    except (KeyError, ValueError):
        return None


def _partition(status: WorkerStatus, number: int) -> PartitionStatus:
    part = status.partitions.get(number)
    if part is None:
        part = status.partitions[number] = PartitionStatus(number)
    return part

