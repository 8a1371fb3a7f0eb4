"""The worker's recovery loop (`batch_recovery`): a batch of changelog records taken off
the queue at once is applied whole, with Faust's bookkeeping, whatever fails on the way.

Driven in-process on a stand-in for Faust's Recovery service (its attributes, as
Faust's loop reads them) and a stand-in table; the real restores are in
tests/pipeline/test_pipeline_kafka.py and test_cluster_faults.py.
"""

from __future__ import annotations

import asyncio
import collections
import types
from typing import Any

import pytest

from streams.kafka.faust_adapter import batch_recovery

BatchRecovery = batch_recovery()
TP = ("state-changelog", 0)
OTHER = ("state-changelog", 1)  # a partition not assigned here


class _Table:
    recovery_buffer_size = 1  # every record applied at once, as it comes

    def __init__(self, failures: int = 0) -> None:
        self.applied: list[int] = []
        self.failures = failures

    async def on_changelog_event(self, event: Any) -> None:
        return None

    def apply_changelog_batch(self, buffer: list[Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("a transient storage error")
        self.applied += [event.message.offset for event in buffer]


class _FailingQueue(asyncio.Queue[Any]):
    """A queue whose `get_nowait` raises once, after `good` items (Faust's changelog
    queue raises an error it was given instead of an item)."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.good = good

    def get_nowait(self) -> Any:
        if self.good == 0:
            self.good = -1
            raise ValueError("an error the queue held")
        self.good -= 1
        return super().get_nowait()


def _event(offset: int, tp: tuple[str, int] = TP) -> Any:
    return types.SimpleNamespace(message=types.SimpleNamespace(tp=tp, offset=offset))


def _recovery(table: _Table, queue: asyncio.Queue[Any], highwater: int) -> Any:
    """A stand-in for Faust's Recovery with one active partition to read to `highwater`."""
    rec: Any = types.SimpleNamespace()
    rec.app = types.SimpleNamespace(in_transaction=False)
    rec.tables = types.SimpleNamespace(changelog_queue=queue, standbys_ready=True,
                                       on_standbys_ready=lambda: None)
    rec.should_stop = False
    rec.signal_recovery_end = asyncio.Event()
    rec.active_tps, rec.standby_tps = {TP}, set()
    rec.tp_to_table = {TP: table}
    rec.active_offsets = collections.Counter({TP: -1})
    rec.standby_offsets = collections.Counter()
    rec.active_highwaters = {TP: highwater}
    rec.buffers = collections.defaultdict(list)
    rec.buffer_sizes = {}
    rec._active_events_received_at, rec._standby_events_received_at = {}, {}
    rec._processing_times = collections.deque()
    rec._last_active_event_processed_at = None
    rec.num_samples_required_for_estimate = 1000
    rec._actives_span = rec._standbys_span = None
    rec.in_recovery = True
    rec.need_recovery = lambda: any(high - rec.active_offsets[tp] > 0
                                    for tp, high in rec.active_highwaters.items())

    def flush_buffers() -> None:
        for owner, buffer in rec.buffers.items():
            owner.apply_changelog_batch(buffer)
            buffer.clear()

    def ended() -> None:
        rec.in_recovery = False

    rec.flush_buffers = flush_buffers
    rec._set_recovery_ended = ended
    rec.standby_remaining_total = lambda: 0
    rec._apply_changelog_event = types.MethodType(BatchRecovery._apply_changelog_event, rec)
    rec._end_if_recovered = types.MethodType(BatchRecovery._end_if_recovered, rec)
    return rec


async def _recover(rec: Any) -> bool:
    """Run the loop until it signals the end of recovery (True) or 5 s pass (False)."""
    task = asyncio.ensure_future(BatchRecovery._slurp_changelogs.fun(rec))
    try:
        await asyncio.wait_for(asyncio.shield(rec.signal_recovery_end.wait()), 5)
        return True
    except TimeoutError:
        return False
    finally:
        rec.should_stop = True
        task.cancel()


@pytest.mark.parametrize("failures", [0, 1, 3])
def test_a_failed_apply_loses_no_record_of_the_batch(failures: int) -> None:
    table = _Table(failures)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for offset in range(6):
        queue.put_nowait(_event(offset))
    rec = _recovery(table, queue, highwater=5)

    assert asyncio.run(_recover(rec))
    assert table.applied == list(range(6))
    assert rec.active_offsets[TP] == 5 and not rec.in_recovery


def test_records_after_an_error_the_queue_held_are_still_applied() -> None:
    async def run() -> tuple[bool, _Table]:
        table = _Table()
        queue = _FailingQueue(good=2)
        for offset in range(6):
            queue.put_nowait(_event(offset))
        return await _recover(_recovery(table, queue, highwater=5)), table

    ended, table = asyncio.run(run())
    assert ended
    assert table.applied == list(range(6))


def test_a_record_of_a_partition_not_assigned_here_is_left_out() -> None:
    table = _Table()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for event in (_event(0), _event(0, OTHER), _event(1)):
        queue.put_nowait(event)
    rec = _recovery(table, queue, highwater=1)

    assert asyncio.run(_recover(rec))
    assert table.applied == [0, 1]
    assert OTHER not in rec.active_offsets


def test_recovery_ends_only_once_every_partition_reached_its_highwater() -> None:
    table = _Table()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for offset in range(3):
        queue.put_nowait(_event(offset))
    rec = _recovery(table, queue, highwater=9)  # 3 to 9 never come

    assert not asyncio.run(_recover(rec))
    assert table.applied == [0, 1, 2] and rec.in_recovery
