"""`consentwatch simulate`: a meeting platform's traffic, and the findings it must raise."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import IO

import click

from streams.cli.options import (
    Finite,
    distinct_files,
    kafka_options,
    resolve_kafka,
    wire_options,
)
from streams.model.events import Event

__all__ = ["simulate"]

SHARE = Finite(0.0, 1.0)


@click.command()
@click.option("--seed", type=int, default=1, show_default=True,
              help="The same seed gives the same traffic, byte for byte.")
@click.option("--events", type=click.IntRange(min=0), default=10_000, show_default=True,
              help="How many events to deliver (duplicates included).")
@click.option("--out", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="Write the events here: an Avro container if the name ends in .avro, "
              "else JSON Lines; default stdout (JSON Lines) unless --kafka.")
@click.option("--truth", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the findings the spec requires here (JSON Lines: rule, subject_id, "
              "trigger_event_id, evidence_event_ids).")
@click.option("--guest-share", type=SHARE, default=0.2, show_default=True,
              help="Share of participants who join as guests.")
@click.option("--pseudonym-share", type=SHARE, default=0.1, show_default=True,
              help="Share of joins under a pseudonym.")
@click.option("--duplicate-share", type=SHARE, default=0.01, show_default=True,
              help="Share of events delivered twice.")
@click.option("--kafka", "to_kafka", is_flag=True,
              help="Produce the events to their Kafka topics instead of writing a file.")
@kafka_options
@wire_options
@click.option("--rate", type=Finite(min=0.1), metavar="EVENTS_PER_S",
              help="With --kafka: send at most this many events per second.")
def simulate(seed: int, events: int, out: Path | None, truth: Path | None,
             guest_share: float, pseudonym_share: float, duplicate_share: float,
             to_kafka: bool, broker: str | None, topic_prefix: str, kafka_config: Path | None,
             wire_format: str, schema_registry: str | None, subject_name_strategy: str,
             rate: float | None) -> int:
    """Simulate a meeting platform's events and write the ground truth beside them.

    Accounts and hosts turn the enrichment integration on or off; participants
    (some guests, some under pseudonyms) join meetings; the platform sends their
    data automatically (also where nobody turned the feature on), the provider
    matches them, others open their profiles; consents are granted, withdrawn or
    expire; notices come on time, late or never. Delivery is out of order within
    the 30 s allowed lateness, with duplicates.
    """
    from streams.simulate import Expected, SimulationConfig
    from streams.simulate import simulate as generate
    from streams.simulate.output import format_for, write_events, write_expected

    if to_kafka and out is not None:
        raise click.UsageError("--out and --kafka exclude each other")
    distinct_files(**{"--out": out, "--truth": truth})
    if rate is not None and not to_kafka:
        raise click.UsageError("--rate applies to --kafka only")
    config = SimulationConfig(seed=seed, events=events, guest_share=guest_share,
                              pseudonym_share=pseudonym_share, duplicate_share=duplicate_share)
    rules: Counter[str] = Counter()
    with ExitStack() as stack:
        truth_out = stack.enter_context(_open(truth)) if truth is not None else None

        def record(expected: Expected) -> None:
            rules[expected.rule] += 1
            if truth_out is not None:
                write_expected(truth_out, expected)

        stream = generate(config, record)
        if to_kafka:
            sent = _produce(stream, broker, topic_prefix, kafka_config, wire_format,
                            schema_registry, subject_name_strategy, rate)
        else:
            target: IO[bytes] = (sys.stdout.buffer if out is None or str(out) == "-"
                                 else stack.enter_context(_open(out)))
            sent = write_events(target, stream, format_for(str(out or "-")), seed)
            target.flush()
    summary = ", ".join(f"{rule} {count}" for rule, count in sorted(rules.items()))
    click.echo(f"consentwatch: simulated {sent} events (seed {seed}); expected findings: "
               f"{sum(rules.values())} ({summary or 'none'})", err=True)
    return 0


def _produce(stream: Iterable[Event], broker: str | None, topic_prefix: str,
             kafka_config: Path | None, wire_format: str, schema_registry: str | None,
             subject_name_strategy: str, rate: float | None) -> int:
    import asyncio

    from streams.kafka.kafka_io import produce_events
    from streams.serde.wire import wire_format as make_wire_format

    connection, names = resolve_kafka(broker, topic_prefix, kafka_config)
    framing = make_wire_format(wire_format, schema_registry, subject_name_strategy,
                               names.inputs)
    return asyncio.run(produce_events(connection, names, stream,
                                      framing=framing, rate=rate))


def _open(path: Path) -> IO[bytes]:
    try:
        return open(path, "wb")
    except OSError as exc:
        raise click.UsageError(f"cannot open {path}: {exc.strerror}") from None
