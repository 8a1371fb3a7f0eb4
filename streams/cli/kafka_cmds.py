"""Commands that talk to Kafka: `topics create`, `produce`, `findings`, `worker`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from streams.cli.filters import FindingFilter, filter_options
from streams.cli.options import (
    Finite,
    engine_options,
    kafka_options,
    make_params,
    make_pseudonymiser,
    max_future_skew_option,
    pseudonym_key_option,
    resolve_kafka,
    warn_development_key,
    wire_options,
)
from streams.errors import ConsentwatchError
from streams.model.events import Event
from streams.model.findings import DeadLetter

__all__ = ["findings", "produce", "topics", "worker"]


@click.group()
def topics() -> None:
    """Manage the pipeline's topics."""


@topics.command("create")
@kafka_options
@click.option("--partitions", type=click.IntRange(1, 10_000), default=4, show_default=True)
@click.option("--replication", type=click.IntRange(1, 100),
              help="Replicas of each topic  [default: 3, or every broker when the cluster "
              "has fewer]; with 3, min.insync.replicas is 2.")
def topics_create(broker: str | None, topic_prefix: str, kafka_config: Path | None,
                  partitions: int, replication: int | None) -> int:
    """Create the input, correlate, findings, amendments and dead-letter topics."""
    from streams.kafka.kafka_io import create_topics

    connection, names = resolve_kafka(broker, topic_prefix, kafka_config)
    result = asyncio.run(create_topics(connection, names, partitions, replication))
    for name, status in sorted(result.items()):
        click.echo(f"{status:8} {name}")
    return 0


@click.command()
@click.argument("events", type=click.Path(exists=True, dir_okay=False, allow_dash=True,
                                          path_type=Path))
@kafka_options
@wire_options
@click.option("--rate", type=Finite(min=0.1), metavar="EVENTS_PER_S",
              help="Send at most this many events per second.")
@click.option("--end-of-input", is_flag=True,
              help="After the events, an end-of-input control record on every input "
              "partition: the worker decides everything it has read at once.")
def produce(events: Path, broker: str | None, topic_prefix: str, kafka_config: Path | None,
            wire_format: str, schema_registry: str | None, subject_name_strategy: str,
            rate: float | None,
            end_of_input: bool) -> int:
    """Publish the events of a JSON Lines or Avro file to their topics, as Avro."""
    from streams.kafka.kafka_io import produce_events
    from streams.serde.sources import read_events
    from streams.serde.wire import wire_format as make_wire_format

    connection, names = resolve_kafka(broker, topic_prefix, kafka_config)
    framing = make_wire_format(wire_format, schema_registry, subject_name_strategy,
                               names.inputs)
    invalid = 0

    def valid() -> list[Event]:
        nonlocal invalid
        result: list[Event] = []
        with (sys.stdin.buffer if str(events) == "-" else open(events, "rb")) as stream:
            for number, item in read_events(stream, str(events)):
                if isinstance(item, DeadLetter):
                    invalid += 1
                    click.echo(f"consentwatch: record {number}: invalid event "
                               f"({item.reason_code}): {item.reason}", err=True)
                else:
                    result.append(item)
        return result

    batch = valid()
    sent = asyncio.run(produce_events(connection, names, batch, framing=framing, rate=rate))
    click.echo(f"consentwatch: produced {sent} events, {invalid} invalid", err=True)
    if end_of_input:
        from streams.pipeline.control import produce_end_of_input

        marked = asyncio.run(produce_end_of_input(connection, names))
        click.echo(f"consentwatch: end of input marked on {marked} input partitions", err=True)
    return 1 if invalid else 0


@click.command()
@kafka_options
@click.option("--follow", "-f", is_flag=True, help="Keep printing new findings.")
@click.option("--amendments", "which", flag_value="amendments", help="Print amendments instead.")
@click.option("--dead-letters", "which", flag_value="dead_letters",
              help="Print dead letters instead.")
@filter_options
def findings(broker: str | None, topic_prefix: str, kafka_config: Path | None, follow: bool,
             which: str | None, **filters: Any) -> int:
    """Print the findings on the findings topic as JSON Lines, filtered.

    Amendments are filtered by the fields they have (rule, subject, time); a filter on
    severity, account or provider leaves none.
    """
    from streams.kafka.kafka_io import read_outputs

    wanted = FindingFilter.of(filters)
    if which == "dead_letters" and not wanted.is_empty():
        raise click.UsageError("--dead-letters takes no finding filters (--rule, --severity, "
                               "--account, --subject, --provider, --from, --to)")
    connection, names = resolve_kafka(broker, topic_prefix, kafka_config)
    topic = {None: names.findings, "amendments": names.amendments,
             "dead_letters": names.dead_letters}[which]
    out = sys.stdout.buffer

    def bad(record: object, exc: Exception) -> None:
        click.echo(f"consentwatch: skipped an unreadable record: {type(exc).__name__}", err=True)

    async def run() -> None:
        async for item in read_outputs(connection, topic, follow, on_error=bad):
            record = item.to_dict()
            if isinstance(item, DeadLetter) or wanted.matches(record):
                out.write(orjson.dumps(record) + b"\n")
                if follow:
                    out.flush()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    out.flush()
    return 0


@click.command()
@kafka_options
@wire_options
@engine_options
@pseudonym_key_option
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("var/worker"), show_default=True, envvar="CONSENTWATCH_DATA_DIR",
              help="Where the worker keeps its local state.")
@click.option("--web-port", type=click.IntRange(1, 65_535), default=6066, show_default=True,
              envvar="CONSENTWATCH_WEB_PORT", help="Port of the web server (/metrics).")
@click.option("--web-host", default="127.0.0.1", show_default=True, envvar="CONSENTWATCH_WEB_HOST",
              help="Address the web server (/metrics) listens on; 0.0.0.0 in a container.")
@click.option("--store", type=click.Choice(["rocksdb", "memory"]), default="rocksdb",
              show_default=True, help="Table storage: RocksDB (rocksdict) on disk, or memory.")
@click.option("--partitions", type=click.IntRange(1, 10_000), default=4, show_default=True,
              help="Partitions of the correlate topic and the state table.")
@max_future_skew_option
@click.option("--idle-timeout", type=Finite(min=0), default=30, show_default=True,
              metavar="SECONDS", help="After this long with no events a partition's "
              "watermark advances with the wall clock.")
@click.option("--state-flush-interval", type=Finite(min=0), default=30,
              show_default=True, metavar="SECONDS", envvar="CONSENTWATCH_STATE_FLUSH_INTERVAL",
              help="Longest a partition's changed state waits before it is written to its "
              "store and changelog while traffic goes on (once nothing changed the "
              "worker's state for a second, it is written then); "
              "offsets are committed after it, so a restart reads up to this much input "
              "again.")
@click.option("--repartition-inputs", is_flag=True,
              help="Read every input topic through the correlate topic, even when the "
              "subject-keyed ones have --partitions partitions (then read directly).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True,
              help="The worker's own lines; Faust's and Kafka clients' show from warning "
              "up, all of them with debug.")
def worker(broker: str | None, topic_prefix: str, kafka_config: Path | None,
           wire_format: str, schema_registry: str | None, subject_name_strategy: str,
           allowed_lateness: float,
           notice_grace: float, notice_validity: float, pseudonym_key: Path | None,
           data_dir: Path, web_port: int, web_host: str, store: str, partitions: int,
           max_future_skew: float, idle_timeout: float, state_flush_interval: float,
           repartition_inputs: bool, log_level: str) -> int:
    """Run a pipeline worker: Faust agents that decode, correlate and raise findings.

    Checks first that the web port is free and the pipeline's topics exist with
    --partitions partitions; says "ready" once its partitions are assigned and recovered.
    """
    from streams.pipeline.data_dir import lock_data_dir

    lock = lock_data_dir(data_dir)  # held until the process ends
    connection, names = resolve_kafka(broker, topic_prefix, kafka_config)
    _check_web_port(web_host, web_port)
    # Faust reports a broker it cannot reach with a traceback, waits for ever on one that
    # never answers, and repeats "Topic not found" for ever on missing topics: first
    # contact is made here, where failing is one line.
    from streams.kafka.kafka_io import check_topics, input_path

    probe = asyncio.new_event_loop()  # not asyncio.run: that leaves no current loop for Faust
    try:
        replication, found = probe.run_until_complete(check_topics(connection, names,
                                                                   partitions))
    finally:
        probe.close()
    direct, why = input_path(names, partitions, found)
    if repartition_inputs:
        direct, why = False, "--repartition-inputs"

    import faust

    from streams.pipeline.worker import WorkerSettings, build_app
    from streams.serde.wire import wire_format as make_wire_format

    framing = make_wire_format(wire_format, schema_registry, subject_name_strategy,
                               names.inputs)
    params = make_params(allowed_lateness, notice_grace, notice_validity,
                         idle_timeout_ms=round(idle_timeout * 1000),
                         max_future_skew_ms=round(max_future_skew * 1000))
    pseudonymiser = make_pseudonymiser(pseudonym_key)
    warn_development_key(pseudonymiser)
    settings = WorkerSettings(connection=connection, topics=names, data_dir=data_dir,
                              partitions=partitions, replication=replication,
                              store=store, web_port=web_port,
                              web_host=web_host, pseudonymiser=pseudonymiser,
                              params=params, framing=framing,
                              state_flush_interval_s=state_flush_interval,
                              direct=direct, input_path_reason=why)
    app = build_app(settings)
    ready = f"consentwatch worker: ready: metrics at http://{web_host}:{web_port}/metrics"
    runner = _worker_class(faust.Worker, ready)(app, loglevel=log_level, quiet=True,
                                                redirect_stdouts=False)
    runner.execute_from_commandline()
    lock.close()
    return 0


class WebPortUnavailable(ConsentwatchError):
    """The worker's web server (/metrics) cannot listen where it was asked to."""


def _check_web_port(host: str, port: int) -> None:
    """Bind the web server's address once, as aiohttp will, so that a port in use is one
    line now rather than Faust's traceback once it has joined the group."""
    import errno
    import socket

    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise WebPortUnavailable(f"the web host {host} is not an address of this machine "
                                 "(--web-host)") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio binds
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise WebPortUnavailable(f"the web port {port} is in use (--web-port)"
                                             ) from None
                raise WebPortUnavailable(f"cannot listen on {host}:{port} (--web-host, "
                                         f"--web-port): {exc.strerror}") from None


_OWN_LOGGERS = "consentwatch"
# Faust's table recovery: that it restores state from the changelogs, how far it is,
# and that it is done: what an operator waits for after a restart, kept at INFO.
_RECOVERY_LOGGER = "faust.tables.recovery"
_RECOVERY_LINES = ("Restoring state from changelog topics", "Still fetching changelog topics",
                   "Done reading from changelog topics")
# Logged while a new group finds its coordinator, and retried at once: noise at start.
_COORDINATOR_LOGGER = "aiokafka.consumer.group_coordinator"
_STARTUP_NOISE = ("Group Coordinator Request failed", "Marking the coordinator dead")


class _QuietLibraries(logging.Filter):
    """Passes the project's own lines, and only the warnings and errors of the libraries.

    Faust's, mode's and aiokafka's INFO lines (services starting, subscription and
    assignment tables, recovery progress) are some 130 lines at each start. They are
    told apart by logger name: Faust's services log under their class's module, which
    for the classes built in streams/pipeline/ is not even a Faust name. Until the
    worker is ready, aiokafka's retried coordinator lookups are dropped too.
    """

    def __init__(self) -> None:
        super().__init__()
        self.starting = True

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(_OWN_LOGGERS):
            return True
        if record.name == _RECOVERY_LOGGER and any(
                line in str(record.msg) for line in _RECOVERY_LINES):  # after mode's prefix
            return True
        if record.levelno < logging.WARNING:
            return False
        return not (self.starting and record.name == _COORDINATOR_LOGGER
                    and str(record.msg).startswith(_STARTUP_NOISE))


def _quiet_libraries(root: logging.Logger, level: int, quiet: _QuietLibraries) -> None:
    logging.getLogger("aiokafka").setLevel(logging.NOTSET)  # app.main silenced it
    if level > logging.DEBUG:
        for handler in root.handlers:
            handler.addFilter(quiet)


_SHUTDOWN_GRACE_S = 30.0


def _worker_class(base: type, ready: str) -> type:
    """Faust's Worker, quiet, saying `ready` once it serves, with a deadline on a graceful
    stop.

    Below debug, the libraries' lines under WARNING are dropped (`_QuietLibraries`).
    `ready` is printed when Faust's start-up is finished: the partitions are assigned,
    their state recovered, and the web server is up.

    On SIGTERM or Ctrl-C Faust stops cleanly, committing what it processed; with
    the broker gone that can wait for ever. After the grace period the process
    exits anyway: at-least-once delivery means nothing is lost, the uncommitted
    records are read again.
    """

    from streams.kafka.faust_adapter import shutting_down_immediately, worker_class

    def arm() -> None:
        import os
        import threading

        timer = threading.Timer(_SHUTDOWN_GRACE_S, os._exit, args=(1,))
        timer.daemon = True
        timer.start()

    quiet = _QuietLibraries()

    class Worker(worker_class(base, arm)):  # type: ignore[misc]
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            _quiet_libraries(logger, level, quiet)

        async def on_startup_finished(self) -> None:
            await super().on_startup_finished()
            quiet.starting = False
            if not shutting_down_immediately(self):
                print(ready, file=sys.stderr, flush=True)

    return Worker
