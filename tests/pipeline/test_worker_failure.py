"""A batch that fails half-way stops the worker, persisting nothing of it."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.kafka.connection import KafkaConnection
from streams.pipeline import worker


@dataclass
class _TP:
    topic: str
    partition: int


@dataclass
class _Record:
    offset: int


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The exit statuses `os._exit` was called with (it raises SystemExit instead)."""
    statuses: list[int] = []

    def fake_exit(code: int) -> None:
        statuses.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(worker.os, "_exit", fake_exit)
    monkeypatch.setattr(logging, "shutdown", lambda: None)
    return statuses


def test_a_batch_that_fails_half_way_ends_the_process_and_logs_no_record_data(
        exits: list[int], caplog: pytest.LogCaptureFixture) -> None:
    # An encoder crash once let a later state flush mark the batch's events as seen:
    # after the restart they were duplicates, and the amendment they caused was lost.

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


def test_a_bug_met_on_a_record_is_logged_without_the_exception_text(
        caplog: pytest.LogCaptureFixture) -> None:
    """An engine or decoder bug is logged with its type and traceback; its text may quote
    the record (a name, an email) and is left out."""
    caplog.set_level(logging.ERROR, logger=worker.log.name)
    email = "@".join(("zoe", "example.com"))  # not on the line the traceback quotes
    try:
        raise ValueError(f"bad value {email!r}")
    except ValueError:
        worker._log_bug("engine error at %s[%s]@%s", "events", 3, 17)
    text = caplog.text
    assert "engine error at events[3]@17" in text
    assert "ValueError" in text and "test_worker_failure.py" in text
    assert "zoe@example.com" not in text


def test_a_batch_not_delivered_ends_the_process_and_logs_no_record_data(
        exits: list[int], caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    # Logged only, it left the partition's commits stuck while later state was flushed:
    # after the restart the batch's events were duplicates, their amendments lost.
    app = worker.build_app(worker.WorkerSettings(connection=KafkaConnection("127.0.0.1:9"),
                                                 data_dir=tmp_path, store="memory"))
    consumer_class = app.transport.Consumer
    error = RuntimeError("{'display_name': 'Alice Liddell', 'email': 'alice@example.com'}")
    with caplog.at_level(logging.CRITICAL, logger="consentwatch.worker"), \
            pytest.raises(SystemExit):
        consumer_class.on_failed_delivery(_TP("in.consent", 3), range(41, 43), error)
    assert exits == [worker.EXIT_BATCH_FAILED]
    assert "in.consent[3] from offset 41 was not delivered (RuntimeError)" in caplog.text
    assert "alice" not in caplog.text.lower()
