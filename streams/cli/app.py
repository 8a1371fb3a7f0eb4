"""The `consentwatch` command line.

Usage errors print one line and exit 2; invalid input records exit 1; no traceback
reaches the user for anything they can fix themselves.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

import click

from streams import __version__
from streams.errors import ConfigError, ConsentwatchError

__all__ = ["cli", "main", "run"]


# Each command is imported when it is run (or listed by `--help`), not at start: `replay`
# on a small file would otherwise spend a tenth of its run importing the Kafka and web
# stacks it never uses (click's documented lazy group).
_COMMANDS = {
    "dead-letters": "streams.cli.dead_letter_cmd:dead_letters",
    "demo": "streams.cli.demo_cmd:demo",
    "desk": "streams.cli.desk_cmd:desk",
    "export": "streams.cli.evidence_cmds:export",
    "findings": "streams.cli.kafka_cmds:findings",
    "keys": "streams.cli.evidence_cmds:keys",
    "ledger": "streams.cli.ledger_cmd:ledger",
    "produce": "streams.cli.kafka_cmds:produce",
    "replay": "streams.cli.replay_cmd:replay",
    "rules": "streams.cli.rules_cmd:rules",
    "simulate": "streams.cli.simulate_cmd:simulate",
    "status": "streams.cli.status_cmd:status",
    "topics": "streams.cli.kafka_cmds:topics",
    "verify": "streams.cli.evidence_cmds:verify",
    "witness": "streams.cli.witness_cmd:witness",
    "worker": "streams.cli.kafka_cmds:worker",
}


class _LazyGroup(click.Group):
    """A group whose subcommands are `module:attribute` names, imported on first use."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module_name, attribute = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attribute)
            if not isinstance(command, click.Command) or command.name != cmd_name:
                raise RuntimeError(f"{self.lazy[cmd_name]} is not the command {cmd_name!r}")
            self.add_command(command)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, lazy=_COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="consentwatch")
def cli() -> None:
    """consentwatch: proves enrichment without consent or notice, event by event."""


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
