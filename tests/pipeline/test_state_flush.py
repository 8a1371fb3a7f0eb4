"""A state flush that fails before its records reach the producer still ends the batches
that waited for it (unacknowledged), rather than leaving their commits waiting."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from streams.pipeline import worker


class _Broken(Exception):
    pass


def test_the_batches_waiting_for_a_failed_flush_fail_with_it() -> None:
    async def scenario() -> None:
        pipeline: Any = object.__new__(worker._Pipeline)
        pipeline.table = SimpleNamespace(
            changelog_topic=SimpleNamespace(get_topic_name=lambda: "changelog"))
        pipeline._producer = SimpleNamespace

        def flush() -> list[tuple[bytes, bytes]]:
            raise _Broken

        waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        part = SimpleNamespace(waiting=[waiting], dirty_since=1.0,
                               store=SimpleNamespace(flush=flush))
        with pytest.raises(_Broken):
            await pipeline._flush(part, 0)
        assert waiting.done()
        with pytest.raises(_Broken):
            waiting.result()
        assert part.waiting == [] and part.dirty_since is None

    asyncio.run(scenario())
