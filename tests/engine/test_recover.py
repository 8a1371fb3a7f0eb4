"""A partition's engine after a restart or a rebalance (`Engine.recover`): its deadline
index rebuilt and the findings to send again, in one pass over the stored subjects,
with the same result as `restore_deadlines` and then `decided_since`."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks.mix import generate
from streams.engine import DictStore, Engine, EngineParams
from streams.engine.state import AccountState, SubjectState
from streams.pipeline.positions import resend_after

PARAMS = EngineParams(allowed_lateness_ms=1_000, notice_grace_ms=120_000)


class _CountingStore:
    """A plain store (a DictStore inside: the compiled one cannot be subclassed) that
    counts the passes over its subjects and the subjects they read."""

    def __init__(self, inner: DictStore) -> None:
        self.inner = inner
        self.passes = 0
        self.reads = 0
        self.subject = inner.subject
        self.put_subject = inner.put_subject
        self.account = inner.account
        self.put_account = inner.put_account

    def delete_subject(self, subject_id: str) -> None:
        self.inner.delete_subject(subject_id)

    def subjects(self) -> Iterator[tuple[str, SubjectState]]:
        self.passes += 1
        for item in self.inner.subjects():
            self.reads += 1
            yield item

    def accounts(self) -> Iterator[tuple[str, AccountState]]:
        return self.inner.accounts()


def _half_decided(seed: int) -> DictStore:
    """A partition's stored state part-way: triggers decided at positions 0.. as the
    watermark passed them, the later ones still pending."""
    store = DictStore()
    engine = Engine(store, PARAMS, external_watermark=True)
    events = list(generate(6_000, 400, seed))
    times = sorted(event.occurred_at for event in events)
    for position, event in enumerate(events):
        engine.process(event, position=position)
        if position % 500 == 499:
            engine.advance_to(times[position * 2 // 3], position=position)
    assert engine.pending() > 500
    return store


def _ids(outputs: list[Any]) -> list[str]:
    return [getattr(o, "finding_id", None) or o.amendment_id for o in outputs]


def _without_clock(outputs: list[Any]) -> list[Any]:
    return [dataclasses.replace(o, detected_at=0) for o in outputs]


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("since", ["offset", "per_source"])
def test_recover_is_restore_deadlines_then_decided_since_in_one_pass(seed: int,
                                                                      since: str) -> None:
    store = _half_decided(seed)
    counting = _CountingStore(store)
    recovered = Engine(counting, PARAMS, external_watermark=True)  # type: ignore[arg-type]
    apart = Engine(_half_decided(seed), PARAMS, external_watermark=True)  # the same, apart
    if since == "offset":
        got = recovered.recover(3_000)
        apart.restore_deadlines()
        expected = apart.decided_since(3_000)
    else:
        again = resend_after({0: 3_000})  # positions of source 0 from offset 3,000 on
        got = recovered.recover(0, again)
        apart.restore_deadlines()
        expected = apart.decided_since(0, again)

    assert counting.passes == 1 and counting.reads == len(store.subject_states)
    assert len(got) > 50
    assert _without_clock(got) == _without_clock(expected)
    assert recovered.pending() == apart.pending() > 500
    # The same index: the rest is decided alike, in the same order.
    rest = recovered.flush()
    assert len(rest) > 500
    assert _ids(rest) == _ids(apart.flush())
