"""The end of input (`flush`, `decide_pending`) decides a backlog's pending deadlines
sorted once instead of popped from the heap one by one: the same decisions, in the same
order, as a plain advance of the watermark past them (`advance_to`, the heap's path)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from benchmarks.mix import generate
from streams.engine import DictStore, Engine, EngineParams
from streams.engine.core import FOREVER

# Lateness and grace small against the mix's hours, so a backlog leaves most triggers
# pending and deciding them adds notice-stage deadlines on the way (`_settle_notices`).
PARAMS = EngineParams(allowed_lateness_ms=1_000, notice_grace_ms=120_000)


def _backlog(events: int, subjects: int, seed: int) -> Engine:
    """An engine whose watermark comes from outside and never moved: every trigger of
    the events pending, as in a worker that read its inputs one topic after another."""
    engine = Engine(DictStore(), PARAMS, external_watermark=True)
    for event in generate(events, subjects, seed):
        engine.process(event)
    return engine


def _without_clock(outputs: list[Any]) -> list[Any]:
    """The outputs, their wall-clock detection time aside (each engine read the clock)."""
    return [dataclasses.replace(o, detected_at=0) if hasattr(o, "detected_at") else o
            for o in outputs]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("end", ["flush", "decide_pending"])
def test_the_end_of_input_decides_as_the_heap_would(seed: int, end: str) -> None:
    sorted_path, heap_path = _backlog(6_000, 400, seed), _backlog(6_000, 400, seed)
    assert sorted_path.pending() > 1_000
    decide: Callable[[], list[Any]] = getattr(sorted_path, end)
    got = decide()
    expected = heap_path.advance_to(sorted_path.watermark)  # the heap's path to the same
    assert len(got) > 500
    assert _without_clock(got) == _without_clock(expected)
    assert sorted_path.pending() == heap_path.pending() == 0
    assert sorted_path.watermark == heap_path.watermark
    assert end != "flush" or sorted_path.watermark == FOREVER
    assert sorted_path._deadlines == heap_path._deadlines == []


class _FailingStore:
    """A plain store (a DictStore inside: the compiled one cannot be subclassed) whose
    subject lookups fail once `fail_after` more were made."""

    def __init__(self) -> None:
        self.inner = DictStore()
        self.fail_after: int | None = None
        self.put_subject = self.inner.put_subject
        self.account = self.inner.account
        self.put_account = self.inner.put_account
        self.delete_subject = self.inner.delete_subject
        self.subjects = self.inner.subjects
        self.accounts = self.inner.accounts

    def subject(self, subject_id: str) -> Any:
        if self.fail_after is not None:
            if self.fail_after == 0:
                raise OSError("the store is away")
            self.fail_after -= 1
        return self.inner.subject(subject_id)


@pytest.mark.parametrize("end", ["flush", "decide_pending"])
def test_a_decision_that_fails_at_the_end_of_input_leaves_the_rest_pending(end: str) -> None:
    """As the heap's path does: what was not decided stays indexed (a caller that goes on
    after the error decides it later), the failed one is lost with its error."""
    store = _FailingStore()
    engine = Engine(store, PARAMS, external_watermark=True)
    for event in generate(6_000, 400, 1):
        engine.process(event)
    assert engine.pending() > 1_000
    store.fail_after = 100
    with pytest.raises(OSError):
        getattr(engine, end)()
    store.fail_after = None
    assert len(engine.flush()) > 500
    assert engine.pending() <= 2  # the failed decision's stages, never decided
