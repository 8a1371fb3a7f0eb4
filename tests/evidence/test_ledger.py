"""The evidence ledger, on SQLite and on a real PostgreSQL server: the same tests for both.

Append-only and idempotent storage, the filters exports use, leaf hashes that anyone
can recompute from a record, signed checkpoints of the right tree, the export log, and
`ledger load` (bad lines, concurrent loads of one file).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.evidence import merkle
from streams.evidence.checkpoint import CheckpointError, verify_checkpoint
from streams.evidence.ledger import (
    CHECKPOINT_ORIGIN,
    InvalidRecord,
    LedgerError,
    LedgerTampered,
    SqlLedger,
    open_ledger,
)
from streams.evidence.ledger.frontier import Frontier
from streams.evidence.ledger.records import to_row
from streams.evidence.ledger.sqlite import SqliteLedger
from streams.evidence.merkle import leaf_hash, root_hash
from streams.model.findings import amendment_id, finding_id
from tests.conftest import run_cli
from tests.postgres_fixture import fresh_database

HOUR_MS = 3_600_000
T0 = 1_772_445_600_000  # 2026-03-02T10:00:00Z


def finding(n: int, *, rule: str = "enrichment-without-consent", account: str = "acct1",
            subject: str | None = None, occurred_at: int | None = None) -> dict[str, Any]:
    """A finding record as `replay` writes it (the ledger stores whatever fields it has)."""
    trigger = f"e{n:05d}"
    return {
        "finding_id": finding_id(rule, trigger), "rule": rule, "severity": "HIGH",
        "subject_id": subject or f"u-{n % 7}", "account_id": account, "meeting_id": "m1",
        "provider": "linkedin_sales_navigator", "trigger_event_id": trigger,
        "evidence_event_ids": [trigger], "occurred_at": T0 + n * HOUR_MS if occurred_at is None
        else occurred_at, "detected_at": T0 + 10**9, "explanation": f"Finding number {n}.",
    }


def amendment(of: dict[str, Any], late: str = "e99999") -> dict[str, Any]:
    return {
        "amendment_id": amendment_id(of["finding_id"], late, "RETRACTED"), "kind": "RETRACTED",
        "finding_id": of["finding_id"], "rule": of["rule"], "subject_id": of["subject_id"],
        "trigger_event_id": of["trigger_event_id"], "late_event_id": late,
        "evidence_event_ids": [late], "occurred_at": of["occurred_at"],
        "detected_at": of["detected_at"] + 1, "explanation": "Retracted.",
    }


# -- one fresh ledger per test, per backend ---------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A ledger nobody used yet: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield str(tmp_path / "ledger.db")
        return
    with fresh_database(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[SqlLedger]:
    store = open_ledger(ledger_url)
    try:
        yield store
    finally:
        store.close()


def raw_execute(url: str) -> Callable[[str], None]:
    """Run SQL on the ledger's database directly, past the Ledger API (as a tamperer would)."""
    if url.startswith("postgresql://"):
        import psycopg

        def run_pg(sql: str) -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(sql)
        return run_pg
    import sqlite3

    def run_sqlite(sql: str) -> None:
        conn = sqlite3.connect(url, isolation_level=None)
        try:
            conn.execute(sql)
        finally:
            conn.close()
    return run_sqlite


def all_ids(store: SqlLedger, kind: str = "finding") -> list[str]:
    return [entry.entry_id for entry in store.entries(kind=kind)]  # type: ignore[arg-type]


# -- appending ---------------------------------------------------------------------------


def test_append_stores_each_finding_once(ledger: SqlLedger) -> None:
    records = [finding(n) for n in range(20)]
    assert ledger.append("finding", records) == 20
    assert ledger.append("finding", records) == 0
    assert ledger.append("finding", [*records[:5], finding(20), finding(20)]) == 1
    assert ledger.size() == 21
    assert all_ids(ledger) == [r["finding_id"] for r in [*records, finding(20)]]


def test_idempotence_is_by_id_not_by_content(ledger: SqlLedger) -> None:
    first = finding(1)
    resent = first | {"detected_at": first["detected_at"] + 5_000}  # a worker's re-send
    ledger.append("finding", [first])
    assert ledger.append("finding", [resent]) == 0
    [stored] = ledger.entries()
    assert stored.record == first


def test_amendments_are_idempotent_by_amendment_id(ledger: SqlLedger) -> None:
    base = finding(1)
    ledger.append("finding", [base])
    a1, a2 = amendment(base), amendment(base, late="e88888")
    assert ledger.append("amendment", [a1, a1, a2]) == 2
    assert ledger.append("amendment", [a2]) == 0
    assert ledger.size() == 3
    entries = list(ledger.entries(kind="amendment"))
    assert [e.entry_id for e in entries] == [a1["amendment_id"], a2["amendment_id"]]
    assert [e.index for e in entries] == [1, 2]
    assert entries[0].account_id == ""  # amendments carry no account
    assert all_ids(ledger) == [base["finding_id"]]


def test_append_mixed_is_one_transaction(ledger: SqlLedger) -> None:
    base = finding(1)
    assert ledger.append_mixed([("finding", base), ("amendment", amendment(base))]) == 2
    broken = finding(3)
    del broken["occurred_at"]
    with pytest.raises(InvalidRecord, match="occurred_at"):
        ledger.append_mixed([("finding", finding(2)), ("finding", broken)])
    assert ledger.size() == 2  # finding 2 was not stored either


@pytest.mark.parametrize("change", [
    {"finding_id": ""}, {"finding_id": 7}, {"rule": None}, {"subject_id": ["x"]},
    {"account_id": None}, {"occurred_at": "2026-03-02T10:00:00Z"}, {"occurred_at": True},
    {"occurred_at": 1.5}, {"detected_at": 2**60},  # not representable in RFC 8785 JSON
])
def test_records_the_ledger_cannot_index_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidRecord) as caught:
        to_row("finding", finding(1) | change)
    assert "u-1" not in str(caught.value) and "acct1" not in str(caught.value)


@pytest.mark.parametrize(("kind", "foreign"), [
    ("finding", "amendment_id"), ("finding", "review_id"), ("finding", "exception_id"),
    ("finding", "export_id"), ("amendment", "review_id"), ("amendment", "exception_id"),
])
def test_a_record_holding_another_kinds_id_is_refused(kind: str, foreign: str) -> None:
    """A verifier tells the kind of a leaf by its id fields (streams/evidence/verify.py)."""
    record = finding(1) if kind == "finding" else amendment(finding(1))
    with pytest.raises(InvalidRecord, match=foreign):
        to_row(kind, record | {foreign: "0" * 64})


def test_a_batch_with_a_bad_record_stores_nothing(ledger: SqlLedger) -> None:
    with pytest.raises(InvalidRecord):
        ledger.append("finding", [finding(1), finding(2) | {"rule": 3}])
    assert ledger.size() == 0
    with pytest.raises(InvalidRecord, match="kind"):
        ledger.append("verdict", [finding(1)])  # type: ignore[arg-type]


# -- append-only, in the database itself -------------------------------------------------


@pytest.mark.parametrize("statement", [
    "UPDATE entries SET rule = 'other'",
    "DELETE FROM entries",
    "DELETE FROM entries WHERE idx = 1",
    "UPDATE checkpoints SET size = 0",
    "DELETE FROM checkpoints",
    # exports are leaves now (the exports table only holds a schema-1 ledger's)
    "UPDATE entries SET occurred_at = 0 WHERE kind = 'export'",
    "DELETE FROM entries WHERE kind = 'export'",
    "DELETE FROM tree_state",
    "UPDATE tree_state SET size = 1",
    # issue 18: the checkpoints' RFC 3161 tokens
    "UPDATE timestamps SET token = token || token",
    "DELETE FROM timestamps",
    "INSERT INTO entries (idx, kind, entry_id, occurred_at, rule, account_id, subject_id, "
    "leaf, leaf_hash, stored_at) SELECT 7, kind, 'x', occurred_at, rule, account_id, "
    "subject_id, leaf, leaf_hash, stored_at FROM entries WHERE idx = 0",
])
def test_the_database_refuses_to_rewrite_history(ledger_url: str, statement: str) -> None:
    store = open_ledger(ledger_url)
    try:
        store.append("finding", [finding(n) for n in range(3)])
        store.checkpoint(Ed25519PrivateKey.generate(), "consentwatch")
        store.record_export("auditor", "case 42", {"rule": None}, "ab" * 32, T0)
        store.add_timestamp(3, b"r" * 32, b"a token")
        before = (store.size(), store.leaf_hashes(), store.latest_checkpoint(), store.exports(),
                  store.timestamp_token(3, b"r" * 32))
    finally:
        store.close()
    with pytest.raises(Exception, match=r"append-only|next leaf|cannot shrink"):
        raw_execute(ledger_url)(statement)
    store = open_ledger(ledger_url)
    try:
        assert (store.size(), store.leaf_hashes(), store.latest_checkpoint(),
                store.exports(), store.timestamp_token(3, b"r" * 32)) == before
    finally:
        store.close()


def test_postgres_also_refuses_truncate(postgres_url: str) -> None:
    with fresh_database(postgres_url) as url:
        with open_ledger(url) as store:
            store.append("finding", [finding(1)])
        for table in ("entries", "checkpoints", "exports", "timestamps", "tree_state"):
            with pytest.raises(Exception, match="append-only"):
                raw_execute(url)(f"TRUNCATE {table}")
        with open_ledger(url) as store:
            assert store.size() == 1


# -- reading: the filters exports use ----------------------------------------------------


def test_entries_filters(ledger: SqlLedger) -> None:
    records = [
        finding(0, occurred_at=T0),
        finding(1, occurred_at=T0 + HOUR_MS, rule="notice-missing", subject="u-a"),
        finding(2, occurred_at=T0 + 2 * HOUR_MS, account="acct2", subject="u-a"),
        finding(3, occurred_at=T0 + 3 * HOUR_MS, rule="notice-missing", account="acct2"),
        finding(4, occurred_at=T0 - HOUR_MS),
    ]
    ledger.append("finding", records)
    ledger.append("amendment", [amendment(records[1])])

    def ids(**query: Any) -> list[int]:
        return [int(e.record["trigger_event_id"][1:]) for e in ledger.entries(**query)]

    assert ids() == [0, 1, 2, 3, 4]  # leaf order, not time order
    assert ids(from_ms=T0 + HOUR_MS) == [1, 2, 3]  # from is inclusive
    assert ids(to_ms=T0 + 2 * HOUR_MS) == [0, 1, 4]  # to is exclusive
    assert ids(from_ms=T0, to_ms=T0 + 3 * HOUR_MS) == [0, 1, 2]
    assert ids(rule="notice-missing") == [1, 3]
    assert ids(account="acct2") == [2, 3]
    assert ids(subject="u-a") == [1, 2]
    assert ids(rule="notice-missing", account="acct2", from_ms=T0 + 3 * HOUR_MS) == [3]
    assert ids(account="nobody") == []
    [amended] = ledger.entries(kind="amendment", rule="notice-missing", subject="u-a")
    assert amended.index == 5 and amended.entry_id == amendment(records[1])["amendment_id"]
    assert list(ledger.entries(kind="amendment", account="acct1")) == []


def test_entries_carry_their_record_and_leaf(ledger: SqlLedger) -> None:
    record = finding(3, subject="u-zoë") | {"explanation": "naïve — café ✓", "nested": {
        "b": [1, 2, {"y": None, "x": True}], "a": -5}}
    ledger.append("finding", [record])
    [entry] = ledger.entries()
    assert entry.index == 0 and entry.kind == "finding"
    assert entry.entry_id == record["finding_id"]
    assert (entry.occurred_at, entry.rule, entry.account_id, entry.subject_id) == (
        record["occurred_at"], record["rule"], "acct1", "u-zoë")
    assert entry.record == record
    assert entry.leaf == rfc8785.dumps(record)


def test_entries_page_through_large_ledgers(ledger: SqlLedger) -> None:
    ledger.append("finding", [finding(n, rule="r" if n % 3 else "s") for n in range(2_345)])
    indexes = [e.index for e in ledger.entries(rule="r")]
    assert indexes == [n for n in range(2_345) if n % 3]


# -- Merkle leaves and checkpoints -------------------------------------------------------


def test_leaf_hashes_are_rfc9162_hashes_of_canonical_records(ledger: SqlLedger) -> None:
    base = finding(0)
    reordered = dict(reversed(list(finding(1).items())))  # key order must not matter
    ledger.append_mixed([("finding", base), ("finding", reordered),
                         ("amendment", amendment(base))])
    expected = [leaf_hash(rfc8785.dumps(r)) for r in (base, finding(1), amendment(base))]
    assert ledger.leaf_hashes() == expected
    assert ledger.leaf_hashes(2) == expected[:2]
    assert ledger.leaf_hashes(0) == []
    assert [leaf_hash(e.leaf) for e in ledger.entries()] == expected[:2]
    with pytest.raises(LedgerError):
        ledger.leaf_hashes(4)


def test_checkpoint_signs_the_size_and_root_of_the_tree(ledger: SqlLedger) -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    assert ledger.latest_checkpoint() is None
    empty = verify_checkpoint(ledger.checkpoint(key, "consentwatch"), key.public_key())
    # each ledger's own origin (witnesses keep their state per origin), fixed at the first
    assert empty.origin == f"{CHECKPOINT_ORIGIN} {ledger.ledger_id()}"
    assert ledger.checkpoint_origin() == empty.origin
    assert (empty.size, empty.root) == (0, root_hash([]))
    for batch in ([finding(n) for n in range(7)], [finding(n) for n in range(5, 12)]):
        ledger.append("finding", batch)
        note = ledger.checkpoint(key, "consentwatch")
        assert ledger.latest_checkpoint() == note
        checkpoint = verify_checkpoint(note, key.public_key())
        assert checkpoint.size == ledger.size()
        assert checkpoint.root == root_hash(ledger.leaf_hashes()) == ledger.root()
    assert checkpoint.size == 12
    with pytest.raises(CheckpointError):
        verify_checkpoint(note, other.public_key())


def test_the_tree_survives_reopening(ledger_url: str) -> None:
    with open_ledger(ledger_url) as first:
        first.append("finding", [finding(n) for n in range(13)])
        root = first.root()
    with open_ledger(ledger_url) as second:
        assert (second.size(), second.root()) == (13, root)
        second.append("finding", [finding(n) for n in range(10, 21)])
        assert second.root() == root_hash(second.leaf_hashes())
        assert second.size() == 21


@pytest.mark.parametrize("batches", [[1] * 70, [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5], [64, 1, 63]])
def test_the_stored_frontier_gives_the_rfc9162_root_at_every_size(
        ledger: SqlLedger, batches: list[int]) -> None:
    n = 0
    for count in batches:
        ledger.append("finding", [finding(i) for i in range(n, n + count)])
        n += count
        assert ledger.root() == root_hash(ledger.leaf_hashes()), f"size {n}"


def test_frontier_matches_merkle_root_hash() -> None:
    frontier, leaves = Frontier(), []
    for n in range(300):
        assert frontier.root() == root_hash(leaves)
        assert Frontier.from_bytes(frontier.size, frontier.to_bytes()).root() == frontier.root()
        leaf = merkle.leaf_hash(n.to_bytes(4, "big"))
        frontier.append(leaf)
        leaves.append(leaf)
    with pytest.raises(ValueError, match="frontier"):
        Frontier.from_bytes(5, b"\x00" * 32)


def test_a_tampered_tree_state_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with open_ledger(str(path)) as store:
        store.append("finding", [finding(n) for n in range(3)])
    raw_execute(str(path))("UPDATE tree_state SET size = 5, frontier = zeroblob(64)")
    with open_ledger(str(path)) as store, pytest.raises(LedgerError, match="does not match"):
        store.append("finding", [finding(9)])


# -- the export log ----------------------------------------------------------------------


def test_exports_are_recorded(ledger: SqlLedger) -> None:
    assert ledger.exports() == []
    query = {"from_ms": T0, "to_ms": T0 + HOUR_MS, "rule": None, "account": "acct1"}
    ledger.record_export("alice@host", "DPA request 2026-17", query, "a" * 64, T0 + 5)
    ledger.record_export("bob", "second look", {}, "b" * 64, T0 + 9)
    assert ledger.exports() == [
        {"actor": "alice@host", "purpose": "DPA request 2026-17", "query": query,
         "bundle_sha256": "a" * 64, "at_ms": T0 + 5},
        {"actor": "bob", "purpose": "second look", "query": {}, "bundle_sha256": "b" * 64,
         "at_ms": T0 + 9},
    ]
    # exports are leaves of kind "export" (issue 17), idempotent by their content hash
    assert ledger.size() == 2
    [first, second] = ledger.entries(kind="export")
    assert first.record["manifest_sha256"] == "a" * 64 and second.record["actor"] == "bob"
    ledger.append("export", [first.record])
    assert ledger.size() == 2


# -- several writers ---------------------------------------------------------------------


def test_concurrent_appends_of_the_same_records_store_each_once(ledger_url: str) -> None:
    records = [finding(n) for n in range(400)]
    open_ledger(ledger_url).close()  # the schema exists before the race
    results: list[int] = []
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            with open_ledger(ledger_url) as store:
                for start in range(offset, 400 + offset, 50):
                    chunk = [records[i % 400] for i in range(start, start + 50)]
                    results.append(store.append("finding", chunk))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(offset,)) for offset in (0, 150, 275)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert sum(results) == 400
    with open_ledger(ledger_url) as store:
        assert sorted(all_ids(store)) == sorted(r["finding_id"] for r in records)
        assert [e.index for e in store.entries()] == list(range(400))
        assert store.root() == root_hash(store.leaf_hashes())


def _cli(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "streams.cli.app", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_concurrent_loads_of_one_file_do_not_double(ledger_url: str, tmp_path: Path) -> None:
    records = [finding(n) for n in range(1_500)]
    path = tmp_path / "findings.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    loads = [_cli("ledger", "load", str(path), "--ledger", ledger_url) for _ in range(3)]
    outcomes = [(p.returncode, err.decode()) for p in loads
                for _, err in [p.communicate(timeout=120)]]
    assert [code for code, _ in outcomes] == [0, 0, 0], outcomes
    stored = [int(re.search(r"(\d+) findings stored", text).group(1))  # type: ignore[union-attr]
              for _, text in outcomes]
    assert sum(stored) == 1_500, stored
    with open_ledger(ledger_url) as store:
        assert store.size() == 1_500
        assert sorted(all_ids(store)) == sorted(r["finding_id"] for r in records)


def test_load_reports_bad_lines_and_stores_the_rest(ledger_url: str, tmp_path: Path) -> None:
    findings_file, amendments_file = tmp_path / "f.jsonl", tmp_path / "a.jsonl"
    good = [finding(n) for n in range(4)]
    lines = [orjson.dumps(good[0]), b"{not json", orjson.dumps(good[1]), b"",
             orjson.dumps(finding(9) | {"finding_id": None}), b"[1, 2]",
             orjson.dumps(good[2]), b"\xff\xfe", orjson.dumps(good[3])]
    findings_file.write_bytes(b"\n".join(lines) + b"\n")
    amendments_file.write_bytes(orjson.dumps(amendment(good[0])) + b"\n")
    key_dir = tmp_path / "keys"
    subprocess.run([sys.executable, "-m", "streams.cli.app", "keys", "generate", "--out",
                    str(key_dir)], check=True, capture_output=True)
    process = _cli("ledger", "load", str(findings_file), "--amendments", str(amendments_file),
                   "--ledger", ledger_url, "--private-key", str(key_dir / "consentwatch.key"))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    text = err.decode()
    for number in (2, 5, 6, 8):
        assert f"f.jsonl:{number}: " in text
    assert "f.jsonl:4:" not in text and "u-9" not in text  # blank line; no personal data
    assert "4 findings stored" in text and "1 amendments stored" in text
    from streams.evidence.keys import load_public_key

    with open_ledger(ledger_url) as store:
        assert all_ids(store) == [r["finding_id"] for r in good]
        note = store.latest_checkpoint()
        assert note is not None
        checkpoint = verify_checkpoint(note, load_public_key(key_dir / "consentwatch.pub"))
        assert (checkpoint.size, checkpoint.root) == (5, store.root())


def test_open_ledger_errors_are_one_line(tmp_path: Path) -> None:
    from streams.errors import ConfigError

    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("hello\n" * 100)
    with pytest.raises(ConfigError, match="not a usable ledger"):
        open_ledger(str(not_a_db))
    assert not_a_db.read_text() == "hello\n" * 100
    with pytest.raises(ConfigError, match="SQLite file path or a postgresql"):
        open_ledger("mysql://localhost/x")
    with pytest.raises(ConfigError) as caught:
        open_ledger("postgresql://someone:s3cret-pw@127.0.0.1:1/nothing")
    assert "s3cret-pw" not in str(caught.value)
    assert isinstance(open_ledger(str(tmp_path / "fresh.db")), SqliteLedger)


def test_postgres_sh_start_and_stop_are_idempotent() -> None:
    import shutil
    import tempfile

    from tests.postgres_fixture import POSTGRES_SH

    data_dir = tempfile.mkdtemp(prefix="consentwatch-pg-")

    def sh(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(POSTGRES_SH), *args, "--dir", data_dir], capture_output=True,
                              text=True, timeout=120, check=False)

    try:
        first = sh("start")
        assert first.returncode == 0, first.stderr
        url = first.stdout.strip()
        assert re.fullmatch(r"postgresql://postgres@127\.0\.0\.1:\d+/consentwatch", url)
        again = sh("start")
        assert (again.returncode, again.stdout.strip()) == (0, url)
        assert "already running" in again.stderr
        assert sh("status").stdout.strip() == url
        with open_ledger(url) as store:
            assert store.append("finding", [finding(1)]) == 1
    finally:
        stopped = sh("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert sh("stop").returncode == 0
        assert sh("status").returncode == 3
        shutil.rmtree(data_dir, ignore_errors=True)


# -- the audit before an export: the leaf bytes decide, not the columns -------------------


def tamper(url: str, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """With the ledger's triggers off (as someone with write access to the database can
    do), run `statements` ("?" placeholders), then bring the tree state in step with the
    leaf_hash column, as a careful tamperer would."""
    if url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            for table in ("entries", "tree_state", "checkpoints"):
                conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            for sql, params in statements:
                conn.execute(sql.replace("?", "%s"), params)
            rows = conn.execute("SELECT leaf_hash FROM entries ORDER BY idx").fetchall()
            frontier = Frontier()
            for (value,) in rows:
                frontier.append(bytes(value))
            conn.execute("UPDATE tree_state SET size = %s, frontier = %s",
                         (frontier.size, frontier.to_bytes()))
        return
    import sqlite3

    conn = sqlite3.connect(url, isolation_level=None)
    try:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"
                                    ).fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        for sql, params in statements:
            conn.execute(sql, params)
        frontier = Frontier()
        for (value,) in conn.execute("SELECT leaf_hash FROM entries ORDER BY idx").fetchall():
            frontier.append(bytes(value))
        conn.execute("UPDATE tree_state SET size = ?, frontier = ?",
                     (frontier.size, frontier.to_bytes()))
    finally:
        conn.close()


def rewritten(record: dict[str, Any], **changes: Any) -> tuple[bytes, bytes]:
    """The leaf and leaf hash of `record` with `changes`: a rewrite with a matching hash."""
    leaf = rfc8785.dumps(record | changes)
    return leaf, leaf_hash(leaf)


def row_values(row: Any) -> tuple[Any, ...]:
    """The values of an INSERT of `row`'s columns after idx and kind."""
    return (row.entry_id, row.occurred_at, row.rule, row.account_id, row.subject_id, row.leaf,
            row.leaf_hash, row.finding_id)


def checkpoint_count(store: SqlLedger) -> int:
    with store._cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM checkpoints")
        return int(cur.fetchone()[0])


#: How a finding leaves (or enters) an export, or a tree is rewritten, with the triggers
#: dropped; each with the start of the refusal. The ledger holds finding(0..5), account
#: acct1, and a checkpoint of size 6.
TAMPERINGS: dict[str, tuple[Callable[[list[dict[str, Any]]], list[tuple[str, tuple[Any, ...]]]],
                            str]] = {
    "occurred_at column": (lambda rs: [("UPDATE entries SET occurred_at = ? WHERE idx = 2",
                                        (0,))],
                           "ledger leaf 2: the occurred_at column disagrees"),
    "account_id column": (lambda rs: [("UPDATE entries SET account_id = ? WHERE idx = 1",
                                       ("acct-other",))],
                          "ledger leaf 1: the account_id column disagrees"),
    "leaf bytes without their hash": (
        lambda rs: [("UPDATE entries SET leaf = ? WHERE idx = 3",
                     (rewritten(rs[3], explanation="Edited.")[0],))],
        "ledger leaf 3: the stored leaf_hash is not the hash of its bytes"),
    "leaf rewritten with its hash": (
        lambda rs: [("UPDATE entries SET leaf = ?, leaf_hash = ? WHERE idx = 3",
                     rewritten(rs[3], explanation="Edited."))],
        "is not an extension of its last signed checkpoint (size 6)"),
    "leaf rewritten and the tree grown": (
        lambda rs: [("UPDATE entries SET leaf = ?, leaf_hash = ? WHERE idx = 0",
                     rewritten(rs[0], explanation="Edited.")),
                    ("INSERT INTO entries (idx, kind, entry_id, occurred_at, rule, account_id, "
                     "subject_id, leaf, leaf_hash, finding_id, stored_at) VALUES (6, 'finding', "
                     "?, ?, ?, ?, ?, ?, ?, ?, 0)", row_values(to_row("finding", finding(6))))],
        "tree of 7 leaves is not an extension of its last signed checkpoint (size 6)"),
    "last leaf deleted": (lambda rs: [("DELETE FROM entries WHERE idx = 5", ())],
                          "holds 5 leaves, fewer than the 6 of its last signed checkpoint"),
    "middle leaf deleted": (lambda rs: [("DELETE FROM entries WHERE idx = 2", ())],
                            "ledger leaf 2 is missing"),
}


@pytest.mark.parametrize("how", sorted(TAMPERINGS))
def test_the_audit_refuses_a_tampered_ledger_and_signs_nothing(ledger_url: str,
                                                               how: str) -> None:
    records = [finding(n) for n in range(6)]
    key = Ed25519PrivateKey.generate()
    with open_ledger(ledger_url) as store:
        store.append("finding", records)
        store.checkpoint(key, "consentwatch")
    statements, message = TAMPERINGS[how]
    tamper(ledger_url, *statements(records))
    with open_ledger(ledger_url) as store:
        before = checkpoint_count(store)
        with pytest.raises(LedgerTampered) as caught:
            store.audited_checkpoint(key, "consentwatch")
        assert message in str(caught.value) and "\n" not in str(caught.value)
        assert checkpoint_count(store) == before


def test_entries_refuse_a_row_whose_columns_disagree_with_its_leaf(ledger_url: str) -> None:
    with open_ledger(ledger_url) as store:
        store.append("finding", [finding(n) for n in range(3)])
    tamper(ledger_url, ("UPDATE entries SET rule = ? WHERE idx = 1", ("covert-profile-view",)))
    with open_ledger(ledger_url) as store, pytest.raises(LedgerTampered,
                                                          match="leaf 1: the rule column"):
        list(store.entries(rule="covert-profile-view"))


def test_the_audit_signs_a_tree_recomputed_from_the_leaf_bytes(ledger: SqlLedger) -> None:
    key = Ed25519PrivateKey.generate()
    records = [finding(n) for n in range(5)]
    ledger.append("finding", records[:3])
    ledger.checkpoint(key, "consentwatch")
    first = ledger.audited_checkpoint(key, "consentwatch")
    again = ledger.audited_checkpoint(key, "consentwatch")  # same tree as the last checkpoint
    ledger.append("finding", records[3:])
    grown = ledger.audited_checkpoint(key, "consentwatch")  # an extension of it
    hashes = [leaf_hash(rfc8785.dumps(r)) for r in records]
    assert (first.size, first.root, first.leaf_hashes) == (3, root_hash(hashes[:3]), hashes[:3])
    assert (again.size, again.root) == (first.size, first.root)
    assert (grown.size, grown.root, grown.leaf_hashes) == (5, root_hash(hashes), hashes)
    checkpoint = verify_checkpoint(grown.note, key.public_key())
    assert (checkpoint.size, checkpoint.root) == (5, root_hash(hashes))
    assert ledger.latest_checkpoint() == grown.note


def test_the_audit_passes_over_checkpoints_of_another_key(ledger: SqlLedger) -> None:
    ledger.append("finding", [finding(n) for n in range(2)])
    ledger.checkpoint(Ed25519PrivateKey.generate(), "consentwatch")
    key = Ed25519PrivateKey.generate()
    assert ledger.audited_checkpoint(key, "consentwatch").size == 2


# -- a ledger is created only where no file exists ---------------------------------------


@pytest.mark.parametrize("content", [b"", b"finding,rule\n1,x\n"])
def test_an_empty_or_foreign_file_is_refused_not_made_a_ledger(tmp_path: Path,
                                                                content: bytes) -> None:
    from streams.errors import ConfigError

    existing = tmp_path / "empty.db"
    existing.write_bytes(content)
    with pytest.raises(ConfigError, match=r"empty file, not a ledger|file is not a database"):
        open_ledger(str(existing))
    assert existing.read_bytes() == content  # left as it was, nothing beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]
    findings = tmp_path / "findings.jsonl"
    findings.write_bytes(orjson.dumps(finding(1)) + b"\n")
    key = Ed25519PrivateKey.generate()
    key_file = tmp_path / "signing.key"
    from cryptography.hazmat.primitives import serialization

    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)  # a key others can read gets a warning line of its own
    for args in (["ledger", "load", str(findings), "--ledger", str(existing)],
                 ["export", "--ledger", str(existing), "--from", "2026-03-01T00:00:00Z",
                  "--to", "2026-04-01T00:00:00Z", "--purpose", "audit",
                  "--private-key", str(key_file), str(tmp_path / "bundle")]):
        done = subprocess.run([sys.executable, "-m", "streams.cli.app", *args],
                              capture_output=True, timeout=120, check=False)
        assert done.returncode == 2, done.stderr
        assert done.stderr.decode().count("\n") == 1, done.stderr
        assert str(existing) in done.stderr.decode()
    assert existing.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "findings.jsonl",
                                                          "signing.key"]


def test_a_missing_file_becomes_a_new_ledger_with_no_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with open_ledger(str(path)) as store:
        store.append("finding", [finding(1)])
    with open_ledger(str(path)) as store:
        assert store.size() == 1
    assert [p.name for p in tmp_path.iterdir() if p.name != "new.db"
            and not p.name.startswith("new.db-")] == []


@pytest.mark.parametrize("tampered", [False, True])
def test_a_checkpoint_signed_while_the_audit_reads_is_checked_too(
        ledger_url: str, monkeypatch: pytest.MonkeyPatch, tampered: bool) -> None:
    """`ledger run` may store and sign between the audit's unlocked read and its locked
    part: the audit takes the new leaves in, and checks the tree against that checkpoint."""
    key = Ed25519PrivateKey.generate()
    records = [finding(n) for n in range(6)]
    with open_ledger(ledger_url) as store:
        store.append("finding", records[:4])
        store.checkpoint(key, "consentwatch")
        read_unlocked = store._audit_leaves

        def read_then_others_write(stop: int, frontier: Frontier, hashes: list[bytes],
                                   cur: Any = None) -> None:
            read_unlocked(stop, frontier, hashes, cur)
            if cur is None:
                with open_ledger(ledger_url) as other:
                    other.append("finding", records[4:])
                    if tampered:  # leaf 0 rewritten with its hash, and then signed
                        tamper(ledger_url, ("UPDATE entries SET leaf = ?, leaf_hash = ? "
                                            "WHERE idx = 0",
                                            rewritten(records[0], explanation="Edited.")))
                    other.checkpoint(key, "consentwatch")

        monkeypatch.setattr(store, "_audit_leaves", read_then_others_write)
        if tampered:
            with pytest.raises(LedgerTampered, match="stored tree state is not the tree"):
                store.audited_checkpoint(key, "consentwatch")
            return
        tree = store.audited_checkpoint(key, "consentwatch")
    hashes = [leaf_hash(rfc8785.dumps(r)) for r in records]
    assert (tree.size, tree.root, tree.leaf_hashes) == (6, root_hash(hashes), hashes)


# -- the ledger's read commands: findings, summary, exports, status ----------------------


def loaded_ledger(tmp_path: Path, records: list[dict[str, Any]]) -> str:
    """A SQLite ledger holding `records`, loaded through `ledger load`."""
    source = tmp_path / "findings.jsonl"
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    url = str(tmp_path / "ledger.db")
    assert run_cli("ledger", "load", str(source), "--ledger", url).returncode == 0
    return url


def mixed_findings() -> list[dict[str, Any]]:
    return ([finding(n, account="acct1") for n in range(4)]
            + [finding(n, rule="covert-profile-view", account="acct2") | {"severity": "MEDIUM"}
               for n in range(4, 7)]
            + [finding(7, account="acct2") | {"provider": "other_provider"}])


def printed_ids(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [orjson.loads(line)["trigger_event_id"] for line in result.stdout.splitlines()]


def test_ledger_findings_filters_by_each_field_and_time(tmp_path: Path) -> None:
    url = loaded_ledger(tmp_path, mixed_findings())

    def ids(*options: str) -> list[str]:
        return printed_ids(run_cli("ledger", "findings", "--ledger", url, *options))

    assert ids() == [f"e{n:05d}" for n in range(8)]
    assert ids("--rule", "covert-profile-view") == ["e00004", "e00005", "e00006"]
    assert ids("--severity", "MEDIUM", "--account", "acct2") == ["e00004", "e00005", "e00006"]
    assert ids("--provider", "other_provider") == ["e00007"]
    assert ids("--subject", "u-1") == ["e00001"]
    assert ids("--from", str(T0 + 2 * HOUR_MS), "--to", "2026-03-02T14:00:00Z") == [
        "e00002", "e00003"]


def test_unknown_filter_values_are_one_line_usage_errors(tmp_path: Path) -> None:
    url = loaded_ledger(tmp_path, mixed_findings())
    for option, value in (("--rule", "no-such-rule"), ("--from", "yesterday"),
                          ("--severity", "HUGE")):
        result = run_cli("ledger", "findings", "--ledger", url, option, value)
        lines = result.stderr.decode().strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert "Traceback" not in lines[0]
    result = run_cli("ledger", "findings", "--ledger", url, "--rule", "no-such-rule")
    assert "enrichment-without-consent" in result.stderr.decode()


def test_ledger_summary_counts_by_account_and_rule(tmp_path: Path) -> None:
    url = loaded_ledger(tmp_path, mixed_findings())
    by_account = run_cli("ledger", "summary", "--ledger", url, "--by", "account", "--json")
    assert orjson.loads(by_account.stdout) == {"by": "account", "total": 8,
                                               "counts": {"acct1": 4, "acct2": 4}}
    by_rule = run_cli("ledger", "summary", "--ledger", url, "--by", "rule", "--json",
                      "--account", "acct2")
    assert orjson.loads(by_rule.stdout)["counts"] == {"covert-profile-view": 3,
                                                      "enrichment-without-consent": 1}
    table = run_cli("ledger", "summary", "--ledger", url, "--by", "rule").stdout.decode()
    assert table.splitlines() == ["rule                        findings",
                                  "enrichment-without-consent  5",
                                  "covert-profile-view         3",
                                  "total                       8"]


def test_ledger_commands_refuse_a_ledger_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    result = run_cli("ledger", "summary", "--ledger", str(missing), "--by", "rule")
    assert result.returncode == 2 and b"no ledger at" in result.stderr
    assert not missing.exists()


def export_cli(url: str, key: Path, out: Path, *options: str) -> subprocess.CompletedProcess[bytes]:
    return run_cli("export", "--ledger", url, "--private-key", str(key), "--from",
                   "2026-03-01T00:00:00Z", "--to", "2026-04-01T00:00:00Z", "--purpose",
                   "audit request 42", "--actor", "dpo", *options, str(out))


def test_ledger_exports_lists_the_export_trail(tmp_path: Path) -> None:
    from streams.evidence.keys import generate_keypair

    url = loaded_ledger(tmp_path, mixed_findings())
    key, _ = generate_keypair(tmp_path / "keys")
    assert export_cli(url, key, tmp_path / "b1", "--account", "acct2").returncode == 0
    trail = run_cli("ledger", "exports", "--ledger", url, "--json")
    items = [orjson.loads(line) for line in trail.stdout.splitlines()]
    assert [(i["actor"], i["purpose"], i["query"]["filters"]["account"],
             i["query"]["findings"]) for i in items] == [("dpo", "audit request 42", "acct2", 4)]
    table = run_cli("ledger", "exports", "--ledger", url).stdout.decode().splitlines()
    assert table[0].split()[:4] == ["when", "actor", "purpose", "query"]
    assert "dpo" in table[1] and "account=acct2" in table[1] and " 4 " in table[1]


def test_export_of_an_unknown_rule_is_refused_in_one_line(tmp_path: Path) -> None:
    from streams.evidence.keys import generate_keypair

    url = loaded_ledger(tmp_path, mixed_findings())
    key, _ = generate_keypair(tmp_path / "keys")
    result = export_cli(url, key, tmp_path / "out", "--rule", "no-such-rule")
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, lines
    assert "unknown rule 'no-such-rule'" in lines[0] and "covert-profile-view" in lines[0]
    assert not (tmp_path / "out").exists()


def test_an_empty_export_warns_and_is_still_written_and_recorded(tmp_path: Path) -> None:
    from streams.evidence.keys import generate_keypair

    url = loaded_ledger(tmp_path, mixed_findings())
    key, _ = generate_keypair(tmp_path / "keys")
    result = export_cli(url, key, tmp_path / "out", "--account", "nobody")
    assert result.returncode == 0, result.stderr
    assert "warning: no finding matches the query" in result.stderr.decode()
    assert "account nobody" in result.stderr.decode()
    assert (tmp_path / "out.zip").is_file()
    with open_ledger(url) as store:
        assert [e["query"]["findings"] for e in store.exports()] == [0]


def test_ledger_status_reports_the_checkpoint_and_verifies_the_tree(tmp_path: Path) -> None:
    records = mixed_findings()
    url = loaded_ledger(tmp_path, records)
    key = Ed25519PrivateKey.generate()
    with open_ledger(url) as store:
        note = store.checkpoint(key, "consentwatch")
        root = store.root()
    result = run_cli("ledger", "status", "--ledger", url, "--json")
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    assert note and report["size"] == report["checkpoint size"] == len(records)
    assert report["root"] == report["checkpoint root"] == root.hex()
    assert report["checkpoint key"] == "consentwatch"
    assert report["tree"].startswith("OK")
    text = run_cli("ledger", "status", "--ledger", url).stdout.decode()
    assert f"root:                  {root.hex()}" in text


def test_ledger_status_fails_on_a_rewritten_leaf(tmp_path: Path) -> None:
    records = mixed_findings()
    url = loaded_ledger(tmp_path, records)
    with open_ledger(url) as store:
        store.checkpoint(Ed25519PrivateKey.generate(), "consentwatch")
    leaf, digest = rewritten(records[2], explanation="Edited.")
    tamper(url, ("UPDATE entries SET leaf = ?, leaf_hash = ? WHERE idx = 2", (leaf, digest)))
    result = run_cli("ledger", "status", "--ledger", url)
    assert result.returncode == 1
    assert "tree:                  FAIL: the latest checkpoint's root is not the root" in (
        result.stdout.decode())


def test_verify_tells_the_kinds_apart_as_the_ledger_keeps_them() -> None:
    """verify.py ships without the ledger's modules, so it keeps its own copy."""
    from streams.evidence import bundle, verify
    from streams.evidence.ledger.records import FOREIGN_ID_FIELDS

    kept = verify._FOREIGN_ID_FIELDS
    assert kept == {bundle.FINDINGS: FOREIGN_ID_FIELDS["finding"],
                    bundle.AMENDMENTS: FOREIGN_ID_FIELDS["amendment"]}


def test_opening_the_ledger_again_keeps_the_locks_of_its_open_connections(
        tmp_path: Path) -> None:
    """A process that holds the ledger open (the desk) and opens it again for a write
    (each review) must keep its SQLite locks: closing any descriptor of a file drops all
    of a process's POSIX locks on it, and another process closing the ledger then took
    itself for the last one, checkpointed and deleted the write-ahead log under the
    open connections ("file is not a database" from then on)."""
    path = tmp_path / "ledger.db"
    with open_ledger(str(path)) as reader:
        reader.append("finding", [finding(1)])
        with open_ledger(str(path)) as writer:
            writer.append("finding", [finding(2)])
        other = subprocess.run(
            [sys.executable, "-c", "import sys; from streams.evidence.ledger import "
             "open_ledger; open_ledger(sys.argv[1]).close()", str(path)],
            check=False, capture_output=True, text=True, timeout=60)
        assert other.returncode == 0, other.stderr
        assert path.with_name("ledger.db-wal").exists()  # still in use by `reader`
        assert [e.entry_id for e in reader.entries(kind="finding")] == [
            finding(1)["finding_id"], finding(2)["finding_id"]]
