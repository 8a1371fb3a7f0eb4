"""What the metrics read at scrape time, and the adapter from an engine.

The worker (and `replay`, for its one partition) implements `PipelineView`; the
collector asks it for the current values each time Prometheus scrapes, so no
background loop has to keep gauges up to date.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from streams.engine import Engine, EngineStats
from streams.engine.core import FOREVER, NEVER

__all__ = ["EnginePartition", "PartitionView", "PipelineView", "SingleEngineView"]


class PartitionView(Protocol):
    """One partition of the correlation stage, as the metrics see it."""

    @property
    def watermark_ms(self) -> int | None:
        """Its event-time watermark (epoch ms), None before any event."""

    @property
    def pending(self) -> int:
        """Decisions still waiting for the watermark (open notice deadlines included)."""

    @property
    def subjects(self) -> int:
        """Subjects held in its state."""

    @property
    def stats(self) -> EngineStats:
        """Its engine's counters; a new object when the engine is replaced."""


class PipelineView(Protocol):
    """The whole worker: its partitions and its consumer lag."""

    def partitions(self) -> Mapping[int, PartitionView]:
        """The partitions this process owns now, by partition number."""

    def consumer_lag(self) -> Mapping[tuple[str, int], int]:
        """Records not yet consumed, by (topic name, partition)."""


class EnginePartition:
    """A PartitionView over an engine; `subjects` is asked for only at scrape time."""

    __slots__ = ("_count_subjects", "engine")

    def __init__(self, engine: Engine, count_subjects: Callable[[], int]) -> None:
        self.engine = engine
        self._count_subjects = count_subjects

    @property
    def watermark_ms(self) -> int | None:
        engine = self.engine
        if engine.max_seen == NEVER:
            return None
        if engine.watermark >= FOREVER:
            # Flushed (the end of a replay): report the watermark the events reached.
            return engine.max_seen - engine.params.allowed_lateness_ms
        return engine.watermark if engine.watermark > NEVER else None

    @property
    def pending(self) -> int:
        return self.engine.pending()

    @property
    def subjects(self) -> int:
        return self._count_subjects()

    @property
    def stats(self) -> EngineStats:
        return self.engine.stats


class SingleEngineView:
    """A PipelineView of one engine as partition 0, with no consumer: `replay`."""

    __slots__ = ("_partitions",)

    def __init__(self, engine: Engine) -> None:
        def count_subjects() -> int:
            return sum(1 for _ in engine.store.subjects())

        self._partitions = {0: EnginePartition(engine, count_subjects)}

    def partitions(self) -> Mapping[int, PartitionView]:
        return self._partitions

    def consumer_lag(self) -> Mapping[tuple[str, int], int]:
        return {}
