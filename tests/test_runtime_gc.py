"""The worker's collector settings: long-lived state is frozen out of collections, and
a cycle that was frozen is freed by the next full collection."""

from __future__ import annotations

import gc
import weakref

from streams.runtime import StateCollector


class _Node:
    def __init__(self) -> None:
        self.other: object = None


def test_settle_freezes_survivors_and_a_full_pass_frees_frozen_cycles() -> None:
    was_frozen = gc.get_freeze_count()
    try:
        collector = StateCollector(full_every_s=3600)
        kept = [_Node() for _ in range(1000)]
        first, second = _Node(), _Node()  # a cycle that becomes garbage after the freeze
        first.other, second.other = second, first
        probe = weakref.ref(first)
        collector.settle()
        assert gc.get_freeze_count() >= was_frozen + len(kept)
        del first, second
        gc.collect()
        assert probe() is not None  # frozen: the collector does not look at it
        collector.full_every_s = 0
        collector.settle()  # the full pass: unfreeze, collect, freeze again
        assert probe() is None
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_keep_freezes_what_a_batch_left_alive_without_examining_it() -> None:
    was_frozen = gc.get_freeze_count()
    collecting = gc.isenabled()
    gc.disable()  # no automatic collection between the cycle's end and `keep`
    try:
        collector = StateCollector(full_every_s=3600)
        kept = [_Node() for _ in range(1000)]
        first, second = _Node(), _Node()
        first.other, second.other = second, first
        probe = weakref.ref(first)
        del first, second  # garbage already; no collection has seen it
        collector.keep()
        assert gc.get_freeze_count() >= was_frozen + len(kept)
        assert gc.get_count()[0] < 100  # the young generation starts again empty
        gc.collect()
        assert probe() is not None  # frozen with the rest: left to the full pass
        collector.full_every_s = 0
        collector.settle()
        assert probe() is None
    finally:
        gc.unfreeze()
        if collecting:
            gc.enable()


def test_start_raises_only_the_young_generations_threshold() -> None:
    before = gc.get_threshold()
    try:
        StateCollector().start()
        assert gc.get_threshold() == (StateCollector.YOUNG_THRESHOLD, *before[1:])
    finally:
        gc.set_threshold(*before)
