"""`consentwatch keys generate`, `export` and `verify`: the regulator-facing commands.

`export` needs the ledger and the signing key; `verify` needs only the bundle and the
public key, so a regulator can run it on a machine with nothing else.
"""

from __future__ import annotations

import getpass
import sys
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from streams.cli.options import engine_options, make_params

if TYPE_CHECKING:
    from streams.evidence.export import ExportQuery

__all__ = ["export", "keys", "ledger_option", "load_signing_key", "signing_key_option",
           "verify", "witness_options", "witness_policy"]


def ledger_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--ledger PATH_OR_URL (or CONSENTWATCH_LEDGER)."""
    return click.option("--ledger", "ledger_url", envvar="CONSENTWATCH_LEDGER", required=True,
                        metavar="PATH_OR_URL",
                        help="SQLite file or postgresql:// URL (or CONSENTWATCH_LEDGER).")(command)


def signing_key_option(command: Callable[..., Any] | None = None, *, required: bool = True,
                       help: str = "Ed25519 private key (PEM) to sign with (or "
                                   "CONSENTWATCH_SIGNING_KEY).") -> Callable[..., Any]:
    """--private-key FILE (or CONSENTWATCH_SIGNING_KEY, a file path); `export`'s, and
    `desk serve`'s (optional there: `signing_key_option(required=False, help=...)`)."""
    option = click.option("--private-key", envvar="CONSENTWATCH_SIGNING_KEY",
                          required=required, type=click.Path(dir_okay=False, path_type=Path),
                          metavar="FILE", help=help)
    return option if command is None else option(command)


def witness_options(key_help: str, required_help: str) -> Callable[..., Any]:
    """--witness-key FILE (repeatable) and --require-witnesses N (issue 18)."""
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option("--require-witnesses", type=click.IntRange(min=0),
                               metavar="N", help=required_help)(command)
        return click.option("--witness-key", "witness_keys", multiple=True,
                            type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
                            help=key_help)(command)
    return decorate


def witness_policy(paths: tuple[Path, ...], required: int | None, *,
                   default_all: bool) -> tuple[list[Any], int]:
    """(witness keys, required count) from the options; a UsageError when they disagree."""
    from streams.evidence.cosignature import load_witness_keys

    if required is None:
        required = len(paths) if default_all else 0
    if required > len(paths):
        raise click.UsageError(f"--require-witnesses {required} needs at least {required} "
                               "--witness-key")
    return load_witness_keys(paths), required


def load_signing_key(path: Path) -> Any:
    """The Ed25519 private key at `path` (ConfigError, one line, when it is not one)."""
    from streams.evidence.keys import load_private_key

    return load_private_key(path, warn=_warning)


@click.group()
def keys() -> None:
    """Ed25519 signing keys for the ledger and evidence bundles."""


@keys.command("generate")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              metavar="DIR", help="Directory for consentwatch.key and consentwatch.pub.")
def generate(out_dir: Path) -> None:
    """Write a new key pair: DIR/consentwatch.key (0600) and DIR/consentwatch.pub.

    Refuses to overwrite an existing key.
    """
    from streams.evidence.keys import generate_keypair

    key_path, pub_path = generate_keypair(out_dir)
    click.echo(f"private key: {key_path} (keep it secret)")
    click.echo(f"public key:  {pub_path} (give it to whoever verifies bundles)")


def _rfc3339(_ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from streams.model.timestamps import parse_rfc3339_ms

    if value is None:
        return None
    try:
        return parse_rfc3339_ms(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an RFC 3339 time with an offset",
                                 param=param) from exc


@click.command()
@ledger_option
@click.option("--from", "from_ms", required=True, callback=_rfc3339, metavar="TIME",
              help="Start of the window, RFC 3339 (inclusive).")
@click.option("--to", "to_ms", required=True, callback=_rfc3339, metavar="TIME",
              help="End of the window, RFC 3339 (exclusive).")
@click.option("--purpose", required=True, metavar="TEXT",
              help="Why the data is exported (recorded in the ledger and the bundle).")
@click.option("--rule", help="Only findings of this rule.")
@click.option("--account", help="Only findings of this account.")
@click.option("--subject", help="Only findings about this subject.")
@click.option("--actor", help="Who exports (recorded in the ledger); default the OS user.")
@signing_key_option
@engine_options
@witness_options("A witness's verifier key file (`consentwatch witness keys generate`); "
                 "repeatable.",
                 "Export only against a stored checkpoint cosigned by at least N of the "
                 "--witness-key witnesses (the newest such; docs/witnesses.md), never one "
                 "signed now.")
@click.option("--tsa-url", metavar="URL",
              help="Have the checkpoint time-stamped by this RFC 3161 time-stamping "
                   "authority first (stored in the ledger); the bundle carries the token "
                   "of its checkpoint as checkpoint.tsr whenever the ledger holds one.")
@click.argument("out", type=click.Path(path_type=Path))
def export(ledger_url: str, from_ms: int, to_ms: int, purpose: str, rule: str | None,
           account: str | None, subject: str | None, actor: str | None, private_key: Path,
           allowed_lateness: float, notice_grace: float, notice_validity: float,
           witness_keys: tuple[Path, ...], require_witnesses: int | None,
           tsa_url: str | None, out: Path) -> None:
    """Write the evidence bundle OUT (a directory) and OUT.zip.

    Selects the ledger's findings with FROM <= occurred_at < TO (and the filters),
    proves each against a checkpoint the ledger signs now, signs the manifest, and
    records the export in the ledger. The engine options say which parameters the
    pipeline ran with (they are written to the manifest and draw the notice grace).
    """
    from streams.errors import ConfigError
    from streams.evidence.export import ExportQuery, export_bundle
    from streams.evidence.ledger import is_postgres_url, open_ledger

    if not _has_visible_text(purpose):
        raise click.UsageError("--purpose must say why the data is exported")
    assert from_ms is not None and to_ms is not None  # required options
    query = ExportQuery(from_ms, to_ms, purpose, rule, account, subject)
    if from_ms >= to_ms:
        raise ConfigError("--from must be earlier than --to")
    check_rule(rule)
    witnesses, required = witness_policy(witness_keys, require_witnesses, default_all=False)
    if witnesses and not required:
        raise click.UsageError("--witness-key needs --require-witnesses N")
    key = load_signing_key(private_key)
    params = make_params(allowed_lateness, notice_grace, notice_validity)
    if not is_postgres_url(ledger_url) and not Path(ledger_url).is_file():
        # Opening would create an empty ledger and export nothing, silently.
        raise ConfigError(f"no ledger at {ledger_url}")
    ledger = open_ledger(ledger_url)
    try:
        with _progress() as progress:
            result = export_bundle(ledger, out, query, key, actor=actor or _os_user(),
                                   params=params, progress=progress,
                                   witnesses=_policy(witnesses, required),
                                   tsa_url=tsa_url)
    finally:
        ledger.close()
    if not result.findings:
        # Still written and recorded: that nothing matched is itself what was exported.
        _warning(f"no finding matches the query ({_describe(query)}); the empty bundle was "
                 "written and recorded in the ledger")
    click.echo(f"exported {result.findings} findings, {result.amendments} amendments, "
               f"{result.reviews} reviews and {result.exceptions} exceptions "
               f"(checkpoint size {result.checkpoint_size}) to {result.directory} and "
               f"{result.zip_path}; manifest sha256 {result.manifest_sha256}")


def _policy(witnesses: list[Any], required: int) -> Any:
    from streams.evidence.export.witnessed import WitnessPolicy

    return WitnessPolicy(required, tuple(witnesses)) if required else None


def check_rule(rule: str | None) -> None:
    """Refuse (ConfigError, exit 2) a rule that is not in the catalogue."""
    from streams.catalogue import load_catalogue
    from streams.errors import ConfigError

    known = [item.id for item in load_catalogue().rules]
    if rule is not None and rule not in known:
        raise ConfigError(f"unknown rule {rule!r}; the rules are: {', '.join(known)}")


def _describe(query: ExportQuery) -> str:
    """The query's window and filters in words; a subject id is personal data: named only."""
    from streams.model.timestamps import format_ms

    parts = [f"{format_ms(query.from_ms)} <= occurred_at < {format_ms(query.to_ms)}"]
    parts += [f"{name} {value}" for name, value in (("rule", query.rule),
              ("account", query.account)) if value is not None]
    if query.subject is not None:
        parts.append("the subject given")
    return ", ".join(parts)


# Letters the Unicode standard calls letters or symbols but that draw nothing.
_BLANK_LOOKALIKES = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def _has_visible_text(text: str) -> bool:
    """Whether `text` has a character that draws something: not only white space,
    zero-width characters (U+200B ...), controls, combining marks or blank letters."""
    return any(unicodedata.category(char)[0] in "LNPS" and char not in _BLANK_LOOKALIKES
               for char in text)


def _warning(message: str) -> None:
    click.echo(f"consentwatch: warning: {message}", err=True)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None] | None]:
    """A rich progress bar on stderr when it is a terminal (never in logs or pipes)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(f"writing {step}", total=total)
            bar.update(tasks[step], completed=done)

        yield update


@click.command()
@click.argument("bundle_path", metavar="BUNDLE",
                type=click.Path(exists=True, path_type=Path))
@click.option("--public-key", required=True, type=click.Path(dir_okay=False, path_type=Path),
              metavar="KEY", help="The signer's Ed25519 public key (PEM).")
@click.option("--since", "since", type=click.Path(exists=True, path_type=Path),
              metavar="OLD",
              help="An earlier bundle of the same ledger: also prove the log only grew from "
                   "its checkpoint to BUNDLE's and every entry of OLD is in BUNDLE's tree "
                   "unchanged.")
@click.option("--proof", "proof", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="FILE",
              help="With --since: the consistency proof from `consentwatch ledger prove`, "
                   "when OLD is not BUNDLE's previous export.")
@witness_options("Check the checkpoint's cosignatures by this witness (its verifier key "
                 "file, from `consentwatch witness keys generate`); repeatable.",
                 "Fail unless at least N of the --witness-key witnesses validly cosigned "
                 "(default: all of them).")
@click.option("--tsa-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="CA.pem",
              help="Check the checkpoint's RFC 3161 time-stamp token (checkpoint.tsr) "
                   "against this CA certificate of the time-stamping authority (PEM), and "
                   "say when it was time-stamped; a bundle without a token fails.")
def verify(bundle_path: Path, public_key: Path, since: Path | None,
           proof: Path | None, witness_keys: tuple[Path, ...],
           require_witnesses: int | None, tsa_cert: Path | None) -> int:
    """Verify the evidence bundle BUNDLE (directory or .zip) offline.

    Prints OK, or one line per failure and exits 1 (an unreadable or unsafe zip too).
    """
    from streams.evidence.keys import load_public_key
    from streams.evidence.verify import check_bundle

    if proof is not None and since is None:
        raise click.UsageError("--proof needs --since OLD")
    witnesses, required = witness_policy(witness_keys, require_witnesses, default_all=True)
    key = load_public_key(public_key)
    if since is not None:
        from streams.evidence.consistency import verify_since

        report = verify_since(bundle_path, since, key, proof)
        failures, counts, new = report.failures, report.new.counts, report.new
    else:
        new = check_bundle(bundle_path, key)
        failures, counts = new.failures, new.counts
    witnessed = ""
    if witnesses:
        from streams.evidence.cosignature import check_witnesses

        problems, witnessed = check_witnesses(new.note, witnesses, required)
        failures = failures + problems
    stamped = ""
    if tsa_cert is not None:  # issue 18: trusted time
        from streams.evidence.timestamp import check_bundle_timestamp

        problems, stamped = check_bundle_timestamp(bundle_path, new.note, tsa_cert)
        failures = failures + problems
    if failures:
        for failure in failures:
            click.echo(f"FAIL {failure}")
        click.echo(f"verification failed: {len(failures)} problem(s)", err=True)
        return 1
    click.echo(f"OK: {counts['findings']} findings, {counts['amendments']} amendments, "
               f"{counts.get('reviews', 0)} reviews and {counts.get('exceptions', 0)} "
               "exceptions proven against the signed checkpoint of size "
               f"{counts['checkpoint_size']}; "
               f"{counts['files']} files match the signed manifest")
    if since is not None:
        click.echo(report.summary(since.name))
    if witnessed:
        click.echo(witnessed)
    if stamped:
        click.echo(stamped)
    return 0

