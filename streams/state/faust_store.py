"""The engine's state store over a Faust table, for one partition of the correlation stage.

Faust keeps the table: its storage (one RocksDB per partition through rocksdict, or
memory), its changelog topic, and its recovery from that changelog when a partition
is assigned. What this store changes is how the state is written: not with
`table[key] = value` (one changelog send per write, and only inside an agent's
event), but when the worker flushes (at most every `state_flush_interval_s`):
`flush()` writes every key changed since the last flush, once, to the partition's
storage and returns the changelog records, which the worker appends to the changelog
partition in producer batches, then records the changelog offset in the store as
Faust does (`set_persisted_offset`), so recovery reads only what came after.

Keys carry the partition (`s/<p>/<subject>`, `a/<p>/<account>`) so that the memory
store, one dict for all partitions, keeps them apart. Values are state objects in
`state_codec`'s form; reads go through an in-process cache of live objects. One more
key, `m/<p>`, holds the partition's event-time progress (its watermark and its
sources' marks, as bytes the worker encodes), written last in each flush, so it is
never ahead of the state written with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from streams.engine.state import AccountState, SubjectState
from streams.kafka.faust_adapter import partition_db
from streams.state.state_codec import decode_state, encode_state

__all__ = ["ChangelogRecord", "TableStore"]

ChangelogRecord = tuple[bytes, bytes | None]  # key, value (None deletes)

_DELETED = object()


class TableStore:
    """StateStore for one partition of a Faust table (`table.data` is Faust's Store)."""

    def __init__(self, table: Any, partition: int, cache_size: int = 200_000) -> None:
        self.partition = partition
        self._store = table.data
        self._subject_prefix = f"s/{partition}/"
        self._account_prefix = f"a/{partition}/"
        self._meta_key = f"m/{partition}".encode()
        # Live objects and changes by subject or account id, not by storage key: the
        # engine reads and puts a subject twice per event and per decision, and a key
        # built each time (a concatenation, an encoding, a bytes hash) cost more than
        # the lookup. Storage keys are built when a change is written or a miss is read.
        self._subjects: dict[str, SubjectState] = {}
        self._accounts: dict[str, AccountState] = {}
        self._dirty_subjects: dict[str, Any] = {}  # a state, or _DELETED
        self._dirty_accounts: dict[str, Any] = {}
        self._dirty_meta: bytes | None = None
        # Subjects and accounts put or deleted so far (not the progress, `put_meta`): a
        # partition's traffic, events or decisions, for the worker's quiet flush.
        self.changes = 0
        self._cache_size = cache_size
        db = partition_db(self._store, partition)
        if db is not None:  # RocksDB: this partition's own database
            import rocksdict

            # No write-ahead log for these writes: the changelog topic is what makes
            # them durable. A crash loses the unflushed memtable as a whole, this
            # store's data and its persisted offset alike (both written here, in
            # order), so what survives is a consistent earlier state, and Faust's
            # recovery reads the changelog from that offset on.
            unlogged = rocksdict.WriteOptions()
            unlogged.disable_wal = True
            offset_key = self._store.offset_key

            def put(key: bytes, value: bytes) -> None:
                db.put(key, value, unlogged)

            def delete(key: bytes) -> None:
                db.delete(key, unlogged)

            def put_offset(offset: int) -> None:
                db.put(offset_key, str(offset).encode(), unlogged)

            self._get_raw = db.get
            self._put_raw = put
            self._delete_raw = delete
            self._put_offset = put_offset
            self._keys = db.keys
            self._estimate = getattr(db, "property_int_value", None)
        else:  # memory: one dict
            data = self._store.data
            self._get_raw = data.get
            self._put_raw = data.__setitem__
            self._delete_raw = lambda key: data.pop(key, None)
            self._put_offset = lambda offset: None  # Faust keeps no offset in memory
            self._keys = data.keys
            self._estimate = None

    # -- StateStore ------------------------------------------------------------------

    def subject(self, subject_id: str) -> SubjectState | None:
        state = self._subjects.get(subject_id)
        if state is not None:
            return state
        return self._load(self._subjects, self._dirty_subjects, self._subject_prefix,  # type: ignore[no-any-return]
                          subject_id)

    def put_subject(self, subject_id: str, state: SubjectState) -> None:
        self._subjects[subject_id] = state
        self._dirty_subjects[subject_id] = state
        self.changes += 1

    def delete_subject(self, subject_id: str) -> None:
        self._subjects.pop(subject_id, None)
        self._dirty_subjects[subject_id] = _DELETED
        self.changes += 1

    def account(self, account_id: str) -> AccountState | None:
        state = self._accounts.get(account_id)
        if state is not None:
            return state
        return self._load(self._accounts, self._dirty_accounts, self._account_prefix,  # type: ignore[no-any-return]
                          account_id)

    def put_account(self, account_id: str, state: AccountState) -> None:
        self._accounts[account_id] = state
        self._dirty_accounts[account_id] = state
        self.changes += 1

    def subjects(self) -> Iterator[tuple[str, SubjectState]]:
        prefix = self._subject_prefix.encode()
        ids = {key[len(prefix):].decode() for key in self._keys()
               if isinstance(key, bytes) and key.startswith(prefix)}
        dirty = self._dirty_subjects
        ids.update(subject_id for subject_id, value in dirty.items() if value is not _DELETED)
        ids.difference_update(subject_id for subject_id, value in dirty.items()
                              if value is _DELETED)
        # In the order of their storage keys (bytes), as before keys were by id.
        for subject_id in sorted(ids, key=lambda subject_id: subject_id.encode()):
            state = self.subject(subject_id)
            if state is not None:
                yield subject_id, state

    def size(self) -> int:
        """Keys in this partition's state (RocksDB's own estimate; exact in memory)."""
        if self._estimate is not None:
            return int(self._estimate("rocksdb.estimate-num-keys") or 0)
        prefix = self._subject_prefix.encode()
        return sum(1 for key in self._keys() if key.startswith(prefix))

    def meta(self) -> bytes | None:
        """The partition's saved event-time progress (`put_meta`), or None."""
        if self._dirty_meta is not None:
            return self._dirty_meta
        raw = self._get_raw(self._meta_key)
        return bytes(raw) if raw is not None else None

    def put_meta(self, value: bytes) -> None:
        """Written with the next flush, after every other key of it."""
        self._dirty_meta = value

    # -- writing ---------------------------------------------------------------------

    def dirty_keys(self) -> int:
        """How many keys changed since the last flush."""
        return (len(self._dirty_subjects) + len(self._dirty_accounts)
                + (self._dirty_meta is not None))

    def flush(self) -> list[ChangelogRecord]:
        """Write every changed key to storage; return the changelog records to send."""
        records: list[ChangelogRecord] = []
        # Accounts first. A flush may reach the changelog only in part (a crash between
        # two producer batches), and recovery then reads that part. A subject's decisions
        # cite its account's toggles, the only evidence kept outside the subject's own
        # state: with the accounts ahead, a subject recovered from this flush always finds
        # its account as recent, and a copy of a decision re-sent after the restart cites
        # what the first one cited.
        # The event-time progress goes last: it must never be ahead of the state.
        for prefix, dirty in ((self._account_prefix, self._dirty_accounts),
                              (self._subject_prefix, self._dirty_subjects)):
            for some_id, value in dirty.items():
                key = (prefix + some_id).encode()
                if value is _DELETED:
                    self._delete_raw(key)
                    records.append((key, None))
                else:
                    raw = encode_state(value)
                    self._put_raw(key, raw)
                    records.append((key, raw))
        if self._dirty_meta is not None:
            self._put_raw(self._meta_key, self._dirty_meta)
            records.append((self._meta_key, self._dirty_meta))
        # Only once every write is done: a flush that fails half-way keeps all its changes.
        self._dirty_accounts.clear()
        self._dirty_subjects.clear()
        self._dirty_meta = None
        if len(self._subjects) + len(self._accounts) > self._cache_size:
            self._evict()
        return records

    def persisted(self, offset: int) -> None:
        """The changelog holds everything up to `offset`: what Faust's recovery reads
        from, kept as Faust's own `set_persisted_offset` keeps it (but unlogged)."""
        self._put_offset(offset)

    def _load(self, cache: dict[str, Any], dirty: dict[str, Any], prefix: str,
              some_id: str) -> Any:
        """A state not in `cache`: None when deleted and not flushed yet, else read from
        storage (and kept in `cache`)."""
        if dirty.get(some_id) is _DELETED:
            return None
        raw = self._get_raw((prefix + some_id).encode())
        if raw is None:
            return None
        value = decode_state(raw)
        cache[some_id] = value
        return value

    def _evict(self) -> None:
        """Drop the oldest tenth of each cache (it is only a cache: storage has it all)."""
        for cache, dirty in ((self._subjects, self._dirty_subjects),
                             (self._accounts, self._dirty_accounts)):
            for some_id in list(cache)[: len(cache) // 10]:
                if some_id not in dirty:
                    del cache[some_id]
