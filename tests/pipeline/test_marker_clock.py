"""An idle partition's watermark moves by when its markers were sent, not read."""

from __future__ import annotations

from streams.pipeline import worker
from streams.pipeline.watermarks import IDLE, SourceWatermarks

SOURCE = "events.consent:0"


def test_an_idle_partition_moves_by_when_its_markers_were_sent_not_when_they_are_read() -> None:
    """Read again later (a restart, a new owner), the same markers give the same watermarks."""
    def watermarks(read_at: list[int]) -> list[int | None]:
        marks = SourceWatermarks(lambda: [SOURCE])
        found = []
        for sent_at, _ in zip((1_000, 2_000, 5_000), read_at, strict=True):
            marks.update({SOURCE: (100, IDLE)})
            marker = type("Record", (), {"timestamp": sent_at})()
            found.append(marks.watermark(0, worker._sent_at(marker)))
        return found

    assert watermarks([1_000, 2_000, 5_000]) == watermarks([90_000, 90_001, 90_002]) \
        == [100, 1_100, 4_100]
    assert worker._sent_at(type("Record", (), {"timestamp": -1})()) > 0
