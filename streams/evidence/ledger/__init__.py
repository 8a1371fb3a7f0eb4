"""The evidence ledger: findings, amendments, reviews, exceptions and exports stored once,
append-only, as Merkle leaves.

`open_ledger("postgresql://...")` opens a PostgreSQL ledger; anything else is the
path of a SQLite file (created on first use). Both backends implement `Ledger`.
"""

from __future__ import annotations

from streams.evidence.ledger.base import (
    CHECKPOINT_ORIGIN,
    KINDS,
    AuditedTree,
    InvalidRecord,
    Kind,
    Ledger,
    LedgerEntry,
    LedgerError,
    LedgerTampered,
)
from streams.evidence.ledger.sql import SqlLedger

__all__ = [
    "CHECKPOINT_ORIGIN",
    "KINDS",
    "AuditedTree",
    "InvalidRecord",
    "Kind",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "LedgerTampered",
    "SqlLedger",
    "is_postgres_url",
    "open_ledger",
]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(path_or_url: str) -> bool:
    return path_or_url.lower().startswith(_POSTGRES_SCHEMES)


def open_ledger(path_or_url: str) -> SqlLedger:
    """The ledger at `path_or_url`, with its schema created if it is new.

    Raises ConfigError (one line; a URL's password is never repeated) when it cannot
    be opened.
    """
    from streams.errors import ConfigError

    if not path_or_url:
        raise ConfigError("no ledger given (--ledger PATH_OR_URL or CONSENTWATCH_LEDGER)")
    if is_postgres_url(path_or_url):
        from streams.evidence.ledger.postgres import PostgresLedger

        return PostgresLedger(path_or_url)
    if "://" in path_or_url:
        raise ConfigError("the ledger must be a SQLite file path or a postgresql:// URL")
    from streams.evidence.ledger.sqlite import SqliteLedger

    return SqliteLedger(path_or_url)


def _implements_ledger(ledger: SqlLedger) -> Ledger:
    """Never called: makes mypy check that every SqlLedger is a `Ledger`."""
    return ledger
