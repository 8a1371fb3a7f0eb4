"""The SQLite backend (the default): one file, write-ahead log, full fsync on commit.

WAL lets exports and `verify`-side reads run while `ledger run` writes; FULL
synchronous mode makes a committed batch survive a power cut, not only a crashed
process, which is what evidence needs. Writers queue on BEGIN IMMEDIATE with a busy
timeout, so two `ledger load` processes on one file take turns.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from streams.errors import ConfigError
from streams.evidence.ledger.base import LedgerError
from streams.evidence.ledger.sql import SqlLedger

__all__ = ["SqliteLedger"]

_BUSY_TIMEOUT_MS = 60_000
SCHEMA_VERSION = "1"

_APPEND_ONLY = ("entries", "checkpoints", "exports")

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS entries (
        idx INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('finding', 'amendment')),
        entry_id TEXT NOT NULL,
        occurred_at INTEGER NOT NULL,
        rule TEXT NOT NULL,
        account_id TEXT NOT NULL,
        subject_id TEXT NOT NULL,
        leaf BLOB NOT NULL,
        leaf_hash BLOB NOT NULL CHECK (length(leaf_hash) = 32),
        stored_at INTEGER NOT NULL,
        UNIQUE (kind, entry_id))""",
    "CREATE INDEX IF NOT EXISTS entries_occurred ON entries (kind, occurred_at)",
    "CREATE INDEX IF NOT EXISTS entries_rule ON entries (rule)",
    "CREATE INDEX IF NOT EXISTS entries_account ON entries (account_id)",
    "CREATE INDEX IF NOT EXISTS entries_subject ON entries (subject_id)",
    """CREATE TABLE IF NOT EXISTS tree_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        size INTEGER NOT NULL,
        frontier BLOB NOT NULL)""",
    "INSERT OR IGNORE INTO tree_state (id, size, frontier) VALUES (1, 0, x'')",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        seq INTEGER PRIMARY KEY,
        size INTEGER NOT NULL,
        root BLOB NOT NULL,
        note TEXT NOT NULL,
        key_name TEXT NOT NULL,
        signed_at INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS exports (
        seq INTEGER PRIMARY KEY,
        actor TEXT NOT NULL,
        purpose TEXT NOT NULL,
        query TEXT NOT NULL,
        bundle_sha256 TEXT NOT NULL,
        at_ms INTEGER NOT NULL)""",
    *(f"""CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table}
        BEGIN SELECT RAISE(ABORT,
            'the consentwatch ledger is append-only: {op} on {table} refused'); END"""
      for table in _APPEND_ONLY for op in ("UPDATE", "DELETE")),
    """CREATE TRIGGER IF NOT EXISTS entries_next_leaf BEFORE INSERT ON entries
        WHEN NEW.idx IS NOT (SELECT COALESCE(MAX(idx) + 1, 0) FROM entries)
        BEGIN SELECT RAISE(ABORT, 'a ledger entry must be the next leaf'); END""",
    """CREATE TRIGGER IF NOT EXISTS tree_state_no_delete BEFORE DELETE ON tree_state
        BEGIN SELECT RAISE(ABORT,
            'the consentwatch ledger is append-only: DELETE on tree_state refused'); END""",
    """CREATE TRIGGER IF NOT EXISTS tree_state_grows BEFORE UPDATE ON tree_state
        WHEN NEW.size < OLD.size
        BEGIN SELECT RAISE(ABORT, 'the ledger tree cannot shrink'); END""",
    f"INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}')",
]


class SqliteLedger(SqlLedger):
    """The ledger in one SQLite file (created with its schema on first open)."""

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        try:
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
            self._conn = sqlite3.connect(self._path, isolation_level=None,
                                         timeout=_BUSY_TIMEOUT_MS / 1000,
                                         check_same_thread=False)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the ledger {self._path}: {exc}") from None
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise LedgerError(f"the ledger {self._path} cannot use a write-ahead log")
            self._conn.execute("PRAGMA synchronous = FULL")
            with self._write() as cur:
                for statement in _SCHEMA:
                    cur.execute(statement)
                cur.execute("SELECT value FROM meta WHERE key = 'schema_version'")
                version = cur.fetchone()[0]
        except (sqlite3.DatabaseError, LedgerError) as exc:
            self._conn.close()
            raise ConfigError(f"{self._path} is not a usable ledger: "
                              f"{exc.__cause__ or exc}") from None
        if version != SCHEMA_VERSION:
            self._conn.close()
            raise ConfigError(f"{self._path} has ledger schema version {version}; this "
                              f"consentwatch reads version {SCHEMA_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[Any]:
        try:
            with closing(self._conn.cursor()) as cur:
                cur.execute("BEGIN IMMEDIATE")
                try:
                    yield cur
                except BaseException:
                    self._conn.rollback()
                    raise
                cur.execute("COMMIT")
        except sqlite3.Error as exc:
            raise LedgerError(f"writing the ledger {self._path} failed: {exc}") from exc

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        try:
            with closing(self._conn.cursor()) as cur:
                yield cur
        except sqlite3.Error as exc:
            raise LedgerError(f"reading the ledger {self._path} failed: {exc}") from exc

    def close(self) -> None:
        self._conn.close()
