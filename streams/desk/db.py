"""The desk's own connections to the ledger's database, and its users table.

The ledger (`streams.evidence.ledger`) is opened once first, so a path or URL that is
not a usable ledger is refused exactly as `export` refuses it, and a new SQLite file gets
the ledger's schema (with the indexes the desk's queries need). The desk then reads
through connections of its own, one per thread (the web server answers on a thread
pool; neither sqlite3 nor one psycopg connection should be shared by concurrent queries).

SQL is written with `?` placeholders; `Database.sql` turns them into the driver's.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from streams.errors import ConsentwatchError

__all__ = ["Database", "DatabaseError"]

_BUSY_TIMEOUT_S = 10.0

#: Users of the desk (not ledger leaves: see streams/desk/users.py).
_USERS_TABLE = """CREATE TABLE IF NOT EXISTS desk_users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL)"""


class DatabaseError(ConsentwatchError):
    """The ledger's database cannot be read or written (one line, no values)."""


class Database:
    """The ledger's database as the desk reads it: a SQLite file or a PostgreSQL URL."""

    def __init__(self, path_or_url: str) -> None:
        from streams.evidence.ledger import is_postgres_url, open_ledger

        open_ledger(path_or_url).close()  # refuses what is not a ledger; makes the schema
        self.target = path_or_url
        self.postgres = is_postgres_url(path_or_url)
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        with self.cursor() as cur:
            cur.execute(_USERS_TABLE)

    # -- dialect -----------------------------------------------------------------------

    def sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.postgres else text

    @property
    def provider_expr(self) -> str:
        """The finding's provider, read from its leaf: the expression the provider index
        of the ledger's schema is built on (the same text, or the index is not used)."""
        if self.postgres:
            return "consentwatch_leaf_text(leaf, 'provider')"
        return "json_extract(CAST(leaf AS TEXT), '$.provider')"

    # -- connections -------------------------------------------------------------------

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            if self.postgres:
                import psycopg

                conn = psycopg.connect(self.target, autocommit=True)
            else:
                conn = sqlite3.connect(self.target, isolation_level=None,
                                       timeout=_BUSY_TIMEOUT_S, check_same_thread=False)
        except Exception as exc:
            raise DatabaseError(f"cannot connect to the ledger's database "
                                f"({type(exc).__name__})") from None
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn

    @contextmanager
    def cursor(self) -> Iterator[Any]:
        """A cursor in autocommit mode; database errors become DatabaseError."""
        conn = self._connection()
        try:
            cur = conn.cursor()
            try:
                yield cur
            finally:
                cur.close()
        except (sqlite3.Error, _psycopg_error()) as exc:
            raise DatabaseError(f"the ledger's database failed: {_first_line(exc)}") from exc

    def query(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.cursor() as cur:
            cur.execute(self.sql(text), tuple(params))
            return [tuple(row) for row in cur.fetchall()]

    def execute(self, text: str, params: Sequence[Any] = ()) -> int:
        """One statement on its own (autocommit); returns the rows it changed."""
        with self.cursor() as cur:
            cur.execute(self.sql(text), tuple(params))
            return int(cur.rowcount)

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(Exception):  # closing what may already be gone
                conn.close()
        self._local = threading.local()


def _psycopg_error() -> type[Exception]:
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return sqlite3.Error
    error: type[Exception] = psycopg.Error
    return error


def _first_line(exc: Exception) -> str:
    primary = getattr(getattr(exc, "diag", None), "message_primary", None)
    lines = str(exc).strip().splitlines()
    return " ".join(str(primary or (lines[0] if lines else type(exc).__name__)).split())
