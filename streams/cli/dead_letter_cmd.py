"""`consentwatch dead-letters resend`: dead letters' original bytes back to their topic."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from streams.cli.filters import time_option
from streams.cli.options import kafka_options, resolve_kafka, wire_options

__all__ = ["dead_letters"]


@click.group("dead-letters")
def dead_letters() -> None:
    """The dead-letter topic: records the worker could not use, with their bytes."""


@dead_letters.command("resend")
@kafka_options
@wire_options
@click.option("--reason", metavar="CODE", help="Only letters with this reason code "
              "(e.g. future_timestamp, unknown_fingerprint).")
@click.option("--source", metavar="TOPIC", help="Only letters from this topic.")
@click.option("--since", "since_ms", callback=time_option, metavar="TIME",
              help="Only letters dead-lettered at or after TIME (RFC 3339 or epoch ms).")
@click.option("--dry-run", is_flag=True, help="Say what would be re-sent; send nothing.")
def resend(broker: str | None, topic_prefix: str, kafka_config: Path | None,
           wire_format: str, schema_registry: str | None, subject_name_strategy: str,
           reason: str | None, source: str | None, since_ms: int | None,
           dry_run: bool) -> int:
    """Re-send the chosen dead letters' original bytes to the input topic they came from.

    Once the cause is fixed (a producer's clock, a schema now deployed), the worker
    reads them again as new records. Each is keyed as `produce` keys events (the key is
    derived from the decoded event); a letter whose bytes do not decode is named and
    not sent (exit status 1). Prints one line per letter: topic, partition, offset and
    reason, never the content. Re-sending a letter twice sends its event twice (the
    findings' ids are deterministic, so a finding is not minted twice).
    """
    from streams.kafka.kafka_io import read_outputs
    from streams.model.findings import DeadLetter
    from streams.pipeline.resend import LetterSelection, Resend, plan_resend
    from streams.pipeline.resend import resend as send_all
    from streams.serde.wire import wire_format as make_wire_format

    connection, names = resolve_kafka(broker, topic_prefix, kafka_config)
    framing = make_wire_format(wire_format, schema_registry, subject_name_strategy,
                               names.inputs)
    selection = LetterSelection(reason, source, since_ms)

    def unreadable(record: object, exc: Exception) -> None:
        click.echo(f"consentwatch: skipped an unreadable dead letter: {type(exc).__name__}",
                   err=True)

    async def chosen() -> list[Resend]:
        plans = []
        async for item in read_outputs(connection, names.dead_letters, False,
                                       on_error=unreadable):
            if isinstance(item, DeadLetter) and selection.matches(item):
                plans.append(plan_resend(item, names, framing))
        return plans

    plans = asyncio.run(chosen())
    verb = "would resend" if dry_run else "resend"
    for plan in plans:
        if plan.problem is None:
            click.echo(f"{verb} {plan.where()} to {plan.topic}")
        else:
            click.echo(f"cannot resend {plan.where()}: {plan.problem}")
    sendable = [plan for plan in plans if plan.problem is None]
    sent = 0 if dry_run else asyncio.run(send_all(connection, sendable))
    click.echo(f"consentwatch: {len(plans)} dead letters selected, {sent} re-sent"
               f"{' (dry run)' if dry_run else ''}, {len(plans) - len(sendable)} cannot be",
               err=True)
    return 1 if len(sendable) < len(plans) else 0
