"""Options shared by every command that talks to Kafka."""

from __future__ import annotations

import math
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from streams.engine import DAY_MS, EngineParams
from streams.kafka.topics import DEFAULT_PREFIX, TopicNames
from streams.serde.subjects import SUBJECT_NAME_STRATEGIES

if TYPE_CHECKING:
    from streams.kafka.connection import KafkaConnection
    from streams.privacy.pseudonymise import Pseudonymiser

__all__ = [
    "Finite",
    "broker_address",
    "distinct_files",
    "engine_options",
    "kafka_options",
    "make_params",
    "make_pseudonymiser",
    "max_future_skew_option",
    "printable_path",
    "pseudonym_key_option",
    "resolve_kafka",
    "warn_development_key",
    "wire_options",
]

F = TypeVar("F", bound=Callable[..., Any])



class Finite(click.FloatRange):
    """click.FloatRange that also refuses nan (which passes every range comparison) and
    the infinities."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


SECONDS = Finite(min=0, max=10 * 365 * 86_400)
DAYS = Finite(min=0, max=36_500)


def distinct_files(**paths: Path | None) -> None:
    """A usage error when two of the options name one regular file: writing one would
    empty or garble the other (the input read, or a second output). `-`, None and
    devices (/dev/null, a terminal) are skipped."""
    seen: dict[str, str] = {}
    for option, path in paths.items():
        if path is None or str(path) == "-":
            continue
        try:
            if Path(path).exists():
                status = Path(path).stat()
                if not stat.S_ISREG(status.st_mode):
                    continue
                key = f"{status.st_dev}:{status.st_ino}"
            else:
                key = str(Path(path).resolve())
        except OSError:
            continue  # it fails, with its own message, where it is opened
        if key in seen:
            raise click.UsageError(f"{seen[key]} and {option} name the same file")
        seen[key] = option


def printable_path(path: Path | str) -> str:
    """A path as text that can be written anywhere: a byte of a file name that is not
    UTF-8 (held as a surrogate) becomes a \\x escape."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def broker_address(ctx: click.Context, param: click.Parameter, value: str | None
                   ) -> str | None:
    """--broker: HOST[:PORT][,HOST[:PORT]...] as Kafka clients take it (no port: 9092);
    a port must be 1-65535 (a usage error if not)."""
    if value is None:
        return None
    for address in filter(None, (part.strip() for part in value.split(","))):
        if address.startswith("["):  # [IPv6 literal], maybe with :port
            _, bracket, rest = address.partition("]")
            port = rest[1:] if rest.startswith(":") else None
            bad = not bracket or (rest != "" and port is None)
        elif address.count(":") == 1 or "://" in address:
            port = address.rpartition(":")[2]
            bad = not address.rpartition(":")[0].rstrip("/")
        else:  # a bare host name or address (the clients add 9092), or bare IPv6
            port, bad = None, False
        if bad or (port is not None and not (port.isascii() and port.isdigit()
                                             and 0 < int(port) < 65_536)):
            raise click.BadParameter(f"{address!r} is not HOST:PORT (a port 1-65535)",
                                     ctx, param)
    return value


def kafka_options(command: F) -> F:
    """--broker, --topic-prefix and --kafka-config, each also from the environment."""
    command = click.option(
        "--kafka-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar="CONSENTWATCH_KAFKA_CONFIG",
        help="TOML file with TLS/SASL settings (security_protocol, sasl_mechanism, ...).",
    )(command)
    command = click.option(
        "--topic-prefix", default=DEFAULT_PREFIX, show_default=True,
        envvar="CONSENTWATCH_TOPIC_PREFIX", help="Prefix of every topic and the group id.",
    )(command)
    command = click.option(
        "--broker", envvar="CONSENTWATCH_BROKER", metavar="HOST:PORT",
        callback=broker_address,
        help="Kafka bootstrap address (or CONSENTWATCH_BROKER).",
    )(command)
    return command


def registry_url(ctx: click.Context, param: click.Parameter, value: str | None
                 ) -> str | None:
    """An http(s) URL with a host, checked here: else the first record to decode would
    find out (a worker then stops on every restart)."""
    if value is None:
        return None
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter("must be an http:// or https:// URL with a host, e.g. "
                                 "http://localhost:8081")
    return value


def wire_options(command: F) -> F:
    """--wire-format, --schema-registry and --subject-name-strategy."""
    command = click.option(
        "--schema-registry", envvar="CONSENTWATCH_SCHEMA_REGISTRY", metavar="URL",
        callback=registry_url,
        help="Confluent Schema Registry URL, for --wire-format confluent.",
    )(command)
    command = click.option(
        "--subject-name-strategy", type=click.Choice(list(SUBJECT_NAME_STRATEGIES)),
        default="topic", show_default=True, envvar="CONSENTWATCH_SUBJECT_NAME_STRATEGY",
        help="Registry subjects, as Confluent's strategies: topic (<topic>-value, their "
        "serialisers' default), record (the record's full name), topic-record.",
    )(command)
    command = click.option(
        "--wire-format", type=click.Choice(["single-object", "confluent"]),
        default="single-object", show_default=True, envvar="CONSENTWATCH_WIRE_FORMAT",
        help="Avro single-object encoding (no registry) or Confluent registry framing.",
    )(command)
    return command


def resolve_kafka(broker: str | None, topic_prefix: str,
                  kafka_config: Path | None) -> tuple[KafkaConnection, TopicNames]:
    from streams.kafka.connection import KafkaConnection  # ssl: only for the Kafka commands

    return KafkaConnection.resolve(broker, kafka_config), TopicNames(topic_prefix)


def engine_options(command: F) -> F:
    """The engine's parameters, with the spec's defaults."""
    for option in reversed([
        click.option("--allowed-lateness", type=SECONDS, default=30, show_default=True,
                     metavar="SECONDS", help="How far behind the newest event an event may "
                     "arrive."),
        click.option("--notice-grace", type=SECONDS, default=300, show_default=True,
                     metavar="SECONDS", help="How long after the act a notice still counts."),
        click.option("--notice-validity", type=DAYS, default=365, show_default=True,
                     metavar="DAYS", help="How long before the act a notice still counts."),
    ]):
        command = option(command)
    return command


def max_future_skew_option(command: F) -> F:
    """--max-future-skew SECONDS: how far past its reception an event's time may be."""
    return click.option(
        "--max-future-skew", type=SECONDS, default=300, show_default=True, metavar="SECONDS",
        help="An event whose time is later than its reception plus this is dead-lettered "
        "(future_timestamp), never applied.")(command)


def make_params(allowed_lateness: float, notice_grace: float, notice_validity: float,
                **extra: int) -> EngineParams:
    return EngineParams(
        allowed_lateness_ms=round(allowed_lateness * 1000),
        notice_grace_ms=round(notice_grace * 1000),
        notice_validity_ms=round(notice_validity * DAY_MS),
        **extra,
    )


def pseudonym_key_option(command: F) -> F:
    """--pseudonym-key FILE (or CONSENTWATCH_PSEUDONYM_KEY): the key of evidence pseudonyms."""
    return click.option(
        "--pseudonym-key", type=click.Path(dir_okay=False, path_type=Path),
        envvar="CONSENTWATCH_PSEUDONYM_KEY", metavar="FILE",
        help="Key file (32+ bytes) for the HMAC-SHA256 pseudonyms of personal data in "
        "findings' evidence (or CONSENTWATCH_PSEUDONYM_KEY); without one, a public "
        "development key, with a warning.",
    )(command)


def make_pseudonymiser(pseudonym_key: Path | None) -> Pseudonymiser:
    """The pseudonymiser of `--pseudonym-key` (or the development key when there is none);
    raises ConfigError (exit 2, one line) for an unusable key file. Call it before doing
    any work, and `warn_development_key` once the command's usage has been checked."""
    from streams.privacy.pseudonymise import load_pseudonymiser

    return load_pseudonymiser(pseudonym_key)


def warn_development_key(pseudonymiser: Pseudonymiser) -> None:
    """One warning line on stderr when evidence is pseudonymised with the development key."""
    from streams.privacy.pseudonymise import development_key_warning

    if pseudonymiser.development:
        click.echo(f"consentwatch: warning: {development_key_warning()}", err=True)
