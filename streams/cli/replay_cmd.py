"""`consentwatch replay`: findings from a file of events, no Kafka needed."""

from __future__ import annotations

import errno
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from streams.cli.options import (
    distinct_files,
    engine_options,
    make_params,
    make_pseudonymiser,
    max_future_skew_option,
    printable_path,
    pseudonym_key_option,
    warn_development_key,
)
from streams.model.findings import Amendment, DeadLetter
from streams.serde.dead_letter_limit import DEFAULT_PER_BLOCK, DEFAULT_PER_RUN, DeadLetterLimit

if TYPE_CHECKING:
    from streams.metrics import PipelineMetrics
    from streams.replay import ReplaySummary

__all__ = ["replay"]


@click.command()
@click.argument("events", type=click.Path(exists=True, dir_okay=False, allow_dash=True,
                                          path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write findings here (JSON Lines); default (or -) stdout.")
@engine_options
@max_future_skew_option
@click.option("--dead-letter", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write invalid records here (JSON Lines, with reason and original bytes).")
@click.option("--amendments", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write amendments caused by late events here (JSON Lines).")
@click.option("--metrics-file", type=click.Path(dir_okay=False, path_type=Path),
              help="At the end, write the run's metrics here in the Prometheus text format "
                   "(for node_exporter's textfile collector: name it *.prom).")
@click.option("--max-dead-letters", type=click.IntRange(min=0), default=DEFAULT_PER_RUN,
              show_default=True,
              help="Of an Avro container, report and write with their bytes at most this "
                   "many invalid records; the others are counted, and the summary says how "
                   "many were left out. Every invalid JSON line is reported.")
@click.option("--max-dead-letters-per-block", type=click.IntRange(min=0),
              default=DEFAULT_PER_BLOCK, show_default=True,
              help="Of these, at most this many from any one block of an Avro container.")
@pseudonym_key_option
@click.option("--quiet", "-q", is_flag=True, help="No summary on stderr.")
def replay(
    events: Path,
    out: Path | None,
    allowed_lateness: float,
    notice_grace: float,
    notice_validity: float,
    max_future_skew: float,
    dead_letter: Path | None,
    amendments: Path | None,
    metrics_file: Path | None,
    max_dead_letters: int,
    max_dead_letters_per_block: int,
    pseudonym_key: Path | None,
    quiet: bool,
) -> int:
    """Replay EVENTS (JSON Lines or an Avro container file, '-' for stdin) through the engine.

    Exits 0 when every record was a valid event, 1 when some were not (each is
    reported on stderr with its line or record number), 2 on a usage error.
    """
    from streams.engine import DictStore, Engine
    from streams.replay import replay_records
    from streams.serde.sources import detect_format, read_events

    distinct_files(EVENTS=events, **{"--out": out, "--dead-letter": dead_letter,
                                     "--amendments": amendments,
                                     "--metrics-file": metrics_file})
    params = make_params(allowed_lateness, notice_grace, notice_validity,
                         max_future_skew_ms=round(max_future_skew * 1000))
    pseudonymiser = make_pseudonymiser(pseudonym_key)
    engine = Engine(DictStore(), params)
    metrics = _metrics() if metrics_file is not None else None
    limit = DeadLetterLimit(max_dead_letters, max_dead_letters_per_block)
    units = {"jsonl": "line", "avro": "record"}
    unit = "line"

    def report_dead(letter: DeadLetter) -> None:
        click.echo(f"consentwatch: {unit} {letter.position}: invalid event "
                   f"({letter.reason_code}): {letter.reason}", err=True)
        if metrics is not None:
            metrics.observe_dead_letter(letter.reason_code)

    def report_amendment(amendment: Amendment) -> None:
        if amendments is None:
            click.echo(f"consentwatch: amendment {amendment.kind} of {amendment.rule} finding "
                       f"{amendment.finding_id} by late event {amendment.late_event_id}", err=True)

    try:
        with ExitStack() as stack:
            source = (_stdin() if str(events) == "-"
                      else stack.enter_context(_open(events, "rb")))
            findings_out = (stack.enter_context(_open(out, "wb"))
                            if out and str(out) != "-" else _stdout())
            dead_out = stack.enter_context(_open(dead_letter, "wb")) if dead_letter else None
            amend_out = stack.enter_context(_open(amendments, "wb")) if amendments else None
            warn_development_key(pseudonymiser)
            fmt = detect_format(source)
            unit = units[fmt]
            # Capped in containers only, where one small block can hold millions of
            # invalid records; a JSON line is at most one, each reported (the spec).
            records = read_events(source, printable_path(events), fmt,
                                  limit if fmt == "avro" else None, params.max_future_skew_ms)
            summary = replay_records(
                records,
                findings_out,
                params=params,
                dead_letters_out=dead_out,
                amendments_out=amend_out,
                on_dead_letter=report_dead,
                on_amendment=report_amendment,
                engine=engine,
                pseudonymiser=pseudonymiser,
                source=printable_path(events),
            )
            findings_out.flush()
    except BrokenPipeError:
        raise  # the reader went away (`| head`): the app exits 1 without a word
    except OSError as exc:
        raise click.ClickException(_io_failure(exc)) from None
    _count_dropped(limit, summary, unit, metrics)
    from streams.runtime import exit_without_teardown

    exit_without_teardown(engine)
    if metrics is not None and metrics_file is not None:
        from streams.metrics import SingleEngineView, write_textfile

        # Read from the engine's own counters once, at the end: no work per event.
        metrics.view = SingleEngineView(engine)
        write_textfile(metrics, metrics_file)
    if not quiet:
        click.echo(
            f"consentwatch: replayed {summary.records} records: {summary.findings} findings, "
            f"{summary.amendments} amendments, {summary.duplicates} duplicates, "
            f"{summary.late} late, {summary.dead_letters} invalid",
            err=True,
        )
    return 1 if summary.dead_letters else 0


def _count_dropped(limit: DeadLetterLimit, summary: ReplaySummary, unit: str,
                   metrics: PipelineMetrics | None) -> None:
    """Count the invalid records the limit left out, and say so (even with --quiet)."""
    dropped = limit.dropped
    if not dropped:
        return
    summary.records += dropped
    summary.dead_letters += dropped
    for line in limit.summary_lines(unit):
        click.echo(f"consentwatch: {line}", err=True)
    if metrics is not None:
        for reason_code, count in limit.dropped_by_reason.items():
            metrics.observe_dead_letter(reason_code, count)


def _stdin() -> IO[bytes]:
    if sys.stdin is None:
        raise click.UsageError("cannot read events from standard input: it is closed")
    return sys.stdin.buffer


def _stdout() -> IO[bytes]:
    if sys.stdout is None:
        raise click.UsageError("cannot write findings to standard output: it is closed "
                               "(name a file with --out)")
    return sys.stdout.buffer


# Errors of writing, as opposed to reading: the disk or the quota is full, the file too
# large, the descriptor closed or not open for writing.
_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EBADF, errno.EPIPE})


def _io_failure(exc: OSError) -> str:
    what = "cannot write the output" if exc.errno in _WRITE_ERRORS else "input/output error"
    return f"replay stopped: {what}: {exc.strerror or exc}"


def _metrics() -> PipelineMetrics:
    from streams.metrics import PipelineMetrics

    return PipelineMetrics()


def _open(path: Path, mode: str) -> IO[bytes]:
    try:
        return open(path, mode, buffering=1 << 20)  # findings: some 250 MB a million events
    except OSError as exc:
        raise click.UsageError(f"cannot open {path}: {exc.strerror}") from None
