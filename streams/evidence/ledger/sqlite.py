"""The SQLite backend (the default): one file, write-ahead log, full fsync on commit.

A ledger is created only where no file exists: an existing empty or non-SQLite file is
refused (a typo in --ledger must not start a new, empty record of evidence).

WAL lets exports and `verify`-side reads run while `ledger run` writes; FULL
synchronous mode makes a committed batch survive a power cut, not only a crashed
process, which is what evidence needs. Writers queue on BEGIN IMMEDIATE with a busy
timeout, so two `ledger load` processes on one file take turns.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from streams.errors import ConfigError
from streams.evidence.ledger.base import KINDS, LedgerError
from streams.evidence.ledger.sql import SqlLedger

__all__ = ["SqliteLedger"]

_BUSY_TIMEOUT_MS = 60_000
SCHEMA_VERSION = "2"  # 2: reviews, exceptions and exports are leaves; finding_id column

_APPEND_ONLY = ("entries", "checkpoints", "exports", "timestamps")

_ENTRIES = """CREATE TABLE IF NOT EXISTS {name} (
        idx INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ({kinds})),
        entry_id TEXT NOT NULL,
        occurred_at INTEGER NOT NULL,
        rule TEXT NOT NULL,
        account_id TEXT NOT NULL,
        subject_id TEXT NOT NULL,
        leaf BLOB NOT NULL,
        leaf_hash BLOB NOT NULL CHECK (length(leaf_hash) = 32),
        stored_at INTEGER NOT NULL,
        finding_id TEXT NOT NULL,
        UNIQUE (kind, entry_id))"""
_KINDS_SQL = ", ".join(f"'{kind}'" for kind in KINDS)

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    _ENTRIES.format(name="entries", kinds=_KINDS_SQL),
    "CREATE INDEX IF NOT EXISTS entries_occurred ON entries (kind, occurred_at)",
    "CREATE INDEX IF NOT EXISTS entries_finding ON entries (finding_id, kind)",
    "CREATE INDEX IF NOT EXISTS entries_rule ON entries (rule)",
    "CREATE INDEX IF NOT EXISTS entries_account ON entries (account_id)",
    "CREATE INDEX IF NOT EXISTS entries_subject ON entries (subject_id)",
    # The review desk's findings table: newest first, keyset-paged on (occurred_at, idx),
    # by each filter (idx, the rowid, ends every index); its accounts page (open findings
    # by account and rule, from the index alone). See streams/desk/queries.py.
    *(f"CREATE INDEX IF NOT EXISTS entries_desk_{name} ON entries (kind, {column}, occurred_at)"
      for name, column in (("rule", "rule"), ("account", "account_id"),
                           ("subject", "subject_id"),
                           ("provider", "json_extract(CAST(leaf AS TEXT), '$.provider')"),
                           ("account_rule", "account_id, rule"))),
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
    # issue 18: RFC 3161 time-stamp replies of checkpoints (streams/evidence/timestamp.py)
    """CREATE TABLE IF NOT EXISTS timestamps (
        seq INTEGER PRIMARY KEY,
        size INTEGER NOT NULL,
        root BLOB NOT NULL,
        token BLOB NOT NULL,
        stored_at INTEGER NOT NULL)""",
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
    """The ledger in one SQLite file (created with its schema where no file exists).

    An existing file must be an SQLite database: an empty file or any other file is
    refused, never silently made a new, empty ledger.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        if not _is_sqlite_file(self._path):
            _create(self._path)
        self._conn = _connect(self._path)

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


def _is_sqlite_file(path: Path) -> bool:
    """False when nothing is at `path`; True for a file SQLite is to open (which refuses
    one that is not a database: "file is not a database", see `_connect`); ConfigError
    for an empty file, which SQLite would silently make a new database.

    The file is never opened here: closing a descriptor of a file drops every POSIX lock
    the process holds on it, SQLite's included. A process holding the ledger open (the
    desk) and opening it again (each review) then lost its locks, and another process
    closing the ledger took itself for the last one and deleted the write-ahead log under
    the open connections. SQLite's own opens share the locks of its other connections."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConfigError(f"cannot open the ledger {path}: {exc.strerror}") from None
    if size == 0 and path.is_file():
        raise ConfigError(f"{path} is an empty file, not a ledger (a new ledger is created "
                          "only where no file exists)")
    return True


def _create(path: Path) -> None:
    """A new ledger at `path`, made in a sibling file and linked into place, so that a
    process opening `path` meanwhile never finds an empty file (which it would refuse);
    when two processes create it at once, the first link wins and both use that file."""
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.new")
    try:
        _connect(staging).close()
        try:
            os.link(staging, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: create in place instead
            _connect(path).close()
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{staging}{suffix}").unlink(missing_ok=True)


def _stored_version(conn: sqlite3.Connection) -> str | None:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
                    ).fetchone() is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else str(row[0])


def _migrate_from_1(conn: sqlite3.Connection) -> None:
    """Schema 1 to 2, in the caller's transaction: the entries table again, with the new
    kinds allowed and a finding_id column filled from each leaf (SQLite cannot alter a
    CHECK constraint, and the triggers refuse UPDATE). The leaves, their order and the
    tree are unchanged; the triggers and indexes are made again by the schema.

    finding_id has no default: a schema-1 writer still running (it inserts no
    finding_id) is refused by NOT NULL, rather than storing a row its audit would call
    tampered."""
    conn.execute(_ENTRIES.format(name="entries_v2", kinds=_KINDS_SQL))
    conn.execute("""INSERT INTO entries_v2 (idx, kind, entry_id, occurred_at, rule,
        account_id, subject_id, leaf, leaf_hash, stored_at, finding_id)
        SELECT idx, kind, entry_id, occurred_at, rule, account_id, subject_id, leaf,
            leaf_hash, stored_at,
            CASE kind WHEN 'finding' THEN entry_id
                ELSE COALESCE(json_extract(CAST(leaf AS TEXT), '$.finding_id'), '') END
        FROM entries ORDER BY idx""")
    conn.execute("DROP TABLE entries")
    conn.execute("ALTER TABLE entries_v2 RENAME TO entries")
    conn.execute(f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'")


def _connect(path: Path) -> sqlite3.Connection:
    """A connection to the ledger at `path`, its schema created if missing and checked."""
    try:
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        conn = sqlite3.connect(path, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open the ledger {path}: {exc}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise LedgerError(f"the ledger {path} cannot use a write-ahead log")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if _stored_version(conn) == "1":
                _migrate_from_1(conn)
            for statement in _SCHEMA:
                conn.execute(statement)
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'"
                                   ).fetchone()[0]
        except BaseException:
            conn.rollback()
            raise
        conn.execute("COMMIT")
    except (sqlite3.DatabaseError, LedgerError) as exc:
        conn.close()
        raise ConfigError(f"{path} is not a usable ledger: {exc}") from None
    if version != SCHEMA_VERSION:
        conn.close()
        raise ConfigError(f"{path} has ledger schema version {version}; this "
                          f"consentwatch reads version {SCHEMA_VERSION}")
    return conn
