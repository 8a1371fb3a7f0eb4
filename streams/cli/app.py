"""The `consentwatch` command line.

Usage errors print one line and exit 2; invalid input records exit 1; no traceback
reaches the user for anything they can fix themselves.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from streams import __version__
from streams.errors import ConfigError, ConsentwatchError

__all__ = ["cli", "main", "run"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="consentwatch")
def cli() -> None:
    """consentwatch: proves enrichment without consent or notice, event by event."""


def _register() -> None:
    from streams.cli import kafka_cmds, replay_cmd, rules_cmd

    cli.add_command(replay_cmd.replay)
    cli.add_command(rules_cmd.rules)
    for command in (kafka_cmds.topics, kafka_cmds.produce, kafka_cmds.findings,
                    kafka_cmds.worker):
        cli.add_command(command)
    from streams.cli import evidence_cmds

    for command in (evidence_cmds.keys, evidence_cmds.export, evidence_cmds.verify):
        cli.add_command(command)
    from streams.cli import demo_cmd, simulate_cmd

    cli.add_command(simulate_cmd.simulate)
    cli.add_command(demo_cmd.demo)
    from streams.cli import dead_letter_cmd, ledger_cmd

    cli.add_command(ledger_cmd.ledger)
    cli.add_command(dead_letter_cmd.dead_letters)
    from streams.cli import status_cmd

    cli.add_command(status_cmd.status)
    from streams.cli import desk_cmd

    cli.add_command(desk_cmd.desk)
    from streams.cli import witness_cmd

    cli.add_command(witness_cmd.witness)


_register()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    import logging

    from streams.runtime import tune_gc

    tune_gc()
    # Client libraries log connection failures themselves; the commands report them
    # once, in one line. The worker sets up its own logging.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        result = cli.main(args=list(argv) if argv is not None else None,
                          prog_name="consentwatch", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        _error(exc.format_message())
        return 2
    except click.exceptions.Abort:
        _stopped()
        return 130
    except click.ClickException as exc:
        _error(exc.format_message())
        return exc.exit_code
    except ConfigError as exc:
        _error(str(exc))
        return 2
    except ConsentwatchError as exc:
        _error(str(exc))
        return 1
    except BrokenPipeError:
        return 1
    except OSError as exc:  # a file or device that failed under a command (a full disk)
        where = f" ({exc.filename})" if exc.filename else ""
        _error(f"{exc.strerror or type(exc).__name__}{where}")
        return 1
    except KeyboardInterrupt:
        _stopped()
        return 130
    if isinstance(result, int):
        return result
    return 0


def _stopped() -> None:
    """Ctrl-C (or SIGTERM): a stop the user asked for, not an error."""
    print("consentwatch: stopped (interrupted)", file=sys.stderr, flush=True)


def run() -> None:
    """The console script: `main`, then the exit, without freeing what a command built
    when it asked for that (`streams.runtime.exit_without_teardown`)."""
    status = main()
    from streams.runtime import fast_exit_requested

    if not _flush_stdout():
        status = status or 1
    if fast_exit_requested():
        import logging
        import os

        logging.shutdown()
        try:
            sys.stderr.flush()
        except (BrokenPipeError, OSError):
            status = status or 1
        os._exit(status)
    sys.exit(status)


def _flush_stdout() -> bool:
    """Flush stdout now, so that output it cannot take is not reported again, with a
    traceback, when the interpreter flushes it at exit: what it holds then goes nowhere."""
    if sys.stdout is None:
        return True
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
        return False
    return True


def _error(message: str) -> None:
    text = " ".join(message.split())
    click.echo(f"consentwatch: error: {text}", err=True)


if __name__ == "__main__":  # pragma: no cover
    run()
