"""`consentwatch ledger run` and `ledger load`: findings and amendments into the ledger;
`findings`, `summary`, `exports`, `reviews`, `exceptions` and `status` read it;
`prove` writes a consistency proof between two tree sizes (for `verify --since` and the
witnesses); `checkpoint` signs and prints a checkpoint for the witnesses to cosign, and
`add-cosignature` stores what they cosigned (docs/witnesses.md).

`run` reads the findings and amendments topics (consumer group
`<prefix>.ledger.<ledger id>`, so each ledger keeps its own position);
`load` reads files written by `replay --out` / `--amendments`, so an audit of archived
events needs no Kafka. Both sign a checkpoint when given a key.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click
import orjson

from streams.cli.evidence_cmds import ledger_option
from streams.cli.filters import FindingFilter, filter_options
from streams.cli.options import Finite, kafka_options, resolve_kafka

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
@click.option("--checkpoint-interval", type=Finite(min=0), default=10,
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


def _selected(store: Any, wanted: FindingFilter) -> Iterator[dict[str, Any]]:
    """The ledger's findings that `wanted` keeps (the columns narrow the scan; every value
    compared comes from the leaf)."""
    for entry in store.entries(kind="finding", from_ms=wanted.from_ms, to_ms=wanted.to_ms,
                               rule=wanted.rule, account=wanted.account,
                               subject=wanted.subject):
        if wanted.matches(entry.record):
            yield entry.record


def _existing_ledger(ledger_url: str) -> Any:
    """The ledger at `ledger_url`; a file that does not exist is refused, never created
    (a typo must not read as an empty ledger)."""
    from streams.errors import ConfigError
    from streams.evidence.ledger import is_postgres_url, open_ledger

    if not is_postgres_url(ledger_url) and not Path(ledger_url).is_file():
        raise ConfigError(f"no ledger at {ledger_url}")
    return open_ledger(ledger_url)


@ledger.command("findings")
@ledger_option
@filter_options
def findings(ledger_url: str, **filters: Any) -> int:
    """Print the ledger's findings, filtered, as JSON Lines (in the order stored)."""
    wanted = FindingFilter.of(filters)
    out = sys.stdout.buffer
    with _existing_ledger(ledger_url) as store:
        for record in _selected(store, wanted):
            out.write(orjson.dumps(record) + b"\n")
    out.flush()
    return 0


@ledger.command("summary")
@ledger_option
@click.option("--by", "by", type=click.Choice(["account", "rule"]), required=True,
              help="Count the findings per account or per rule.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@filter_options
def summary(ledger_url: str, by: str, as_json: bool, **filters: Any) -> int:
    """Count the ledger's findings (filtered) per account or per rule."""
    from collections import Counter

    field = {"account": "account_id", "rule": "rule"}[by]
    with _existing_ledger(ledger_url) as store:
        counts = Counter(str(record.get(field, "")) for record in
                         _selected(store, FindingFilter.of(filters)))
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if as_json:
        click.echo(orjson.dumps({"by": by, "total": sum(counts.values()),
                                 "counts": dict(rows)}).decode())
        return 0
    _table([by, "findings"], [[name, str(count)] for name, count in rows]
           + [["total", str(sum(counts.values()))]])
    return 0


@ledger.command("exports")
@ledger_option
@click.option("--json", "as_json", is_flag=True, help="JSON Lines instead of a table.")
def exports(ledger_url: str, as_json: bool) -> int:
    """List the export trail: when, by whom, why, what query, how many findings."""
    from streams.model.timestamps import format_ms

    with _existing_ledger(ledger_url) as store:
        trail = store.exports()
    if as_json:
        for item in trail:
            click.echo(orjson.dumps(item).decode())
        return 0
    _table(["when", "actor", "purpose", "query", "findings", "amendments", "bundle sha256"],
           [[format_ms(item["at_ms"]), item["actor"], item["purpose"],
             _query_text(item["query"]), str(item["query"].get("findings", "")),
             str(item["query"].get("amendments", "")), item["bundle_sha256"][:16]]
            for item in trail])
    return 0


@ledger.command("reviews")
@click.argument("finding_id")
@ledger_option
@click.option("--json", "as_json", is_flag=True,
              help="JSON Lines: the status, then each review record.")
def reviews(finding_id: str, ledger_url: str, as_json: bool) -> int:
    """Show a finding's review status and its reviews, in ledger order."""
    from streams.errors import ConfigError
    from streams.evidence.review import fold
    from streams.model.timestamps import format_ms

    with _existing_ledger(ledger_url) as store:
        if store.finding(finding_id) is None:
            raise ConfigError("no finding of that finding_id in the ledger")
        trail = store.reviews(finding_id)
    status = fold(entry.record for entry in trail)
    if as_json:
        click.echo(orjson.dumps({"finding_id": finding_id} | status.to_dict()).decode())
        for entry in trail:
            click.echo(orjson.dumps(entry.record).decode())
        return 0
    click.echo(f"status: {_plain(status.label())}")
    _table(["when", "reviewer", "action", "details", "leaf"],
           [[format_ms(r["at_ms"]), _plain(r["reviewer"]), r["action"],
             _plain("; ".join(f"{k}={r[k]}" for k in _REVIEW_DETAILS if k in r)),
             str(entry.index)] for entry in trail for r in (entry.record,)])
    return 0


_REVIEW_DETAILS = ("assignee", "reason", "false_positive_kind", "duplicate_of", "text", "note")


@ledger.command("exceptions")
@ledger_option
@click.option("--account", help="Only the exceptions of this account.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines instead of a table.")
def exceptions(ledger_url: str, account: str | None, as_json: bool) -> int:
    """List the recorded exceptions (in force or expired), in ledger order."""
    import time

    from streams.model.timestamps import format_ms

    now = time.time_ns() // 1_000_000
    with _existing_ledger(ledger_url) as store:
        found = store.exceptions(account=account)
    if as_json:
        for entry in found:
            click.echo(orjson.dumps(entry.record).decode())
        return 0
    _table(["account", "provider", "rule", "occurred from", "to", "expires", "in force",
            "author", "reason"],
           [[_plain(e["account_id"]), _plain(e["provider"] or "any"), _plain(e["rule"] or "any"),
             format_ms(e["from_ms"]), format_ms(e["to_ms"]), format_ms(e["expires_at_ms"]),
             "yes" if e["at_ms"] <= now < e["expires_at_ms"] else "no", _plain(e["author"]),
             _plain(e["reason"])] for e in (entry.record for entry in found)])
    return 0


def _plain(value: Any) -> str:
    """A value for a terminal: control characters (escape sequences) written out."""
    text = str(value)
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


@ledger.command("status")
@ledger_option
@click.option("--json", "as_json", is_flag=True, help="JSON instead of text.")
def status(ledger_url: str, as_json: bool) -> int:
    """Size, latest checkpoint, and a check of the tree recomputed from the leaves.

    Exits 1 when a leaf disagrees with its bytes, the stored tree state is not the tree
    of the leaves, or the latest checkpoint is not a tree of these leaves.
    """
    from streams.evidence.ledger import LedgerTampered

    with _existing_ledger(ledger_url) as store:
        rows = store.checkpoint_rows()
        # The largest (a cosigned note of an older checkpoint may be stored after it).
        latest = max(reversed(rows), key=lambda row: row["size"]) if rows else None
        try:
            size, root, hashes = store.audit()
            problem = _checkpoint_problem(latest, hashes)
        except LedgerTampered as exc:
            size, root, problem = store.size(), None, str(exc)
    report = _status_report(size, root, latest, problem)
    if as_json:
        click.echo(orjson.dumps(report).decode())
    else:
        for name, value in report.items():
            click.echo(f"{name + ':':22} {'' if value is None else value}")
    return 1 if problem else 0


@ledger.command("prove")
@ledger_option
@click.option("--from", "old_size", required=True, type=click.IntRange(min=0), metavar="SIZE",
              help="The older tree size (an earlier bundle's checkpoint size).")
@click.option("--to", "new_size", required=True, type=click.IntRange(min=0), metavar="SIZE",
              help="The newer tree size (a later bundle's checkpoint size).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the proof here (default: stdout).")
def prove(ledger_url: str, old_size: int, new_size: int, out: Path | None) -> int:
    """Write the RFC 9162 consistency proof from tree size FROM to TO.

    For `consentwatch verify NEW --since OLD --proof FILE` when OLD is not NEW's previous
    export. The tree is recomputed from every leaf's bytes first (a tampered ledger is
    one line, exit 1); the proof needs no key: both bundles' checkpoints are signed.
    """
    from streams.errors import ConfigError
    from streams.evidence.consistency import proof_file
    from streams.evidence.merkle import consistency_proof

    if old_size > new_size:
        raise ConfigError(f"--from {old_size} is larger than --to {new_size}")
    with _existing_ledger(ledger_url) as store:
        size, _root, hashes = store.audit()
    if new_size > size:
        raise ConfigError(f"--to {new_size} is larger than the ledger's {size} leaves")
    data = proof_file(old_size, new_size, consistency_proof(old_size, hashes[:new_size]))
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        try:
            out.write_bytes(data)
        except OSError as exc:
            raise ConfigError(f"cannot write {out}: {exc.strerror}") from exc
    return 0


def _checkpoint_problem(latest: dict[str, Any] | None, hashes: list[bytes]) -> str | None:
    """Why the latest checkpoint is not a tree of these leaves, or None when it is."""
    from streams.evidence.merkle import root_hash

    if latest is None:
        return None
    if latest["size"] > len(hashes):
        return (f"the latest checkpoint covers {latest['size']} leaves, more than the "
                f"{len(hashes)} stored")
    if root_hash(hashes[:latest["size"]]) != latest["root"]:
        return (f"the latest checkpoint's root is not the root of the first "
                f"{latest['size']} leaves (were leaves rewritten?)")
    return None


def _status_report(size: int, root: bytes | None, latest: dict[str, Any] | None,
                   problem: str | None) -> dict[str, Any]:
    from streams.model.timestamps import format_ms

    report: dict[str, Any] = {"size": size, "root": None if root is None else root.hex()}
    if latest is None:
        report["checkpoint"] = "none signed yet"
    else:
        report |= {"checkpoint size": latest["size"], "checkpoint root": latest["root"].hex(),
                   "checkpoint signed at": format_ms(latest["signed_at"]),
                   "checkpoint key": latest["key_name"]}
    report["tree"] = f"FAIL: {problem}" if problem else "OK (recomputed from the leaves)"
    return report


def _query_text(query: dict[str, Any]) -> str:
    filters = ", ".join(f"{name}={value}" for name, value in
                        sorted((query.get("filters") or {}).items()) if value is not None)
    window = f"{query.get('from', '?')}..{query.get('to', '?')}"
    return f"{window} {filters}".strip()


def _table(header: list[str], rows: list[list[str]]) -> None:
    """A plain text table, columns as wide as their widest cell."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                       strict=True)).rstrip())


@ledger.command("checkpoint")
@ledger_option
@click.option("--private-key", envvar="CONSENTWATCH_SIGNING_KEY", required=True,
              type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Ed25519 private key (PEM) to sign with (or CONSENTWATCH_SIGNING_KEY).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the signed note here (default: stdout).")
@click.option("--tsa-url", metavar="URL",
              help="Have the checkpoint time-stamped by this RFC 3161 time-stamping "
                   "authority and store the token with it (exports carry it).")
def checkpoint(ledger_url: str, private_key: Path, out: Path | None,
               tsa_url: str | None) -> int:
    """Sign a checkpoint of the whole ledger (recomputed from every leaf) and write its
    note, for the witnesses to cosign (`consentwatch witness cosign`)."""
    from streams.cli.evidence_cmds import load_signing_key
    from streams.errors import ConfigError
    from streams.evidence.checkpoint import verify_checkpoint
    from streams.evidence.keys import KEY_NAME

    key = load_signing_key(private_key)
    with _existing_ledger(ledger_url) as store:
        note = store.audited_checkpoint(key, KEY_NAME).note
        signed = verify_checkpoint(note, key.public_key())
        if tsa_url is not None:
            from streams.evidence.timestamp import request_timestamp

            store.add_timestamp(signed.size, signed.root, request_timestamp(tsa_url, note))
    if out is None:
        sys.stdout.write(note)
        sys.stdout.flush()
    else:
        try:
            out.write_text(note, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {out}: {exc.strerror}") from exc
    click.echo(f"consentwatch: checkpoint of size {signed.size} of {signed.origin!r}; a "
               "witness that cosigned size M before needs `consentwatch ledger prove "
               f"--from M --to {signed.size}`", err=True)
    return 0


@ledger.command("add-cosignature")
@ledger_option
@click.option("--public-key", required=True, type=click.Path(dir_okay=False, path_type=Path),
              metavar="KEY", help="The ledger's Ed25519 public key (PEM).")
@click.argument("notes", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
def add_cosignature(ledger_url: str, public_key: Path, notes: tuple[Path, ...]) -> int:
    """Store the NOTES witnesses cosigned (from `witness cosign`) with their checkpoint.

    Each must be a checkpoint this ledger signed (by KEY, of its origin, stored); their
    signature lines are merged with those stored for it into one note, which `export
    --require-witnesses` can then use. One line, exit 1, for anything else.
    """
    from streams.evidence.checkpoint import CheckpointError, verify_checkpoint
    from streams.evidence.cosignature import merge_signatures
    from streams.evidence.keys import KEY_NAME, load_public_key

    key = load_public_key(public_key)
    texts = [_read_note(path) for path in notes]
    checkpoints = []
    for path, text in zip(notes, texts, strict=True):
        try:
            checkpoints.append(verify_checkpoint(text, key))
        except CheckpointError as exc:
            raise CheckpointError(f"{path.name}: {exc} (by the --public-key given)") from None
    first = checkpoints[0]
    if any(cp != first for cp in checkpoints[1:]):
        raise CheckpointError("the notes given are of different checkpoints")
    with _existing_ledger(ledger_url) as store:
        if first.origin != store.checkpoint_origin():
            raise CheckpointError(f"{notes[0].name}: a checkpoint of another log "
                                  f"({first.origin!r}, not {store.checkpoint_origin()!r})")
        stored = []
        for candidate in store.checkpoint_notes(first.size):
            try:
                if verify_checkpoint(candidate, key) == first:
                    stored.append(candidate)
            except CheckpointError:
                continue
        if not stored:
            raise CheckpointError(f"{notes[0].name}: this ledger stores no checkpoint of size "
                                  f"{first.size} with that root signed by this key")
        merged = merge_signatures(stored[-1], texts)
        added = merged != stored[-1]
        if added:
            store.add_cosigned(merged, first.size, first.root, KEY_NAME)
    lines = len(merged.rstrip("\n").split("\n\n")[-1].splitlines()) - 1
    click.echo(f"consentwatch: checkpoint of size {first.size}: "
               f"{'stored with' if added else 'already stored with'} {lines} other "
               "signature line(s) (witness cosignatures are counted by export and verify "
               "against the witness keys they are given)", err=True)
    return 0


def _read_note(path: Path) -> str:
    from streams.evidence.checkpoint import CheckpointError

    try:
        with open(path, "rb") as handle:
            raw = handle.read((1 << 20) + 1)
        if len(raw) > 1 << 20:
            raise CheckpointError(f"{path.name} is too large for a signed note")
        return raw.decode("utf-8")
    except OSError as exc:
        raise CheckpointError(f"cannot read {path.name}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path.name} is not a signed note (not UTF-8)") from None
