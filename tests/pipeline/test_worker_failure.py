"""A batch that fails half-way stops the worker, persisting nothing of it."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import pytest

from streams.pipeline import worker


@dataclass
class _TP:
    topic: str
    partition: int


@dataclass
class _Record:
    offset: int


def test_a_batch_that_fails_half_way_ends_the_process_and_logs_no_record_data(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # An encoder crash once let a later state flush mark the batch's events as seen:
    # after the restart they were duplicates, and the amendment they caused was lost.
    exits: list[int] = []

    def fake_exit(code: int) -> None:
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(worker.os, "_exit", fake_exit)
    monkeypatch.setattr(logging, "shutdown", lambda: None)

    async def broken(tp: object, records: list[object]) -> None:
        raise ValueError("{'display_name': 'Alice Liddell', 'email': 'alice@example.com'}")

    handle = worker.stop_on_failure(broken)
    with caplog.at_level(logging.CRITICAL, logger="consentwatch.worker"), \
            pytest.raises(SystemExit):
        asyncio.run(handle(_TP("in.consent", 3), [_Record(41), _Record(42)]))
    assert exits == [worker.EXIT_BATCH_FAILED]
    assert "in.consent[3] from offset 41 failed (ValueError)" in caplog.text
    assert "alice" not in caplog.text.lower()


def test_a_batch_that_succeeds_passes_through() -> None:
    async def fine(tp: object, records: list[object]) -> str:
        return "delivered"

    handle = worker.stop_on_failure(fine)
    assert asyncio.run(handle(_TP("in.consent", 0), [_Record(1)])) == "delivered"
