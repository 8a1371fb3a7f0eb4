"""`replay`: run the engine over a file of events, end to end, with no Kafka."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO

import orjson

from streams.engine import DictStore, Engine, EngineParams
from streams.errors import InvalidEvent
from streams.model.events import Event
from streams.model.findings import Amendment, DeadLetter, Finding, file_dead_letter
from streams.privacy.pseudonymise import Pseudonymiser, default_pseudonymiser
from streams.serde.jsonl import dump_line, event_to_json

__all__ = ["ReplaySummary", "replay_records"]


@dataclass(slots=True)
class ReplaySummary:
    records: int = 0
    events: int = 0
    findings: int = 0
    amendments: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    late: int = 0


def replay_records(
    records: Iterable[tuple[int, Event | DeadLetter]],
    findings_out: IO[bytes],
    params: EngineParams | None = None,
    dead_letters_out: IO[bytes] | None = None,
    amendments_out: IO[bytes] | None = None,
    on_dead_letter: Callable[[DeadLetter], None] | None = None,
    on_amendment: Callable[[Amendment], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    engine: Engine | None = None,
    pseudonymiser: Pseudonymiser | None = None,
    source: str = "replay",
) -> ReplaySummary:
    """Feed every record to one engine, then flush it; write each output as it appears.

    Findings and amendments are written with their evidence pseudonymised by
    `pseudonymiser` (default: the development key's). An event the engine refuses (a
    trigger beyond its horizon) is a dead letter of `source` whose payload is the event
    in its JSON Lines form.
    """
    run = _Run(engine or Engine(DictStore(), params), pseudonymiser or default_pseudonymiser(),
               findings_out, amendments_out, dead_letters_out, on_dead_letter, on_amendment,
               on_progress, source)
    # A batch run: the engine's state makes no reference cycles, so the cyclic
    # collector would only spend time (about a third of it) finding nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        run.feed(records)
        run.emit(run.engine.flush())
    finally:
        if collecting:
            # Everything the run allocated sits in the youngest generation, unexamined:
            # without freezing it first, the next allocation after `enable` would have
            # the collector walk the whole state (seconds after a million events).
            # Frozen objects are still freed when no longer referenced.
            gc.freeze()
            gc.enable()
    engine = run.engine
    summary = run.summary
    summary.events = summary.records - summary.dead_letters
    summary.duplicates = engine.stats.duplicates
    summary.late = engine.stats.late
    return summary


class _Run:
    """One replay: the engine and where its outputs go.

    A class rather than closures so that, compiled (streams.native), the per-record
    calls are direct calls.
    """

    def __init__(
        self,
        engine: Engine,
        pseudonymiser: Pseudonymiser,
        findings_out: IO[bytes],
        amendments_out: IO[bytes] | None,
        dead_letters_out: IO[bytes] | None,
        on_dead_letter: Callable[[DeadLetter], None] | None,
        on_amendment: Callable[[Amendment], None] | None,
        on_progress: Callable[[int], None] | None,
        source: str,
    ) -> None:
        self.engine = engine
        self.source = source
        self.pseudonymiser = pseudonymiser
        self.findings_out = findings_out
        self.amendments_out = amendments_out
        self.dead_letters_out = dead_letters_out
        self.on_dead_letter = on_dead_letter
        self.on_amendment = on_amendment
        self.on_progress = on_progress
        self.summary = ReplaySummary()
        # A trigger re-sent after the engine's dedupe horizon is decided again, with the
        # same finding id; one file never lists a finding twice.
        self.written: set[str] = set()

    def emit(self, outputs: list[Finding | Amendment]) -> None:
        summary = self.summary
        for output in outputs:
            if type(output) is Finding:
                if output.finding_id in self.written:
                    continue
                self.written.add(output.finding_id)
                summary.findings += 1
                self.findings_out.write(dump_line(self.pseudonymiser.finding(output)))
            else:
                summary.amendments += 1
                if self.amendments_out is not None:
                    self.amendments_out.write(
                        dump_line(self.pseudonymiser.amendment(output)))  # type: ignore[arg-type]
                if self.on_amendment is not None:
                    self.on_amendment(output)  # type: ignore[arg-type]

    def feed(self, records: Iterable[tuple[int, Event | DeadLetter]]) -> None:
        summary = self.summary
        engine = self.engine
        on_progress = self.on_progress
        # The record count lives in a local while the loop runs (once per record), and
        # is stored in `summary` whenever something may look at it, and at the end.
        count = summary.records
        try:
            for position, item in records:
                count += 1
                if type(item) is not DeadLetter:
                    try:
                        outputs = engine.process(item)  # type: ignore[arg-type]
                    except InvalidEvent as refused:
                        summary.records = count
                        self.dead_letter(self.refused(position, item, refused))  # type: ignore[arg-type]
                        continue
                    if outputs:
                        self.emit(outputs)
                else:
                    summary.records = count
                    self.dead_letter(item)
                if on_progress is not None and count % 65_536 == 0:
                    summary.records = count
                    on_progress(count)
        finally:
            summary.records = count

    def refused(self, position: int, event: Event, error: InvalidEvent) -> DeadLetter:
        """The dead letter of an event the engine refused: it was valid, so its payload is
        the event in its JSON Lines form (what `replay` reads again)."""
        return file_dead_letter(self.source, position, error.code, error.message,
                                orjson.dumps(event_to_json(event)))

    def dead_letter(self, item: DeadLetter) -> None:
        self.summary.dead_letters += 1
        if self.dead_letters_out is not None:
            self.dead_letters_out.write(dump_line(item))
        if self.on_dead_letter is not None:
            self.on_dead_letter(item)
