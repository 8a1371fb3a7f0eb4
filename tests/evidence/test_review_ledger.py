"""Reviews, exceptions and exports as ledger leaves (issue 17), on SQLite and on a real
PostgreSQL server: validated before they are stored, idempotent, indexed by finding,
tamper-evident like findings, and a schema-1 ledger migrated in place."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.evidence.exception_scope import new_exception
from streams.evidence.ledger import InvalidRecord, LedgerTampered, SqlLedger, open_ledger
from streams.evidence.ledger import postgres as pg_backend
from streams.evidence.ledger import sql as sql_backend
from streams.evidence.ledger import sqlite as sqlite_backend
from streams.evidence.ledger.frontier import Frontier
from streams.evidence.ledger.records import to_row
from streams.evidence.merkle import leaf_hash, root_hash
from streams.evidence.review import new_review
from tests.evidence import test_ledger
from tests.evidence.test_ledger import T0, amendment, finding, raw_execute, tamper

# The same fixtures as the ledger's own tests: a fresh SQLite file / PostgreSQL database.
ledger_url = test_ledger.ledger_url
ledger = test_ledger.ledger

F = [finding(n) for n in range(4)]
FID = [f["finding_id"] for f in F]
#: The ledger's clock in these tests: the reviews and exceptions below are written at it.
CLOCK = T0 + 10**10


@pytest.fixture(autouse=True)
def ledger_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql_backend, "_now_ms", lambda: CLOCK)


def rv(action: str, n: int, of: int = 0, who: str = "alice", prev: str | None = None,
       **fields: Any) -> dict[str, Any]:
    if action == "comment":
        fields.setdefault("text", "looked at it")
    return new_review(FID[of], who, action, CLOCK + n, prev_review_id=prev, **fields)


def chain(*reviews: tuple[Any, ...], of: int = 0) -> list[dict[str, Any]]:
    """Reviews (action, n, fields) of finding `of`, each naming the one before it."""
    made: list[dict[str, Any]] = []
    for action, n, *fields in reviews:
        prev = made[-1]["review_id"] if made else None
        made.append(rv(action, n, of, prev=prev, **(fields[0] if fields else {})))
    return made


def an_exception(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"account_id": "acct1", "reason": "processing agreement",
                              "author": "alice", "from_ms": T0, "to_ms": T0 + 10**9,
                              "expires_at_ms": T0 + 10**11, "at_ms": CLOCK,
                              "provider": "linkedin_sales_navigator"}
    return new_exception(**(fields | changes))


def test_reviews_are_leaves_stored_once_and_found_by_finding(ledger: SqlLedger) -> None:
    ledger.append("finding", F)
    trail = chain(("acknowledge", 1), ("assign", 2, {"assignee": "bob"}),
                  ("comment", 3, {"text": "<script>alert(1)</script>"}),
                  ("resolve", 4, {"reason": "false_positive",
                                  "false_positive_kind": "test_traffic"}))
    assert ledger.append("review", trail[:2]) == 2
    ledger.append("review", [rv("comment", 5, of=1, text="other finding")])
    assert ledger.append("review", trail) == 2  # the first two are there already
    assert ledger.append("review", trail) == 0
    assert ledger.size() == len(F) + 5
    reviews = ledger.reviews(FID[0])
    assert [r.record for r in reviews] == trail
    assert [r.leaf for r in reviews] == [rfc8785.dumps(r) for r in trail]
    assert all(r.kind == "review" and r.finding_id == FID[0] for r in reviews)
    assert ledger.root() == root_hash(ledger.leaf_hashes())
    assert [leaf_hash(r.leaf) for r in reviews] == [ledger.leaf_hashes()[r.index]
                                                     for r in reviews]
    status = ledger.review_status(FID[0])
    assert (status.state, status.reason, status.false_positive_kind, status.assignee) == (
        "resolved", "false_positive", "test_traffic", "bob")
    assert ledger.review_status(FID[2]).state == "open"
    assert ledger.reviews(FID[2]) == []
    statuses = ledger.review_statuses(FID)
    assert {k: v.state for k, v in statuses.items()} == {
        FID[0]: "resolved", FID[1]: "open", FID[2]: "open", FID[3]: "open"}
    many = ledger.reviews_of(FID)
    assert set(many) == {FID[0], FID[1]} and many[FID[0]] == reviews
    assert len(list(ledger.entries(kind="review"))) == 5
    window = list(ledger.entries(kind="review", from_ms=CLOCK + 3,
                                 to_ms=CLOCK + 5))  # on at_ms
    assert [e.record["action"] for e in window] == ["comment", "resolve"]
    assert ledger.finding(FID[0]) is not None and ledger.finding(FID[0]).record == F[0]  # type: ignore[union-attr]
    assert ledger.finding("0" * 64) is None
    # the findings' own reads are unchanged by the reviews among them
    assert [e.entry_id for e in ledger.entries()] == FID


FIRST = rv("comment", 1)


@pytest.mark.parametrize(("reviews", "message"), [
    ([new_review("0" * 64, "alice", "acknowledge", CLOCK, prev_review_id=None)],
     "review refused: its finding_id names no finding in the ledger"),
    ([new_review(FID[0], "alice", "resolve", CLOCK, prev_review_id=FIRST["review_id"],
                 reason="duplicate", duplicate_of="0" * 64)],
     "review refused: its duplicate_of names no finding in the ledger"),
    ([new_review(FID[0], "alice", "reopen", CLOCK + 1, prev_review_id=FIRST["review_id"])],
     "review refused: a reopen is allowed only on a finding that is resolved; this one is "
     "open"),
    (chain(("comment", 1), ("resolve", 2, {"reason": "remediated"}),
           ("resolve", 3, {"reason": "accepted_risk"}))[1:],
     "review refused: a resolve is allowed only on a finding that is open, acknowledged "
     "or assigned; "
     "this one is resolved"),
    ([rv("acknowledge", 2)],  # written as if the trail were empty: the comment is there
     "review refused: the review's prev_review_id is not its finding's latest review: it "
     "was written against a stale view of the finding's reviews"),
    ([rv("acknowledge", 2, prev="0" * 64)],
     "review refused: the review's prev_review_id is not its finding's latest review: it "
     "was written against a stale view of the finding's reviews"),
    ([rv("acknowledge", 0, prev=FIRST["review_id"])],
     "review refused: the review's at_ms is earlier than its finding's previous review"),
    ([new_review(FID[0], "alice", "resolve", 0, prev_review_id=FIRST["review_id"],
                 reason="remediated")],  # a resolve dated 1970
     "review refused: its at_ms is more than 5 minutes from the ledger's clock (is the "
     "writer's clock wrong?)"),
    ([rv("acknowledge", 5 * 60 * 1000 + 1, prev=FIRST["review_id"])],
     "review refused: its at_ms is more than 5 minutes from the ledger's clock (is the "
     "writer's clock wrong?)"),
])
def test_a_review_the_ledger_cannot_accept_is_refused_and_nothing_stored(
        ledger: SqlLedger, reviews: list[dict[str, Any]], message: str) -> None:
    ledger.append("finding", F)
    ledger.append("review", [rv("comment", 0, of=1)])
    size = ledger.size()
    with pytest.raises(InvalidRecord) as caught:
        ledger.append("review", [FIRST, *reviews])
    assert str(caught.value) == message
    assert "alice" not in str(caught.value) and "\n" not in str(caught.value)
    assert ledger.size() == size and ledger.reviews(FID[0]) == []


def test_review_times_within_five_minutes_of_the_clock_are_stored(ledger: SqlLedger) -> None:
    ledger.append("finding", F)
    skew = 5 * 60 * 1000
    trail = chain(("comment", -skew), ("comment", -skew), ("comment", skew))
    assert ledger.append("review", trail) == 3  # either way, and equal times in order


def test_an_exception_dated_away_from_the_clock_is_refused(ledger: SqlLedger) -> None:
    message = ("exception refused: its at_ms is more than 5 minutes from the ledger's clock "
               "(is the writer's clock wrong?)")
    for at in (1_000, CLOCK - 5 * 60 * 1000 - 1, CLOCK + 5 * 60 * 1000 + 1):
        with pytest.raises(InvalidRecord) as caught:
            ledger.append("exception", [an_exception(at_ms=at)])
        assert str(caught.value) == message
    assert ledger.size() == 0
    # its scope may cover the past (an agreement signed earlier), and last for years
    assert ledger.append("exception", [an_exception(from_ms=1_000, to_ms=T0,
                                                    expires_at_ms=CLOCK + 10**12)]) == 1
    # the same exception re-loaded later is stored already: not refused for its age
    with pytest.MonkeyPatch.context() as later:
        later.setattr(sql_backend, "_now_ms", lambda: CLOCK + 10**9)
        assert ledger.append("exception", [an_exception(from_ms=1_000, to_ms=T0,
                                                        expires_at_ms=CLOCK + 10**12)]) == 0


def test_a_malformed_review_is_refused_naming_the_field(ledger: SqlLedger) -> None:
    ledger.append("finding", F)
    bad = rv("acknowledge", 1) | {"reviewer": "mallory"}  # its id no longer its hash
    with pytest.raises(InvalidRecord, match="review_id is not the SHA-256"):
        ledger.append("review", [bad])
    with pytest.raises(InvalidRecord, match="the review has no reviewer"):
        ledger.append("review", [rv("acknowledge", 1) | {"reviewer": ""}])
    with pytest.raises(InvalidRecord, match="unknown ledger entry kind"):
        ledger.append("verdict", [rv("acknowledge", 1)])  # type: ignore[arg-type]
    assert ledger.size() == len(F)


def test_a_finding_and_its_reviews_in_one_batch(ledger: SqlLedger) -> None:
    first, duplicate = chain(("acknowledge", 1),
                             ("resolve", 2, {"reason": "duplicate", "duplicate_of": FID[1]}))
    assert ledger.append_mixed([("finding", F[0]), ("finding", F[1]),
                                ("review", first), ("review", duplicate)]) == 4
    assert ledger.review_status(FID[0]).duplicate_of == FID[1]
    # a review before its finding in the batch is refused
    with pytest.raises(InvalidRecord, match="finding_id names no finding"):
        ledger.append_mixed([("review", rv("acknowledge", 3, of=2)), ("finding", F[2])])
    assert ledger.size() == 4


def test_two_reviewers_resolving_at_once_store_one_resolve(ledger_url: str) -> None:
    with open_ledger(ledger_url) as store:
        store.append("finding", F)
    outcomes: list[str] = []

    def resolve(who: str, n: int) -> None:
        with open_ledger(ledger_url) as store:
            try:
                store.append("review", [rv("resolve", n, who=who, reason="remediated")])
                outcomes.append("stored")
            except InvalidRecord as exc:
                outcomes.append(str(exc))

    threads = [threading.Thread(target=resolve, args=(who, n))
               for n, who in enumerate(("alice", "bob", "carol"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes)[-1] == "stored" and outcomes.count("stored") == 1, outcomes
    # the others wrote against a trail that has changed since: one clear line each
    assert set(outcomes) - {"stored"} == {
        "review refused: the review's prev_review_id is not its finding's latest review: "
        "it was written against a stale view of the finding's reviews"}, outcomes
    with open_ledger(ledger_url) as store:
        assert [r.record["action"] for r in store.reviews(FID[0])] == ["resolve"]


def test_exceptions_are_leaves_listed_by_account(ledger: SqlLedger) -> None:
    ledger.append("finding", F)
    first, second = an_exception(), an_exception(account_id="acct2", provider=None,
                                                 rule="covert-profile-view")
    assert ledger.append("exception", [first, second]) == 2
    assert ledger.append("exception", [first]) == 0
    inside = F[0] | {"occurred_at": T0 + 5}
    assert [e.record for e in ledger.covering_exceptions(inside, T0 + 10**10)] == [first]
    assert ledger.covering_exceptions(inside, T0 + 10**11) == []  # expired
    assert ledger.covering_exceptions(inside | {"provider": "x"}, T0 + 10**10) == []
    assert [e.record for e in ledger.exceptions()] == [first, second]
    assert [e.record for e in ledger.exceptions(account="acct2")] == [second]
    assert [e.entry_id for e in ledger.entries(kind="exception", rule="covert-profile-view")
            ] == [second["exception_id"]]
    with pytest.raises(InvalidRecord, match="exception has no account_id"):
        ledger.append("exception", [first | {"account_id": ""}])


def test_a_review_whose_finding_id_column_is_edited_is_found(ledger_url: str) -> None:
    key = Ed25519PrivateKey.generate()
    with open_ledger(ledger_url) as store:
        store.append("finding", F)
        store.append("review", [rv("acknowledge", 1)])
        store.checkpoint(key, "consentwatch")
    # moved to another finding's trail by its index column: the leaf says otherwise
    tamper(ledger_url, ("UPDATE entries SET finding_id = ? WHERE kind = 'review'", (FID[1],)))
    with open_ledger(ledger_url) as store:
        with pytest.raises(LedgerTampered, match="the finding_id column disagrees"):
            store.reviews(FID[1])
        with pytest.raises(LedgerTampered, match="leaf 4: the finding_id column disagrees"):
            store.audited_checkpoint(key, "consentwatch")


def test_review_leaves_refuse_update_and_delete(ledger_url: str) -> None:
    with open_ledger(ledger_url) as store:
        store.append("finding", F)
        store.append("review", [rv("acknowledge", 1)])
    run = raw_execute(ledger_url)
    for statement in ("UPDATE entries SET leaf = leaf WHERE kind = 'review'",
                      "DELETE FROM entries WHERE kind = 'review'"):
        with pytest.raises(Exception, match="append-only"):
            run(statement)


# -- schema 1 (before issue 17) -----------------------------------------------------------


def _schema_1(statements: list[str]) -> list[str]:
    """Schema 1's statements, from schema 2's: two kinds, no finding_id column."""
    old = []
    for statement in statements:
        if "entries_finding" in statement:
            continue
        text = statement.replace(
            ", ".join(f"'{k}'" for k in ("finding", "amendment", "review", "exception",
                                         "export")), "'finding', 'amendment'")
        text = text.replace("        finding_id TEXT NOT NULL,\n", "")
        old.append(text.replace("'schema_version', '2'", "'schema_version', '1'"))
    return old


def _make_schema_1_ledger(url: str) -> bytes:
    """A ledger as schema-1 consentwatch wrote it: findings, an amendment, an export row."""
    # The amendment's late event holds a NUL character (legal JSON, "\u0000" in RFC
    # 8785): PostgreSQL's jsonb cannot hold it, so the migration must not parse leaves there.
    late = amendment(F[0]) | {"late_event": {"type": "ProfileViewed", "note": "a\u0000b"}}
    records = [("finding", F[0]), ("finding", F[1]), ("amendment", late)]
    rows = [to_row(kind, record) for kind, record in records]
    frontier = Frontier()
    for row in rows:
        frontier.append(row.leaf_hash)
    _write_schema_1(url, rows, frontier)
    return frontier.root()


def _write_schema_1(url: str, rows: list[Any], frontier: Frontier) -> None:
    if url.startswith("postgresql://"):
        import psycopg

        schema = _schema_1(pg_backend._SCHEMA)
        with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
            for statement in schema:
                conn.execute(statement)
            for idx, row in enumerate(rows):
                conn.execute("INSERT INTO entries (idx, kind, entry_id, occurred_at, rule, "
                             "account_id, subject_id, leaf, leaf_hash, stored_at) VALUES "
                             "(%s, %s, %s, %s, %s, %s, %s, %s, %s, 0)",
                             (idx, row.kind, row.entry_id, row.occurred_at, row.rule,
                              row.account_id, row.subject_id, row.leaf, row.leaf_hash))
            conn.execute("UPDATE tree_state SET size = %s, frontier = %s",
                         (frontier.size, frontier.to_bytes()))
            conn.execute("INSERT INTO exports (actor, purpose, query, bundle_sha256, at_ms) "
                         "VALUES ('auditor', 'case 1', '{}', %s, %s)", ("c" * 64, T0))
        return
    import sqlite3

    conn = sqlite3.connect(url, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        for statement in _schema_1(sqlite_backend._SCHEMA):
            conn.execute(statement)
        for idx, row in enumerate(rows):
            conn.execute("INSERT INTO entries (idx, kind, entry_id, occurred_at, rule, "
                         "account_id, subject_id, leaf, leaf_hash, stored_at) VALUES "
                         "(?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                         (idx, row.kind, row.entry_id, row.occurred_at, row.rule,
                          row.account_id, row.subject_id, row.leaf, row.leaf_hash))
        conn.execute("UPDATE tree_state SET size = ?, frontier = ?",
                     (frontier.size, frontier.to_bytes()))
        conn.execute("INSERT INTO exports (actor, purpose, query, bundle_sha256, at_ms) "
                     "VALUES ('auditor', 'case 1', '{}', ?, ?)", ("c" * 64, T0))
    finally:
        conn.close()


def test_a_schema_1_ledger_is_migrated_in_place(ledger_url: str) -> None:
    old_root = _make_schema_1_ledger(ledger_url)
    key = Ed25519PrivateKey.generate()
    with open_ledger(ledger_url) as store:
        size, root, _ = store.audit()  # the same leaves, the same tree
        assert (size, root) == (3, old_root)
        assert [e.finding_id for e in store.entries(kind="amendment")] == [FID[0]]
        assert [e.entry_id for e in store.entries(kind="finding", finding=FID[1])] == [FID[1]]
        assert b"\\u0000" in next(store.entries(kind="amendment")).leaf
        store.append("review", [rv("acknowledge", 1)])
        store.record_export("bob", "case 2", {}, "d" * 64, T0 + 1)
        assert [(e["actor"], e["bundle_sha256"]) for e in store.exports()] == [
            ("auditor", "c" * 64), ("bob", "d" * 64)]
        store.audited_checkpoint(key, "consentwatch")
        assert store.size() == 5
    with open_ledger(ledger_url) as store:  # opened again: nothing to migrate
        assert store.audit()[0] == 5 and store.review_status(FID[0]).state == "acknowledged"
    for statement in ("UPDATE entries SET rule = 'x'", "DELETE FROM exports"):
        with pytest.raises(Exception, match="append-only"):
            raw_execute(ledger_url)(statement)


def _old_writer_insert(url: str, idx: int, row: Any) -> None:
    """The INSERT a schema-1 consentwatch makes: it knows no finding_id column."""
    sql = ("INSERT INTO entries (idx, kind, entry_id, occurred_at, rule, account_id, "
           "subject_id, leaf, leaf_hash, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)")
    values = (idx, row.kind, row.entry_id, row.occurred_at, row.rule, row.account_id,
              row.subject_id, row.leaf, row.leaf_hash)
    if url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.replace("?", "%s"), values)
        return
    import sqlite3

    conn = sqlite3.connect(url, isolation_level=None)
    try:
        conn.execute(sql, values)
    finally:
        conn.close()


@pytest.mark.parametrize("migrated", [True, False])
def test_a_schema_1_writer_is_refused_after_the_migration(ledger_url: str,
                                                         migrated: bool) -> None:
    """A schema-1 process still running once the ledger is migrated (or a ledger made
    new at schema 2) inserts rows without finding_id: refused by NOT NULL, never stored
    with a default that the audit would then call tampered, for good."""
    if migrated:
        _make_schema_1_ledger(ledger_url)
    else:
        with open_ledger(ledger_url) as store:
            store.append("finding", F[:2])
    with open_ledger(ledger_url) as store:
        size = store.size()
    row = to_row("amendment", amendment(F[1]))
    with pytest.raises(Exception, match=r"NOT NULL constraint failed: entries\.finding_id|"
                                        r'null value in column "finding_id"'):
        _old_writer_insert(ledger_url, size, row)
    key = Ed25519PrivateKey.generate()
    with open_ledger(ledger_url) as store:
        assert store.audit()[0] == size
        store.audited_checkpoint(key, "consentwatch")


def test_cli_ledger_exports_lists_export_leaves(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    path = str(tmp_path / "ledger.db")
    with open_ledger(path) as store:
        store.record_export("alice", "DPA request", {"findings": 3}, "e" * 64, T0)
    done = run_cli("ledger", "exports", "--ledger", path, "--json")
    assert done.returncode == 0, done.stderr
    assert b'"purpose":"DPA request"' in done.stdout and b'"findings":3' in done.stdout


def test_cli_ledger_reviews_and_exceptions(tmp_path: Path) -> None:
    import orjson

    from tests.conftest import run_cli

    path = str(tmp_path / "ledger.db")
    with open_ledger(path) as store:
        store.append("finding", F)
        store.append("review", chain(
            ("acknowledge", 1), ("comment", 2, {"text": "\x1b[31mred\x1b[0m <b>x</b>"}),
            ("resolve", 3, {"reason": "duplicate", "duplicate_of": FID[1]})))
        store.append("exception", [an_exception()])
    done = run_cli("ledger", "reviews", FID[0], "--ledger", path)
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    assert text.startswith(f"status: resolved: duplicate of {FID[1]}\n")
    assert "\x1b" not in text and "\\x1b[31mred" in text  # no terminal escape gets through
    lines = run_cli("ledger", "reviews", FID[0], "--ledger", path, "--json"
                    ).stdout.splitlines()
    status = orjson.loads(lines[0])
    assert (status["state"], status["reason"], status["reviews"]) == ("resolved", "duplicate", 3)
    assert [orjson.loads(line)["action"] for line in lines[1:]] == [
        "acknowledge", "comment", "resolve"]
    unknown = run_cli("ledger", "reviews", "0" * 64, "--ledger", path)
    assert unknown.returncode == 2 and unknown.stderr.decode().count("\n") == 1
    assert b"Traceback" not in unknown.stderr
    listed = run_cli("ledger", "exceptions", "--ledger", path, "--account", "acct1")
    assert listed.returncode == 0 and b"processing agreement" in listed.stdout
    assert run_cli("ledger", "exceptions", "--ledger", path, "--account", "acct9", "--json"
                   ).stdout == b""
