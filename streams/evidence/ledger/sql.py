"""The ledger over a SQL database: everything the SQLite and PostgreSQL backends share.

Tables (created by each backend in its own dialect):

- `entries`: one row per leaf, `idx` the 0-based leaf index; `(kind, entry_id)` is
  unique, so a record can be stored once only; `leaf` holds the RFC 8785 bytes and
  `leaf_hash` their RFC 9162 leaf hash; the other columns index the leaf (see
  records.py), `finding_id` (indexed with kind) finds a finding's reviews. Triggers
  refuse UPDATE and DELETE and any insert that is not the next leaf.
- `tree_state`: one row, the tree size and its frontier (see frontier.py), written in
  the same transaction as the leaves, so a checkpoint costs O(log n).
- `checkpoints`: append-only too. `exports`: append-only, no longer written: exports
  are leaves of kind `export` since schema 2; a ledger of schema 1 keeps its earlier
  exports there (they were never leaves, and cannot be made leaves after the fact
  without rewriting when they happened), and `exports()` lists them first.

A write transaction first takes the writer lock (SQLite: BEGIN IMMEDIATE; PostgreSQL:
the tree_state row FOR UPDATE), so concurrent writers, in one process or many,
assign leaf indexes one after the other and never store an id twice.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.evidence.ledger.base import (
    CHECKPOINT_ORIGIN,
    AuditedTree,
    InvalidRecord,
    Kind,
    LedgerEntry,
    LedgerError,
    LedgerTampered,
)
from streams.evidence.ledger.frontier import Frontier
from streams.evidence.ledger.records import (
    Row,
    StoredRow,
    check_kind,
    checked_entry,
    checked_row,
    export_record,
    record_of,
    to_row,
)
from streams.evidence.review import ReviewStatus, TrailError, fold, step

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from streams.evidence.checkpoint import Checkpoint

__all__ = ["SqlLedger"]

_PAGE = 1000
_ID_CHUNK = 500
#: A review or exception whose at_ms is further than this from the storing clock (either
#: way) is refused: its time is the writer's claim, and the leaf is what a bundle shows.
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000

_ENTRY_COLUMNS = ("idx, kind, entry_id, occurred_at, rule, account_id, subject_id, leaf, "
                  "leaf_hash, finding_id")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SqlLedger(ABC):
    """A `Ledger` over a DB-API connection; subclasses supply the dialect.

    SQL here is written with `?` placeholders; `_sql` turns them into the driver's.
    """

    _FOR_UPDATE = ""

    # -- what a backend supplies --------------------------------------------------------

    @abstractmethod
    def _write(self) -> AbstractContextManager[Any]:
        """A write transaction holding the writer lock; yields a cursor. Commits when the
        block ends normally, rolls back when it raises."""

    @abstractmethod
    def _cursor(self) -> AbstractContextManager[Any]:
        """A cursor for reads outside a write transaction."""

    def _sql(self, text: str) -> str:
        return text

    @abstractmethod
    def close(self) -> None: ...

    # -- writes ------------------------------------------------------------------------

    def append(self, kind: Kind, records: Iterable[Mapping[str, Any]]) -> int:
        """See `Ledger.append`."""
        check_kind(kind)
        return self.append_mixed((kind, record) for record in records)

    def append_mixed(self, items: Iterable[tuple[str, Mapping[str, Any]]]) -> int:
        """Records of any kinds together, in the order given, in ONE transaction.

        What `ledger run` uses: a Kafka batch holds both kinds. Returns how many were
        new; raises InvalidRecord (storing nothing) if any record is unusable.
        """
        return self.append_rows([to_row(kind, record) for kind, record in items])

    def append_rows(self, rows: Sequence[Row]) -> int:
        """Rows checked beforehand with `records.to_row`, in ONE transaction; returns how
        many were new. For callers that skip bad records instead of failing the batch."""
        if not rows:
            return 0
        with self._write() as cur:
            cur.execute(self._sql("SELECT size, frontier FROM tree_state WHERE id = 1"
                                  + self._FOR_UPDATE))
            size, packed = cur.fetchone()
            frontier = self._frontier(cur, size, bytes(packed))
            present = self._present(cur, rows)
            fresh: list[Row] = []
            for row in rows:
                key = (row.kind, row.entry_id)
                if key not in present:
                    present.add(key)
                    fresh.append(row)
            if not fresh:
                return 0
            stored_at = _now_ms()
            _check_times(fresh, stored_at)
            if any(row.kind == "review" for row in fresh):
                self._check_reviews(cur, fresh)
            values = []
            for row in fresh:
                values.append((frontier.size, row.kind, row.entry_id, row.occurred_at,
                               row.rule, row.account_id, row.subject_id, row.leaf,
                               row.leaf_hash, stored_at, row.finding_id))
                frontier.append(row.leaf_hash)
            cur.executemany(self._sql(
                "INSERT INTO entries (idx, kind, entry_id, occurred_at, rule, account_id, "
                "subject_id, leaf, leaf_hash, stored_at, finding_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"), values)
            cur.execute(self._sql("UPDATE tree_state SET size = ?, frontier = ? WHERE id = 1"),
                        (frontier.size, frontier.to_bytes()))
            return len(fresh)

    def _frontier(self, cur: Any, size: int, packed: bytes) -> Frontier:
        """The stored frontier, after checking it describes the stored leaves."""
        cur.execute(self._sql("SELECT MAX(idx) FROM entries"))
        (last,) = cur.fetchone()
        if (last + 1 if last is not None else 0) != size:
            raise LedgerError("the ledger's tree state does not match its entries "
                              "(was the database edited by hand?)")
        try:
            return Frontier.from_bytes(size, packed)
        except ValueError as exc:
            raise LedgerError(f"the ledger's tree state is corrupt: {exc}") from None

    def _present(self, cur: Any, rows: Sequence[Row]) -> set[tuple[str, str]]:
        """Which of the rows' (kind, id) pairs are stored already."""
        present: set[tuple[str, str]] = set()
        for kind in {row.kind for row in rows}:
            ids = {row.entry_id for row in rows if row.kind == kind}
            present.update((kind, entry_id) for entry_id in self._stored_ids(cur, kind, ids))
        return present

    def _stored_ids(self, cur: Any, kind: str, ids: Iterable[str]) -> set[str]:
        """Which of `ids` are stored as entries of `kind`."""
        wanted, found = sorted(set(ids)), set[str]()
        for start in range(0, len(wanted), _ID_CHUNK):
            chunk = wanted[start:start + _ID_CHUNK]
            marks = ", ".join("?" * len(chunk))
            cur.execute(self._sql(f"SELECT entry_id FROM entries WHERE kind = ? "
                                  f"AND entry_id IN ({marks})"), (kind, *chunk))
            found.update(str(entry_id) for (entry_id,) in cur.fetchall())
        return found

    def _check_reviews(self, cur: Any, fresh: Sequence[Row]) -> None:
        """Refuse (InvalidRecord, the whole batch) a new review whose finding, or whose
        duplicate_of, is not in the ledger (nor earlier in this batch), or whose action
        its finding's status does not allow, or whose prev_review_id is not its finding's
        latest review, or whose at_ms is earlier than that review's (`review.step`). Run
        under the writer lock, so of two reviewers acting on one finding at once, one
        succeeds and the other is refused (it wrote against a stale view)."""
        reviews = [(row, record_of(row.leaf)) for row in fresh if row.kind == "review"]
        batch = {row.entry_id: position for position, row in enumerate(fresh)
                 if row.kind == "finding"}
        named = {r["finding_id"] for _, r in reviews} | {
            r["duplicate_of"] for _, r in reviews if "duplicate_of" in r}
        stored = self._stored_ids(cur, "finding", set(named) - set(batch))
        statuses = self._stored_statuses(cur, {r["finding_id"] for _, r in reviews})
        position = {id(row): n for n, row in enumerate(fresh)}

        def known(finding_id: str, at: int) -> bool:
            return finding_id in stored or batch.get(finding_id, at) < at

        for row, review in reviews:
            at = position[id(row)]
            if not known(review["finding_id"], at):
                raise InvalidRecord("review refused: its finding_id names no finding in the "
                                    "ledger")
            if "duplicate_of" in review and not known(review["duplicate_of"], at):
                raise InvalidRecord("review refused: its duplicate_of names no finding in "
                                    "the ledger")
            before = statuses.get(review["finding_id"], ReviewStatus())
            try:
                statuses[review["finding_id"]] = step(before, review)
            except TrailError as exc:
                raise InvalidRecord(f"review refused: {exc}") from None

    def _stored_statuses(self, cur: Any, finding_ids: Iterable[str]) -> dict[str, ReviewStatus]:
        """The status of each finding from its stored reviews (in this transaction)."""
        wanted, reviews = sorted(set(finding_ids)), dict[str, list[dict[str, Any]]]()
        for start in range(0, len(wanted), _ID_CHUNK):
            chunk = wanted[start:start + _ID_CHUNK]
            marks = ", ".join("?" * len(chunk))
            cur.execute(self._sql(f"SELECT finding_id, leaf FROM entries WHERE kind = 'review' "
                                  f"AND finding_id IN ({marks}) ORDER BY idx"), chunk)
            for finding_id, leaf in cur.fetchall():
                reviews.setdefault(str(finding_id), []).append(record_of(bytes(leaf)))
        try:
            return {finding_id: fold(trail) for finding_id, trail in reviews.items()}
        except TrailError as exc:
            raise LedgerTampered(f"the stored reviews of a finding do not fold: {exc} (was "
                                 "the database edited?)") from None

    def checkpoint(self, key: Ed25519PrivateKey, key_name: str) -> str:
        """See `Ledger.checkpoint`."""
        with self._write() as cur:
            cur.execute(self._sql("SELECT size, frontier FROM tree_state WHERE id = 1"
                                  + self._FOR_UPDATE))
            size, packed = cur.fetchone()
            return self._sign(cur, self._frontier(cur, size, bytes(packed)), key, key_name)

    def audited_checkpoint(self, key: Ed25519PrivateKey, key_name: str) -> AuditedTree:
        """See `Ledger.audited_checkpoint`.

        The long part, reading and hashing every leaf, runs without the writer lock, so
        `ledger run` goes on storing meanwhile; then, under the lock, the leaves stored
        since are audited too, the tree is checked against the stored tree state and
        against any checkpoint signed meanwhile, and the checkpoint is signed and stored.
        """
        public_key = key.public_key()
        checked = self._latest_signed(public_key)
        frontier, hashes = Frontier(), list[bytes]()
        self._audit_leaves(self.size(), frontier, hashes)
        _check_extends(checked, frontier, hashes)
        with self._write() as cur:
            cur.execute(self._sql("SELECT size, frontier FROM tree_state WHERE id = 1"
                                  + self._FOR_UPDATE))
            size, packed = cur.fetchone()
            stored = self._frontier(cur, size, bytes(packed))
            self._audit_leaves(size, frontier, hashes, cur)
            if stored.root() != frontier.root():
                raise LedgerTampered("the ledger's stored tree state is not the tree of its "
                                     "leaves (was the database edited?)")
            latest = self._latest_signed(public_key, cur)
            if latest != checked:
                _check_extends(latest, frontier, hashes)
            note = self._sign(cur, frontier, key, key_name)
        return AuditedTree(note=note, size=frontier.size, root=frontier.root(),
                           leaf_hashes=hashes)

    def _audit_leaves(self, stop: int, frontier: Frontier, hashes: list[bytes],
                      cur: Any = None) -> None:
        """Check leaves frontier.size..stop-1 against their bytes and add them to the tree."""
        if stop < frontier.size:
            raise LedgerTampered(f"the ledger shrank from {frontier.size} to {stop} leaves "
                                 "while it was read (was the database edited?)")
        for stored in self._stored_rows(frontier.size, stop, cur):
            if stored.index != frontier.size:
                break
            row = checked_row(stored, canonical=False)
            frontier.append(row.leaf_hash)
            hashes.append(row.leaf_hash)
        if frontier.size != stop:
            raise LedgerTampered(f"ledger leaf {frontier.size} is missing (was the database "
                                 "edited?)")

    def _stored_rows(self, start: int, stop: int, cur: Any = None) -> Iterator[StoredRow]:
        """Rows start <= idx < stop in leaf order, page by page (in `cur`'s transaction
        when given, else each page on its own)."""
        query = self._sql(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE idx >= ? AND idx < ? "
                          f"ORDER BY idx LIMIT {_PAGE}")
        while start < stop:
            if cur is None:
                with self._cursor() as own:
                    own.execute(query, (start, stop))
                    page = own.fetchall()
            else:
                cur.execute(query, (start, stop))
                page = cur.fetchall()
            yield from (_stored(row) for row in page)
            if len(page) < _PAGE:
                return
            start = page[-1][0] + 1

    def _latest_signed(self, public_key: Ed25519PublicKey, cur: Any = None) -> Checkpoint | None:
        """The largest checkpoint of this ledger's origin this key signed (the last stored
        of that size).

        Notes signed by other keys are passed over (they prove nothing about this key's
        tree); a note that names this key but whose signature fails is refused.
        """
        from streams.evidence.checkpoint import CheckpointError, NotSignedByKey, verify_checkpoint

        query = self._sql("SELECT note FROM checkpoints ORDER BY size DESC, seq DESC")
        if cur is None:
            with self._cursor() as own:
                origin = self._origin(own)
                own.execute(query)
                notes = [str(note) for (note,) in own.fetchall()]
        else:
            origin = self._origin(cur)
            cur.execute(query)
            notes = [str(note) for (note,) in cur.fetchall()]
        for note in notes:
            try:
                checkpoint = verify_checkpoint(note, public_key)
            except NotSignedByKey:
                continue
            except CheckpointError as exc:
                raise LedgerTampered(f"a stored checkpoint is not valid: {exc} (was the "
                                     "database edited?)") from None
            if checkpoint.origin == origin:
                return checkpoint
        return None

    def _sign(self, cur: Any, frontier: Frontier, key: Ed25519PrivateKey, key_name: str) -> str:
        from streams.evidence.checkpoint import Checkpoint, sign_checkpoint

        root = frontier.root()
        note = sign_checkpoint(Checkpoint(self._origin(cur, fix=True), frontier.size, root),
                               key, key_name)
        cur.execute(self._sql("INSERT INTO checkpoints (size, root, note, key_name, "
                              "signed_at) VALUES (?, ?, ?, ?, ?)"),
                    (frontier.size, root, note, key_name, _now_ms()))
        return note

    def record_export(self, actor: str, purpose: str, query: dict[str, Any],
                      bundle_sha256: str, at_ms: int) -> None:
        """See `Ledger.record_export`: one leaf of kind `export`."""
        self.append("export", [export_record(actor, purpose, query, bundle_sha256, at_ms)])

    def ledger_id(self) -> str:
        """This ledger's own random id (made on first use, then kept): what names its
        consumer group, so that each ledger reads the topics from its own position."""
        with self._write() as cur:
            return self._ledger_id(cur)

    def _ledger_id(self, cur: Any) -> str:
        import uuid

        cur.execute(self._sql("SELECT value FROM meta WHERE key = 'ledger_id'"))
        row = cur.fetchone()
        if row is not None:
            return str(row[0])
        made = uuid.uuid4().hex
        cur.execute(self._sql("INSERT INTO meta (key, value) VALUES ('ledger_id', ?)"), (made,))
        return made

    def checkpoint_origin(self) -> str:
        """See `Ledger.checkpoint_origin`."""
        with self._cursor() as cur:
            return self._origin(cur)

    def _origin(self, cur: Any, *, fix: bool = False) -> str:
        """The origin of this ledger's checkpoints (meta `checkpoint_origin`); when none is
        stored yet: the legacy CHECKPOINT_ORIGIN for a ledger that signed checkpoints
        before origins were per ledger, else `consentwatch ledger <ledger id>`. `fix`
        (in a write transaction) stores it, so it never changes afterwards."""
        cur.execute(self._sql("SELECT value FROM meta WHERE key = 'checkpoint_origin'"))
        row = cur.fetchone()
        if row is not None:
            return str(row[0])
        cur.execute(self._sql("SELECT COUNT(*) FROM checkpoints"))
        if int(cur.fetchone()[0]) or not fix:
            origin = CHECKPOINT_ORIGIN
        else:
            origin = f"{CHECKPOINT_ORIGIN} {self._ledger_id(cur)}"
        if fix:
            cur.execute(self._sql("INSERT INTO meta (key, value) VALUES "
                                  "('checkpoint_origin', ?)"), (origin,))
        return origin

    def add_cosigned(self, note: str, size: int, root: bytes, key_name: str) -> None:
        """See `Ledger.add_cosigned`."""
        with self._write() as cur:
            cur.execute(self._sql("INSERT INTO checkpoints (size, root, note, key_name, "
                                  "signed_at) VALUES (?, ?, ?, ?, ?)"),
                        (size, root, note, key_name, _now_ms()))

    # -- reads -------------------------------------------------------------------------

    def audit(self) -> tuple[int, bytes, list[bytes]]:
        """Recompute the tree from every stored leaf's bytes, without a key or a lock.

        Returns (size, root, leaf hashes). Raises LedgerTampered when a leaf's hash or
        columns disagree with its bytes, a leaf is missing, or the stored tree state is
        not the tree of the leaves. Leaves stored meanwhile are not read (append-only)."""
        with self._cursor() as cur:
            cur.execute(self._sql("SELECT size, frontier FROM tree_state WHERE id = 1"))
            size, packed = cur.fetchone()
        try:
            stored = Frontier.from_bytes(size, bytes(packed))
        except ValueError as exc:
            raise LedgerTampered(f"the ledger's tree state is corrupt: {exc}") from None
        frontier, hashes = Frontier(), list[bytes]()
        self._audit_leaves(size, frontier, hashes)
        if stored.root() != frontier.root():
            raise LedgerTampered("the ledger's stored tree state is not the tree of its "
                                 "leaves (was the database edited?)")
        return frontier.size, frontier.root(), hashes

    def checkpoint_rows(self) -> list[dict[str, Any]]:
        """Every stored checkpoint, oldest first: size, root, key_name, signed_at, note."""
        with self._cursor() as cur:
            cur.execute(self._sql("SELECT size, root, key_name, signed_at, note "
                                  "FROM checkpoints ORDER BY seq"))
            rows = cur.fetchall()
        return [{"size": int(size), "root": bytes(root), "key_name": str(key_name),
                 "signed_at": int(signed_at), "note": str(note)}
                for size, root, key_name, signed_at, note in rows]

    def size(self) -> int:
        with self._cursor() as cur:
            cur.execute(self._sql("SELECT size FROM tree_state WHERE id = 1"))
            return int(cur.fetchone()[0])

    def root(self) -> bytes:
        """The root hash of the current tree (from the stored frontier, O(log n))."""
        with self._cursor() as cur:
            cur.execute(self._sql("SELECT size, frontier FROM tree_state WHERE id = 1"))
            size, packed = cur.fetchone()
            return Frontier.from_bytes(size, bytes(packed)).root()

    def leaf_hashes(self, size: int | None = None) -> list[bytes]:
        with self._cursor() as cur:
            if size is None:
                cur.execute(self._sql("SELECT leaf_hash FROM entries ORDER BY idx"))
            else:
                if size < 0:
                    raise ValueError("a tree size cannot be negative")
                cur.execute(self._sql("SELECT leaf_hash FROM entries WHERE idx < ? "
                                      "ORDER BY idx"), (size,))
            hashes = [bytes(value) for (value,) in cur.fetchall()]
        if size is not None and len(hashes) != size:
            raise LedgerError(f"the ledger holds {len(hashes)} leaves, not {size}")
        return hashes

    def entries(self, *, kind: Kind = "finding", from_ms: int | None = None,
                to_ms: int | None = None, rule: str | None = None,
                account: str | None = None, subject: str | None = None,
                finding: str | None = None) -> Iterator[LedgerEntry]:
        """See `Ledger.entries`; reads page by page (by leaf index), so a long export
        holds no transaction open.

        The columns only narrow the scan: every value of an entry comes from its leaf
        bytes, and a row whose hash or columns disagree with them raises LedgerTampered.
        A row whose edited columns keep it out of the scan is not seen here: that is
        what `audited_checkpoint` finds.
        """
        check_kind(kind)
        where, params = ["kind = ?"], list[str | int]([kind])
        for clause, value in (("occurred_at >= ?", from_ms), ("occurred_at < ?", to_ms),
                              ("rule = ?", rule), ("account_id = ?", account),
                              ("subject_id = ?", subject), ("finding_id = ?", finding)):
            if value is not None:
                where.append(clause)
                params.append(value)
        query = self._sql(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE {' AND '.join(where)} "
                          f"AND idx > ? ORDER BY idx LIMIT {_PAGE}")
        last = -1
        while True:
            with self._cursor() as cur:
                cur.execute(query, (*params, last))
                page = cur.fetchall()
            for row in page:
                yield checked_entry(_stored(row))
            if len(page) < _PAGE:
                return
            last = page[-1][0]

    def latest_checkpoint(self) -> str | None:
        with self._cursor() as cur:
            cur.execute(self._sql("SELECT note FROM checkpoints ORDER BY size DESC, seq DESC "
                                  "LIMIT 1"))
            row = cur.fetchone()
        return None if row is None else str(row[0])

    def add_timestamp(self, size: int, root: bytes, token: bytes) -> None:
        """See `Ledger.add_timestamp`: one more row of the append-only `timestamps`."""
        with self._write() as cur:
            cur.execute(self._sql("INSERT INTO timestamps (size, root, token, stored_at) "
                                  "VALUES (?, ?, ?, ?)"), (size, root, token, _now_ms()))

    def timestamp_token(self, size: int, root: bytes) -> bytes | None:
        """See `Ledger.timestamp_token`."""
        with self._cursor() as cur:
            cur.execute(self._sql("SELECT token FROM timestamps WHERE size = ? AND root = ? "
                                  "ORDER BY seq DESC LIMIT 1"), (size, root))
            row = cur.fetchone()
        return None if row is None else bytes(row[0])

    def checkpoint_notes(self, size: int) -> list[str]:
        """See `Ledger.checkpoint_notes`."""
        with self._cursor() as cur:
            cur.execute(self._sql("SELECT note FROM checkpoints WHERE size = ? ORDER BY seq"),
                        (size,))
            return [str(note) for (note,) in cur.fetchall()]

    def exports(self) -> list[dict[str, Any]]:
        """See `Ledger.exports`."""
        with self._cursor() as cur:
            cur.execute(self._sql("SELECT actor, purpose, query, bundle_sha256, at_ms "
                                  "FROM exports ORDER BY seq"))
            rows = cur.fetchall()
        legacy = [{"actor": actor, "purpose": purpose, "query": orjson.loads(query),
                   "bundle_sha256": digest, "at_ms": at_ms}
                  for actor, purpose, query, digest, at_ms in rows]
        return legacy + [{"actor": r["actor"], "purpose": r["purpose"], "query": r["query"],
                          "bundle_sha256": r["manifest_sha256"], "at_ms": r["at_ms"]}
                         for r in (entry.record for entry in self.entries(kind="export"))]

    def finding(self, finding_id: str) -> LedgerEntry | None:
        """See `Ledger.finding` (one lookup on the unique (kind, entry_id) index)."""
        with self._cursor() as cur:
            cur.execute(self._sql(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE kind = "
                                  "'finding' AND entry_id = ?"), (finding_id,))
            row = cur.fetchone()
        return None if row is None else checked_entry(_stored(row))

    def reviews(self, finding_id: str) -> list[LedgerEntry]:
        """See `Ledger.reviews` (the (finding_id, kind) index)."""
        return list(self.entries(kind="review", finding=finding_id))

    def reviews_of(self, finding_ids: Iterable[str]) -> dict[str, list[LedgerEntry]]:
        """See `Ledger.reviews_of`: one query per 500 ids."""
        wanted, found = sorted(set(finding_ids)), dict[str, list[LedgerEntry]]()
        for start in range(0, len(wanted), _ID_CHUNK):
            chunk = wanted[start:start + _ID_CHUNK]
            marks = ", ".join("?" * len(chunk))
            with self._cursor() as cur:
                cur.execute(self._sql(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE kind = "
                                      f"'review' AND finding_id IN ({marks}) ORDER BY idx"),
                            chunk)
                rows = cur.fetchall()
            for row in rows:
                entry = checked_entry(_stored(row))
                found.setdefault(entry.finding_id, []).append(entry)
        return found

    def review_status(self, finding_id: str) -> ReviewStatus:
        """See `Ledger.review_status`."""
        try:
            return fold(entry.record for entry in self.reviews(finding_id))
        except TrailError as exc:
            raise LedgerTampered(f"the stored reviews of a finding do not fold: {exc} (was "
                                 "the database edited?)") from None

    def review_statuses(self, finding_ids: Iterable[str]) -> dict[str, ReviewStatus]:
        """See `Ledger.review_statuses`."""
        wanted = set(finding_ids)
        trails = self.reviews_of(wanted)
        try:
            return {finding_id: fold(entry.record for entry in trails.get(finding_id, ()))
                    for finding_id in wanted}
        except TrailError as exc:
            raise LedgerTampered(f"the stored reviews of a finding do not fold: {exc} (was "
                                 "the database edited?)") from None

    def exceptions(self, *, account: str | None = None) -> list[LedgerEntry]:
        """See `Ledger.exceptions`."""
        return list(self.entries(kind="exception", account=account))

    def covering_exceptions(self, finding: Mapping[str, Any], at_ms: int) -> list[LedgerEntry]:
        """See `Ledger.covering_exceptions`: the finding's account's exceptions only."""
        from streams.evidence.exception_scope import covers, in_force

        return [entry for entry in self.exceptions(account=finding.get("account_id") or "")
                if covers(entry.record, finding) and in_force(entry.record, at_ms)]

    def __enter__(self) -> SqlLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_times(rows: Sequence[Row], now_ms: int) -> None:
    """Refuse (InvalidRecord, the whole batch) a new review or exception dated more than
    MAX_CLOCK_SKEW_MS from the storing clock: its at_ms is the writer's claim. The scope
    times of an exception (from_ms, to_ms, expires_at_ms) stay free."""
    for row in rows:
        if row.kind in ("review", "exception") and abs(row.occurred_at - now_ms) > (
                MAX_CLOCK_SKEW_MS):
            raise InvalidRecord(f"{row.kind} refused: its at_ms is more than "
                                f"{MAX_CLOCK_SKEW_MS // 60_000} minutes from the ledger's "
                                "clock (is the writer's clock wrong?)")


def _stored(row: Sequence[Any]) -> StoredRow:
    """A StoredRow from a row of `_ENTRY_COLUMNS`."""
    (idx, kind, entry_id, occurred_at, rule, account_id, subject_id, leaf, leaf_hash,
     finding_id) = row
    return StoredRow(index=idx, kind=kind, entry_id=entry_id, occurred_at=occurred_at,
                     rule=rule, account_id=account_id, subject_id=subject_id, leaf=bytes(leaf),
                     leaf_hash=bytes(leaf_hash), finding_id=finding_id)


def _check_extends(checkpoint: Checkpoint | None, frontier: Frontier,
                   hashes: Sequence[bytes]) -> None:
    """Refuse unless the recomputed tree extends `checkpoint` (RFC 9162 consistency proof)."""
    from streams.evidence.merkle import consistency_proof, verify_consistency

    if checkpoint is None:
        return
    if checkpoint.size > frontier.size:
        raise LedgerTampered(f"the ledger holds {frontier.size} leaves, fewer than the "
                             f"{checkpoint.size} of its last signed checkpoint (was the "
                             "database edited?)")
    proof = consistency_proof(checkpoint.size, hashes)
    if not verify_consistency(checkpoint.size, frontier.size, checkpoint.root,
                              frontier.root(), proof):
        raise LedgerTampered(f"the ledger's tree of {frontier.size} leaves is not an "
                             f"extension of its last signed checkpoint (size "
                             f"{checkpoint.size}): leaves were rewritten (was the database "
                             "edited?)")
