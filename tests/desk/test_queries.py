"""The desk's queries on both backends: keyset pages and filters agree with the records,
the indexes they need exist (and the planner uses them on SQLite), and a leaf the
provider index cannot read never fails an insert."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from streams.desk import Database, queries
from streams.evidence.ledger import open_ledger
from tests.desk.conftest import _made_up
from tests.postgres_fixture import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "ledger.db")
        return
    with fresh_database(request.getfixturevalue("postgres_url")) as url:
        yield url


def _all_pages(db: Database, flt: queries.FindingFilter, limit: int) -> list[int]:
    """Every page, older and older; then back, newer and newer: the same pages."""
    pages, cursor = list[list[int]](), None
    while True:
        page = queries.findings_page(db, flt, cursor, limit=limit)
        pages.append([row.index for row in page.rows])
        if page.older is None:
            break
        cursor = page.older
    back = [pages[-1]]
    while page.newer is not None:
        page = queries.findings_page(db, flt, page.newer, limit=limit, newer=True)
        back.insert(0, [row.index for row in page.rows])
    assert back == pages
    return [idx for indexes in pages for idx in indexes]


def test_pages_and_filters_agree_with_the_records_on_both_backends(backend: str) -> None:
    records = [_made_up(n) for n in range(60)]
    odd = _made_up(60) | {"provider": "nul\u0000inside", "occurred_at": records[5]["occurred_at"]}
    with open_ledger(backend) as ledger:
        ledger.append("finding", [*records, odd])  # an equal occurred_at: idx breaks the tie
    db = Database(backend)
    try:
        every = [*records, odd]
        since = records[10]["occurred_at"]
        for flt, keep in (
                (queries.FindingFilter(), lambda r: True),
                (queries.FindingFilter(severity="HIGH"),
                 lambda r: r["rule"] != "pseudonym-deanonymized"),
                (queries.FindingFilter(provider="prov-b"), lambda r: r["provider"] == "prov-b"),
                (queries.FindingFilter(account="acct3", rule="covert-profile-view"),
                 lambda r: r["account_id"] == "acct3" and r["rule"] == "covert-profile-view"),
                (queries.FindingFilter(subject="hmac-sha256:s2", from_ms=since),
                 lambda r: r["subject_id"] == "hmac-sha256:s2" and r["occurred_at"] >= since)):
            expected = [i for i, r in sorted(enumerate(every),
                                             key=lambda p: (p[1]["occurred_at"], p[0]),
                                             reverse=True) if keep(r)]
            for limit in (1, 7, 100):
                assert _all_pages(db, flt, limit) == expected, (flt, limit)
        accounts = {row.account_id: row for row in queries.accounts(db)}
        assert accounts["acct1"].total == sum(1 for r in every if r["account_id"] == "acct1")
    finally:
        db.close()


def test_sqlite_answers_each_filter_from_an_index_in_time_order(tmp_path: Any) -> None:
    path = str(tmp_path / "ledger.db")
    open_ledger(path).close()
    db = Database(path)
    try:
        for column in ("rule", "account_id", "subject_id", db.provider_expr):
            plan = " ".join(str(row[-1]) for row in db.query(
                f"EXPLAIN QUERY PLAN SELECT idx FROM entries WHERE kind = 'finding' AND "
                f"{column} = ? AND (occurred_at, idx) < (?, ?) "
                "ORDER BY occurred_at DESC, idx DESC LIMIT 51", ("x", 1, 1)))
            assert "USING INDEX entries_desk_" in plan or "COVERING INDEX entries_desk_" in plan
            assert "TEMP B-TREE" not in plan, plan  # no sort: the index is in time order
    finally:
        db.close()


def _page_query(asked: list[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    """The findings page's query among those asked (the statuses' come first)."""
    return next((sql, params) for sql, params in asked
                if "ORDER BY occurred_at DESC, idx DESC LIMIT" in sql)


def test_sqlite_reads_combined_filters_on_the_most_selective_index(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "ledger.db")
    open_ledger(path).close()
    db = Database(path)
    asked: list[tuple[str, list[Any]]] = []
    query = db.query
    monkeypatch.setattr(db, "query", lambda sql, params=(): asked.append((sql, list(params)))
                        or query(sql, params))
    try:
        for flt, index in ((queries.FindingFilter(provider="p", subject="s"), "subject"),
                           (queries.FindingFilter(provider="p", account="a",
                                                  rule="covert-profile-view"), "account"),
                           (queries.FindingFilter(provider="p", rule="covert-profile-view"),
                            "rule")):
            asked.clear()
            queries.findings_page(db, flt, queries.Cursor(5, 5))
            sql, params = _page_query(asked)
            plan = " ".join(str(row[-1]) for row in query(f"EXPLAIN QUERY PLAN {sql}", params))
            assert f"INDEX entries_desk_{index} " in plan and "TEMP B-TREE" not in plan, plan
        asked.clear()
        queries.accounts(db)
        counted = next(sql for sql, _ in asked if "GROUP BY account_id, rule" in sql)
        plan = " ".join(str(row[-1]) for row in query(f"EXPLAIN QUERY PLAN {counted}"))
        assert "COVERING INDEX entries_desk_account_rule" in plan, plan
    finally:
        db.close()


def test_a_postgresql_ledger_made_before_the_desk_gets_its_indexes_when_opened(
        postgres_url: str) -> None:
    import psycopg

    with fresh_database(postgres_url) as url:
        open_ledger(url).close()
        with psycopg.connect(url, autocommit=True) as conn:
            names = [row[0] for row in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'entries_desk_%'")]
            assert len(names) == 6
            for name in names:
                conn.execute(f"DROP INDEX {name}")
        open_ledger(url).close()
        with psycopg.connect(url, autocommit=True) as conn:
            again = [row[0] for row in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'entries_desk_%'")]
        assert sorted(again) == sorted(names)


def test_status_filters_agree_with_the_fold_on_both_backends(backend: str) -> None:
    """Each status selects exactly the findings whose status (the fold of their reviews,
    then the exceptions in force) is that one, on every page; on SQLite a reviewed
    status is read by id on the unique index, never by walking the time index."""
    import time

    from streams.evidence.exception_scope import new_exception
    from streams.evidence.review import new_review

    records = [_made_up(n) for n in range(40)]
    now = time.time_ns() // 1_000_000
    ids = [r["finding_id"] for r in records]
    with open_ledger(backend) as ledger:
        ledger.append("finding", records)
        first = [new_review(i, "rex", "acknowledge", now, prev_review_id=None)
                 for i in ids[:6]]
        ledger.append("review", first)
        ledger.append("review", [new_review(i, "rex", "resolve", now, prev_review_id=r["review_id"],
                                            reason="remediated") for i, r in
                                 zip(ids[:3], first[:3], strict=True)])
        ledger.append("review", [new_review(i, "rex", "assign", now, prev_review_id=None,
                                            assignee="ada") for i in ids[6:8]])
        scope = new_exception(account_id="acct1", rule="enrichment-without-consent",
                              from_ms=0, to_ms=2**42, reason="agreement", author="ada",
                              expires_at_ms=now + 86_400_000, at_ms=now)
        ledger.append("exception", [scope])
    db = Database(backend)
    try:
        standing = queries.standing(db)
        expected: dict[str, set[int]] = {}
        for n, record in enumerate(records):
            expected.setdefault(standing.status_of(record["finding_id"], record), set()).add(n)
        assert expected["excepted"] and expected["resolved"] == {0, 1, 2}
        assert expected["acknowledged"] == {3, 4, 5} - expected["excepted"]
        index_of = {idx: n for n, idx in enumerate(
            _all_pages(db, queries.FindingFilter(), limit=7)[::-1])}
        for status in ("open", "acknowledged", "assigned", "resolved", "excepted"):
            found = _all_pages(db, queries.FindingFilter(status=status), limit=2)
            assert {index_of[idx] for idx in found} == expected.get(status, set()), status
        active = _all_pages(db, queries.FindingFilter(status="active"), limit=3)
        assert {index_of[idx] for idx in active} == (
            expected["open"] | expected.get("acknowledged", set()) | expected["assigned"])
        if not db.postgres:
            asked: list[tuple[str, list[Any]]] = []
            query = db.query
            db.query = lambda sql, params=(): asked.append((sql, list(params))) or query(  # type: ignore[method-assign]
                sql, params)
            queries.findings_page(db, queries.FindingFilter(status="resolved",
                                                            rule="covert-profile-view"))
            sql, params = next((s, p) for s, p in asked if "ORDER BY occurred_at" in s)
            plan = " ".join(str(row[-1]) for row in query(f"EXPLAIN QUERY PLAN {sql}", params))
            assert "sqlite_autoindex_entries_1 (kind=? AND entry_id=?)" in plan, plan
    finally:
        db.close()
