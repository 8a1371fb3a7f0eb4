"""The PostgreSQL backend, for deployments where several machines write one ledger.

Same tables and rules as SQLite, in PostgreSQL's dialect: plpgsql triggers refuse
UPDATE, DELETE and TRUNCATE of entries, checkpoints and exports, and any insert that
is not the next leaf. Writers serialise on the tree_state row (SELECT ... FOR
UPDATE). The schema is created on first open under an advisory lock, so two
processes opening a fresh database at once do not race.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from streams.errors import ConfigError
from streams.evidence.ledger.base import KINDS, LedgerError
from streams.evidence.ledger.sql import SqlLedger

__all__ = ["PostgresLedger"]

SCHEMA_VERSION = "2"  # 2: reviews, exceptions and exports are leaves; finding_id column
_SCHEMA_LOCK = 0x63775F6C6564  # "cw_led": the advisory lock held while creating the schema
_APPEND_ONLY = ("entries", "checkpoints", "exports", "timestamps")

_KINDS_SQL = ", ".join(f"'{kind}'" for kind in KINDS)

#: Schema 1 to 2 (then the whole schema runs again, every statement idempotent): the new
#: kinds allowed, and a finding_id column filled from each leaf (`_fill_finding_ids`),
#: with the append-only trigger held off for those UPDATEs inside the migrating
#: transaction, then its default dropped: a schema-1 writer still running (it inserts no
#: finding_id) is refused by NOT NULL instead of storing a row the audit would call
#: tampered. The leaves, their order and the tree are unchanged.
_FROM_1_BEFORE = [
    "ALTER TABLE entries ADD COLUMN finding_id TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE entries DISABLE TRIGGER entries_append_only",
    "UPDATE entries SET finding_id = entry_id WHERE kind = 'finding'",
]
_FROM_1_AFTER = [
    "ALTER TABLE entries ENABLE TRIGGER entries_append_only",
    "ALTER TABLE entries ALTER COLUMN finding_id DROP DEFAULT",
    "ALTER TABLE entries DROP CONSTRAINT IF EXISTS entries_kind_check",
    f"ALTER TABLE entries ADD CONSTRAINT entries_kind_check CHECK (kind IN ({_KINDS_SQL}))",
    f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'",
]
#: Leaves read (and finding_ids written) per round trip while migrating.
_MIGRATION_BATCH = 1000

# The review desk's findings table: newest first, keyset-paged on (occurred_at, idx), by
# each filter, and its accounts page, by account and rule (streams/desk/queries.py). Also
# made on opening a ledger created before them. The provider is read from the leaf by an
# IMMUTABLE function (a leaf's bytes never change) that gives NULL rather than fail an
# insert on a leaf it cannot read.
_DESK_INDEXES = [
    """CREATE OR REPLACE FUNCTION consentwatch_leaf_text(leaf BYTEA, field TEXT) RETURNS TEXT
        LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
        BEGIN
            RETURN convert_from(leaf, 'UTF8')::json ->> field;
        EXCEPTION WHEN OTHERS THEN
            RETURN NULL;
        END $$""",
    "CREATE INDEX IF NOT EXISTS entries_desk_time ON entries (kind, occurred_at, idx)",
    *(f"CREATE INDEX IF NOT EXISTS entries_desk_{name} ON entries "
      f"(kind, {column}, occurred_at, idx)"
      for name, column in (("rule", "rule"), ("account", "account_id"),
                           ("subject", "subject_id"),
                           ("provider", "consentwatch_leaf_text(leaf, 'provider')"),
                           ("account_rule", "account_id, rule"))),
]

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"""CREATE TABLE IF NOT EXISTS entries (
        idx BIGINT PRIMARY KEY,
        kind TEXT NOT NULL CONSTRAINT entries_kind_check CHECK (kind IN ({_KINDS_SQL})),
        entry_id TEXT NOT NULL,
        occurred_at BIGINT NOT NULL,
        rule TEXT NOT NULL,
        account_id TEXT NOT NULL,
        subject_id TEXT NOT NULL,
        leaf BYTEA NOT NULL,
        leaf_hash BYTEA NOT NULL CHECK (length(leaf_hash) = 32),
        stored_at BIGINT NOT NULL,
        finding_id TEXT NOT NULL,
        UNIQUE (kind, entry_id))""",
    "CREATE INDEX IF NOT EXISTS entries_occurred ON entries (kind, occurred_at)",
    "CREATE INDEX IF NOT EXISTS entries_finding ON entries (finding_id, kind)",
    "CREATE INDEX IF NOT EXISTS entries_rule ON entries (rule)",
    "CREATE INDEX IF NOT EXISTS entries_account ON entries (account_id)",
    "CREATE INDEX IF NOT EXISTS entries_subject ON entries (subject_id)",
    *_DESK_INDEXES,
    """CREATE TABLE IF NOT EXISTS tree_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        size BIGINT NOT NULL,
        frontier BYTEA NOT NULL)""",
    "INSERT INTO tree_state (id, size, frontier) VALUES (1, 0, '') ON CONFLICT DO NOTHING",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        size BIGINT NOT NULL,
        root BYTEA NOT NULL,
        note TEXT NOT NULL,
        key_name TEXT NOT NULL,
        signed_at BIGINT NOT NULL)""",
    # issue 18: RFC 3161 time-stamp replies of checkpoints (streams/evidence/timestamp.py)
    """CREATE TABLE IF NOT EXISTS timestamps (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        size BIGINT NOT NULL,
        root BYTEA NOT NULL,
        token BYTEA NOT NULL,
        stored_at BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS exports (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        actor TEXT NOT NULL,
        purpose TEXT NOT NULL,
        query TEXT NOT NULL,
        bundle_sha256 TEXT NOT NULL,
        at_ms BIGINT NOT NULL)""",
    """CREATE OR REPLACE FUNCTION consentwatch_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the consentwatch ledger is append-only: % on % refused',
                TG_OP, TG_TABLE_NAME;
        END $$""",
    """CREATE OR REPLACE FUNCTION consentwatch_next_leaf() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.idx IS DISTINCT FROM (SELECT COALESCE(MAX(idx) + 1, 0) FROM entries) THEN
                RAISE EXCEPTION 'a ledger entry must be the next leaf';
            END IF;
            RETURN NEW;
        END $$""",
    """CREATE OR REPLACE FUNCTION consentwatch_tree_grows() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.size < OLD.size THEN
                RAISE EXCEPTION 'the ledger tree cannot shrink';
            END IF;
            RETURN NEW;
        END $$""",
    *(f"""CREATE OR REPLACE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION consentwatch_append_only()"""
      for table in _APPEND_ONLY),
    *(f"""CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION consentwatch_append_only()"""
      for table in (*_APPEND_ONLY, "tree_state")),
    """CREATE OR REPLACE TRIGGER entries_next_leaf BEFORE INSERT ON entries
        FOR EACH ROW EXECUTE FUNCTION consentwatch_next_leaf()""",
    """CREATE OR REPLACE TRIGGER tree_state_no_delete BEFORE DELETE ON tree_state
        FOR EACH ROW EXECUTE FUNCTION consentwatch_append_only()""",
    """CREATE OR REPLACE TRIGGER tree_state_grows BEFORE UPDATE ON tree_state
        FOR EACH ROW EXECUTE FUNCTION consentwatch_tree_grows()""",
    f"""INSERT INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}')
        ON CONFLICT DO NOTHING""",
]


def _fill_finding_ids(cur: Any) -> None:
    """The finding_id column of every amendment (every leaf that is not a finding), from
    its leaf, batch by batch, in the caller's (migrating) transaction.

    Parsed here with orjson, not by PostgreSQL: its jsonb cannot hold the NUL character
    that a leaf's strings may (an event's text, as "\\u0000"), and one such leaf would
    roll the whole migration back.
    """
    last = -1
    while True:
        cur.execute("SELECT idx, leaf FROM entries WHERE kind <> 'finding' AND idx > %s "
                    "ORDER BY idx LIMIT %s", (last, _MIGRATION_BATCH))
        page = cur.fetchall()
        if not page:
            return
        updates = []
        for idx, leaf in page:
            try:
                record = orjson.loads(bytes(leaf))
            except orjson.JSONDecodeError:
                record = None  # left '': the audit names the leaf
            finding_id = record.get("finding_id") if isinstance(record, dict) else None
            if isinstance(finding_id, str) and finding_id and "\x00" not in finding_id:
                updates.append((finding_id, idx))
        if updates:
            cur.executemany("UPDATE entries SET finding_id = %s WHERE idx = %s", updates)
        last = page[-1][0]


def _message(exc: Exception) -> str:
    """The server's primary message only: DETAIL lines may quote stored values."""
    primary = getattr(getattr(exc, "diag", None), "message_primary", None)
    lines = str(exc).strip().splitlines()
    text = primary or (lines[0] if lines else type(exc).__name__)
    return " ".join(str(text).split())


class PostgresLedger(SqlLedger):
    """The ledger in a PostgreSQL database named by a `postgresql://` URL."""

    _FOR_UPDATE = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        import psycopg

        self._psycopg = psycopg
        try:
            self._conn = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            # libpq's message names host and port, never the password.
            raise ConfigError(f"cannot connect to the PostgreSQL ledger: {_message(exc)}") from None
        try:
            with self._write() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                cur.execute("SELECT to_regclass('meta') IS NOT NULL")
                exists = cur.fetchone()[0]
                version = None
                if exists:
                    cur.execute("SELECT value FROM meta WHERE key = 'schema_version'")
                    row = cur.fetchone()
                    version = row[0] if row else None
                if version == "1":
                    for statement in _FROM_1_BEFORE:
                        cur.execute(statement)
                    _fill_finding_ids(cur)
                    for statement in _FROM_1_AFTER:
                        cur.execute(statement)
                if version in (None, "1"):
                    for statement in _SCHEMA:
                        cur.execute(statement)
                    version = SCHEMA_VERSION
                elif version == SCHEMA_VERSION:
                    cur.execute("SELECT to_regclass('entries_desk_account_rule') IS NOT NULL")
                    if not cur.fetchone()[0]:
                        for statement in _DESK_INDEXES:
                            cur.execute(statement)
        except LedgerError as exc:
            self._conn.close()
            raise ConfigError(f"the PostgreSQL database is not a usable ledger: {exc}") from None
        if version != SCHEMA_VERSION:
            self._conn.close()
            raise ConfigError(f"the PostgreSQL ledger has schema version {version}; this "
                              f"consentwatch reads version {SCHEMA_VERSION}")

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s")

    @contextmanager
    def _write(self) -> Iterator[Any]:
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                yield cur
        except self._psycopg.Error as exc:
            raise LedgerError(f"writing the PostgreSQL ledger failed: {_message(exc)}") from exc

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        try:
            with self._conn.cursor() as cur:
                yield cur
        except self._psycopg.Error as exc:
            raise LedgerError(f"reading the PostgreSQL ledger failed: {_message(exc)}") from exc

    def close(self) -> None:
        self._conn.close()
