"""`consentwatch ledger run` and `ledger load`: findings and amendments into the ledger.

`run` reads the findings and amendments topics (consumer group
`<prefix>.ledger.<ledger id>`, so each ledger keeps its own position);
`load` reads files written by `replay --out` / `--amendments`, so an audit of archived
events needs no Kafka. Both sign a checkpoint when given a key.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import IO

import click

from streams.cli.evidence_cmds import ledger_option
from streams.cli.options import kafka_options, resolve_kafka

__all__ = ["ledger"]

_optional_key = click.option(
    "--private-key", envvar="CONSENTWATCH_SIGNING_KEY",
    type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
    help="Ed25519 private key (PEM) to sign checkpoints with (or CONSENTWATCH_SIGNING_KEY); "
         "without it no checkpoint is signed.")


@click.group()
def ledger() -> None:
    """The evidence ledger: every finding stored once, append-only, as a Merkle leaf."""


@ledger.command("run")
@ledger_option
@kafka_options
@_optional_key
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=500, show_default=True,
              help="Most records stored per transaction.")
@click.option("--checkpoint-interval", type=click.FloatRange(min=0), default=10,
              show_default=True, metavar="SECONDS",
              help="Sign at most one checkpoint per interval while records arrive (one more "
                   "when they stop).")
def run(ledger_url: str, broker: str | None, topic_prefix: str, kafka_config: Path | None,
        private_key: Path | None, batch_size: int, checkpoint_interval: float) -> int:
    """Consume the findings and amendments topics into the ledger until SIGTERM/Ctrl-C.

    Each batch is stored in one transaction and its offsets committed after it, so a
    crash loses nothing and the ledger, idempotent by id, doubles nothing.
    """
    from streams.evidence.keys import KEY_NAME, load_private_key
    from streams.evidence.ledger import open_ledger
    from streams.evidence.ledger.consume import (
        ConsumerSettings,
        RunStats,
        consume_into_ledger,
        ledger_group_id,
    )

    connection, names = resolve_kafka(broker, topic_prefix, kafka_config)
    key = None if private_key is None else load_private_key(private_key)
    settings = ConsumerSettings(batch_size=batch_size, checkpoint_interval_s=checkpoint_interval,
                                key=key, key_name=KEY_NAME)
    store = open_ledger(ledger_url)

    def skipped(topic: str, partition: int, offset: int, code: str) -> None:
        click.echo(f"consentwatch: skipped {topic} partition {partition} offset {offset}: "
                   f"{code}", err=True)

    def progress(stats: RunStats, size: int) -> None:
        click.echo(f"consentwatch: ledger holds {size} entries ({stats.stored} stored by this "
                   f"run, {stats.duplicates} already there, {stats.checkpoints} checkpoints)",
                   err=True)

    def caught_up(stats: RunStats) -> None:
        click.echo(f"consentwatch: caught up {stats.findings_read} findings, "
                   f"{stats.amendments_read} amendments from the topics ({stats.stored} new "
                   "to this ledger)", err=True)

    async def main() -> RunStats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        group = ledger_group_id(names, await asyncio.to_thread(store.ledger_id))
        click.echo(f"consentwatch: ledger run: {names.findings} and {names.amendments} as "
                   f"group {group}", err=True)
        return await consume_into_ledger(connection, names, store, settings, stop,
                                         on_skip=skipped, on_progress=progress,
                                         on_caught_up=caught_up)

    try:
        stats = asyncio.run(main())
    finally:
        store.close()
    click.echo(f"consentwatch: stopped: {stats.stored} stored, {stats.duplicates} already "
               f"there, {stats.skipped} skipped, {stats.checkpoints} checkpoints", err=True)
    return 0


@ledger.command("load")
@click.argument("findings", type=click.Path(exists=True, dir_okay=False, allow_dash=True,
                                            path_type=Path))
@ledger_option
@click.option("--amendments", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="FILE", help="Also load the amendments of `replay --amendments FILE`.")
@_optional_key
def load(findings: Path, ledger_url: str, amendments: Path | None,
         private_key: Path | None) -> int:
    """Load FINDINGS (JSON Lines from `replay --out`; `-` reads stdin) into the ledger.

    A bad line is reported with its number and skipped (exit status 1); the rest is stored.
    """
    from streams.evidence.keys import KEY_NAME, load_private_key
    from streams.evidence.ledger import Kind, open_ledger
    from streams.evidence.ledger.load import load_jsonl

    key = None if private_key is None else load_private_key(private_key)
    store = open_ledger(ledger_url)
    bad = 0
    try:
        sources: list[tuple[Kind, Path]] = [("finding", findings)]
        if amendments is not None:
            sources.append(("amendment", amendments))
        for kind, path in sources:
            def report(number: int, reason: str, path: Path = path) -> None:
                click.echo(f"consentwatch: {path}:{number}: {reason}", err=True)

            with _open(path) as stream:
                stats = load_jsonl(store, kind, stream, report)
            bad += stats.bad
            click.echo(f"consentwatch: {path}: {stats.stored} {kind}s stored, "
                       f"{stats.duplicates} already there, {stats.bad} bad lines", err=True)
        if key is not None:
            store.checkpoint(key, KEY_NAME)
        click.echo(f"consentwatch: ledger holds {store.size()} entries", err=True)
    finally:
        store.close()
    return 1 if bad else 0


def _open(path: Path) -> IO[bytes]:
    if str(path) == "-":
        return sys.stdin.buffer
    return open(path, "rb")
