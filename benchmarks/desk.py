"""The review desk's findings page on a big ledger: p50/p95 per page, first and deep.

    .venv/bin/python benchmarks/desk.py [--findings 1000000] [--runs 30] [--json OUT]

Builds once, then caches, a SQLite ledger of N made-up findings under benchmarks/data/
(`desk-v2-<N>.db`): every rule of the catalogue with its severity, ~N/500 accounts,
5 providers, ~N/5 subject pseudonyms, a year of occurred_at, two evidence events each.
The leaves are the records' canonical JSON, built with orjson's sorted keys (the same
bytes as RFC 8785 for these ASCII, integer-only records: checked on the first ones),
stored through the ledger's own `append_rows` in batches of 50,000.

The first run on a ledger also reviews 2,000 of its findings (1,000 resolved, 1,000
acknowledged) and records 5 exceptions (5 accounts, the whole year), through the
ledger's own checks, so that the status filters have something to find and "open" has
something to leave out; later runs find them there.

Then it asks the desk application (in process, through Starlette's TestClient, with a
signed-in session: routing, the query, the template, all of it) for the findings page:
the first page and a page 90% deep into the results (by its keyset cursor), without a
filter and with each filter. The target (issue 17): p95 < 300 ms on this machine.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATA = ROOT / "benchmarks" / "data"
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
YEAR_MS = 365 * 86_400_000
PROVIDERS = ("peoplegraph", "profilematch", "talentlens", "contactiq", "nameseer")
BATCH = 50_000
TARGET_P95_MS = 300.0
_PASSWORD = "benchmark-password-1"


def ledger_path(n: int) -> Path:
    return DATA / f"desk-v2-{n}.db"  # v2: the ledger's schema 2


def _findings(n: int, seed: int = 1) -> Any:
    """N made-up findings, in time order (as a pipeline stores them, roughly)."""
    from streams.catalogue import load_catalogue

    rules = [(r.id, r.severity) for r in load_catalogue().rules]
    rng = random.Random(seed)
    accounts, subjects = max(1, n // 500), max(1, n // 5)
    step = YEAR_MS // max(1, n)
    for i in range(n):
        rule, severity = rules[rng.randrange(len(rules))]
        at = START_MS + i * step + rng.randrange(max(1, step))
        trigger = f"ev-{i}"
        account = f"acct-{rng.randrange(accounts):05d}"
        provider = PROVIDERS[rng.randrange(len(PROVIDERS))]
        subject = "hmac-sha256:" + hashlib.sha256(b"%d" % rng.randrange(subjects)).hexdigest()
        meeting = f"m-{i // 7}"
        yield {
            "finding_id": hashlib.sha256(f"{rule}|{trigger}".encode()).hexdigest(),
            "rule": rule, "severity": severity, "subject_id": subject, "account_id": account,
            "meeting_id": meeting, "provider": provider, "trigger_event_id": trigger,
            "evidence_event_ids": [f"ev-{i}-c", trigger], "occurred_at": at,
            "detected_at": at + 300_000,
            "explanation": f"{provider} received data of a participant of meeting {meeting} "
                           "without consent in force.",
            "evidence": [
                {"type": "ConsentChanged", "event_id": f"ev-{i}-c", "occurred_at": at - 60_000,
                 "account_id": account, "subject_id": subject, "status": "WITHDRAWN",
                 "scope": ["user.name", "user.email"], "actor_id": "hmac-sha256:00"},
                {"type": "EnrichmentRequested", "event_id": trigger, "occurred_at": at,
                 "account_id": account, "meeting_id": meeting, "subject_id": subject,
                 "provider": provider, "data_sent": ["user.name", "user.email"],
                 "mode": "AUTOMATIC", "requested_by": "hmac-sha256:01"}],
        }


def build(path: Path, n: int, *, quiet: bool = False) -> None:
    """The ledger of N findings at `path` (made in a sibling file, then renamed)."""
    import orjson
    import rfc8785

    from streams.evidence.ledger import open_ledger
    from streams.evidence.ledger.records import Row
    from streams.evidence.merkle import leaf_hash

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".building")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{staging}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    ledger = open_ledger(str(staging))
    try:
        batch: list[Row] = []
        for count, record in enumerate(_findings(n), 1):
            leaf = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
            if count <= 100:
                assert leaf == rfc8785.dumps(record), "orjson's bytes are not RFC 8785's"
            batch.append(Row("finding", record["finding_id"], record["occurred_at"],
                             record["rule"], record["account_id"], record["subject_id"],
                             leaf, leaf_hash(leaf), finding_id=record["finding_id"]))
            if len(batch) == BATCH or count == n:
                ledger.append_rows(batch)
                batch = []
                if not quiet:
                    print(f"\rbuilding {path.name}: {count:,} of {n:,} findings "
                          f"({time.perf_counter() - started:.0f} s)", end="", file=sys.stderr,
                          flush=True)
    finally:
        ledger.close()
    if not quiet:
        print(file=sys.stderr)
    staging.rename(path)
    for suffix in ("-wal", "-shm"):
        Path(f"{staging}{suffix}").unlink(missing_ok=True)


REVIEWED = 1_000  # resolved, and as many acknowledged
EXCEPTED_ACCOUNTS = 5


def review(path: Path, n: int, *, quiet: bool = False) -> None:
    """Resolve REVIEWED findings, acknowledge as many, except EXCEPTED_ACCOUNTS accounts,
    unless the ledger has reviews already (review times are the clock's: the ledger
    refuses others, so a second run could not store the same reviews again)."""
    from streams.desk import Database
    from streams.evidence.exception_scope import new_exception
    from streams.evidence.ledger import open_ledger
    from streams.evidence.review import new_review

    db = Database(str(path))
    try:
        if db.query("SELECT 1 FROM entries WHERE kind = 'review' LIMIT 1"):
            return
        started = time.perf_counter()
        chosen = random.Random(7).sample(range(n), min(2 * REVIEWED, n // 10))
        ids = [str(row[0]) for row in db.query(
            "SELECT entry_id FROM entries WHERE kind = 'finding' AND idx IN "
            f"({', '.join(str(i) for i in chosen)}) ORDER BY idx")]
        accounts = sorted({str(row[0]) for row in db.query(
            "SELECT account_id FROM entries WHERE idx IN (?, ?, ?, ?, ?, ?, ?)",
            [n // 7 * k for k in range(1, 8)])})[:EXCEPTED_ACCOUNTS]
    finally:
        db.close()
    now = time.time_ns() // 1_000_000
    reviews = [new_review(finding_id, "bench", "resolve" if k % 2 else "acknowledge",
                          now, prev_review_id=None,
                          **({"reason": "remediated"} if k % 2 else {}))
               for k, finding_id in enumerate(ids)]
    with open_ledger(str(path)) as ledger:
        ledger.append("review", reviews)
        ledger.append("exception", [new_exception(
            account_id=account, reason="processing agreement", author="bench",
            from_ms=START_MS, to_ms=START_MS + YEAR_MS, expires_at_ms=now + 10 * YEAR_MS,
            at_ms=now) for account in accounts])
    if not quiet:
        print(f"reviewed {len(reviews):,} findings, excepted {len(accounts)} accounts "
              f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)


def _client(path: Path) -> Any:
    from starlette.testclient import TestClient

    from streams.desk import Database, create_app
    from streams.desk.users import add_user, list_users

    db = Database(str(path))
    if "bench" not in {name for name, _, _ in list_users(db)}:
        add_user(db, "bench", "viewer", _PASSWORD, now_ms=START_MS)
    client = TestClient(create_app(db))
    page = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    done = client.post("/login", data={"username": "bench", "password": _PASSWORD,
                                       "csrf_token": token.group(1)}, follow_redirects=False)
    assert done.status_code == 303, done.status_code
    return client, db


def _cases(db: Any, n: int) -> list[tuple[str, dict[str, str]]]:
    """(name, filter) per case; the subject and account are ones the ledger holds."""
    subject = db.query("SELECT subject_id FROM entries WHERE idx = ?", (n // 2,))[0][0]
    account = db.query("SELECT account_id FROM entries WHERE idx = ?", (n // 3,))[0][0]
    mid = START_MS + YEAR_MS // 2
    from streams.evidence.export.times import describe_ms

    return [
        ("no filter", {}),
        ("rule", {"rule": "pseudonym-deanonymized"}),
        ("severity HIGH (4 rules)", {"severity": "HIGH"}),
        ("account", {"account": account}),
        ("provider", {"provider": PROVIDERS[2]}),
        ("subject", {"subject": subject}),
        ("time range (a month)", {"from": describe_ms(mid),
                                  "to": describe_ms(mid + YEAR_MS // 12)}),
        ("rule + provider + range", {"rule": "covert-profile-view", "provider": PROVIDERS[0],
                                     "from": describe_ms(START_MS),
                                     "to": describe_ms(mid)}),
        ("status open", {"status": "open"}),
        ("status active", {"status": "active"}),
        ("status resolved", {"status": "resolved"}),
        ("status acknowledged", {"status": "acknowledged"}),
        ("status excepted", {"status": "excepted"}),
        ("status open + rule", {"status": "open", "rule": "pseudonym-deanonymized"}),
        ("status resolved + rule", {"status": "resolved", "rule": "pseudonym-deanonymized"}),
    ]


def _deep_cursor(db: Any, params: dict[str, str]) -> str | None:
    """The keyset cursor of the page 90% deep into the results (found with an OFFSET,
    once, outside the timing)."""
    from streams.desk import queries

    flt = queries.parse_filter(params)
    where, values = ["kind = 'finding'"], list[Any]()
    if flt.status is not None:
        reads = queries._status_reads(db, flt, queries.standing(db))
        if len(reads) != 1:
            return None  # excepted: one read per exception, merged
        flt, conditions, _ = reads[0]
        for sql, extra in conditions:
            where.append(sql)
            values.extend(extra)
    rules = flt.rules()
    if rules is not None:
        where.append(f"rule IN ({', '.join('?' * len(rules))})")
        values.extend(rules)
    for clause, value in (("account_id = ?", flt.account), ("subject_id = ?", flt.subject),
                          (f"{db.provider_expr} = ?", flt.provider),
                          ("occurred_at >= ?", flt.from_ms), ("occurred_at < ?", flt.to_ms)):
        if value is not None:
            where.append(clause)
            values.append(value)
    sql = " AND ".join(where)
    total = db.query(f"SELECT COUNT(*) FROM entries WHERE {sql}", values)[0][0]
    deep = int(total * 0.9)
    if deep < 1:
        return None
    occurred_at, idx = db.query(f"SELECT occurred_at, idx FROM entries WHERE {sql} "
                                "ORDER BY occurred_at DESC, idx DESC LIMIT 1 OFFSET ?",
                                [*values, deep - 1])[0]
    return queries.Cursor(int(occurred_at), int(idx)).token()


def _time(client: Any, url: str, runs: int) -> tuple[float, float, int]:
    client.get(url)  # warm
    times = []
    rows = 0
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        rows = response.text.count("<tr data-leaf")
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return statistics.median(times), p95, rows


def run(n: int, runs: int, *, quiet: bool = False, path: Path | None = None
        ) -> list[dict[str, Any]]:
    path = path or ledger_path(n)
    if not path.exists():
        build(path, n, quiet=quiet)
    review(path, n, quiet=quiet)
    client, db = _client(path)
    results = []
    try:
        for name, params in _cases(db, n):
            for depth in ("first", "deep"):
                query = dict(params)
                if depth == "deep":
                    cursor = _deep_cursor(db, params)
                    if cursor is None:
                        continue
                    query["before"] = cursor
                url = "/findings" + (f"?{urlencode(query)}" if query else "")
                p50, p95, rows = _time(client, url, runs)
                results.append({"case": name, "page": depth, "p50_ms": round(p50, 1),
                                "p95_ms": round(p95, 1), "rows": rows})
    finally:
        client.close()
        db.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--findings", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30, help="requests per page measured")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    results = run(args.findings, args.runs)
    print(f"findings page on a SQLite ledger of {args.findings:,} findings "
          f"({args.runs} requests each; target p95 < {TARGET_P95_MS:.0f} ms)")
    print(f"{'filter':<26} {'page':<6} {'p50 ms':>8} {'p95 ms':>8} {'rows':>5}")
    for r in results:
        flag = "" if r["p95_ms"] < TARGET_P95_MS else "  over target"
        print(f"{r['case']:<26} {r['page']:<6} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} "
              f"{r['rows']:>5}{flag}")
    if args.json:
        import orjson

        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps({"findings": args.findings, "runs": args.runs,
                                            "results": results}, option=orjson.OPT_INDENT_2))
    return 0 if all(r["p95_ms"] < TARGET_P95_MS for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
