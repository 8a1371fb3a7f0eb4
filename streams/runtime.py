"""Process-wide settings for consentwatch's long runs (replay, the worker)."""

from __future__ import annotations

import gc
import time

__all__ = ["StateCollector", "exit_without_teardown", "fast_exit_requested", "tune_gc"]

# What a command asked to keep until the process ends (see `exit_without_teardown`).
_kept: list[object] = []


def tune_gc() -> None:
    """Collect garbage less often.

    The engine keeps many small long-lived objects (events, per-subject state) and
    makes no reference cycles on its hot path, so with CPython's default threshold
    (a collection every 700 allocations) a large share of the time goes to
    collections that free nothing. Measured on the benchmark mix: about 1.3x
    faster with this threshold. Objects loaded before the run are frozen out of
    collection altogether.
    """
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


class StateCollector:
    """Keeps the cyclic collector off the worker's long-lived state.

    The state grows to millions of objects and makes no reference cycles, yet each
    time the old generation grows by a quarter CPython walks all of it, and each object
    a batch leaves alive is walked by a young collection first. After each batch,
    `keep` freezes what is alive without examining it: under a backlog of the 1M mix
    the young collections took 1.3 s of the worker's 21 s of CPU, and those still run
    with a freeze per batch freed 2,109 objects in all. After each state flush,
    `settle` collects the young generation (where the cycles of asyncio and the Kafka
    client die) and freezes what survived. Every `full_every_s` it unfreezes everything
    and runs one full collection, so a cycle that was frozen is freed within that time
    and memory stays bounded.
    """

    # With a freeze after every batch, a young collection is due only inside a batch of
    # more allocations than this (the CLI's default, `tune_gc`, is 100,000).
    YOUNG_THRESHOLD = 1_000_000

    def __init__(self, full_every_s: float = 600.0) -> None:
        self.full_every_s = full_every_s
        self._full_at = time.monotonic()

    def start(self) -> None:
        """The young threshold for a worker (`build_app`), process-wide: the other
        commands keep the CLI's (`tune_gc`)."""
        _, middle, old = gc.get_threshold()
        gc.set_threshold(self.YOUNG_THRESHOLD, middle, old)

    def keep(self) -> None:
        """After a batch: what it left alive (the engine's state, mostly) is frozen
        unexamined; a reference cycle among it waits for the next full collection."""
        gc.freeze()

    def settle(self) -> None:
        now = time.monotonic()
        if now - self._full_at >= self.full_every_s:
            self._full_at = now
            gc.unfreeze()
            gc.collect()
        else:
            gc.collect(0)
        gc.freeze()


def exit_without_teardown(*keep: object) -> None:
    """Let the process end without freeing `keep` (and everything else) one object at a
    time.

    A replay of a million events ends holding millions of small objects; freeing them
    at the end of the command and again at interpreter shutdown took about a tenth of
    the run, for nothing: the process is about to end. The console script
    (`streams.cli.app.run`) then ends the process with `os._exit` once the output is
    flushed. Called in-process (tests), it only keeps `keep` alive until the next call.
    """
    _kept[:] = [True, *keep]


def fast_exit_requested() -> bool:
    return bool(_kept)
