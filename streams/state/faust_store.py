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
        self._cache: dict[bytes, Any] = {}
        self._dirty: dict[bytes, Any] = {}
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
        return self._load((self._subject_prefix + subject_id).encode())  # type: ignore[no-any-return]

    def put_subject(self, subject_id: str, state: SubjectState) -> None:
        key = (self._subject_prefix + subject_id).encode()
        self._cache[key] = state
        self._dirty[key] = state
        self.changes += 1

    def delete_subject(self, subject_id: str) -> None:
        key = (self._subject_prefix + subject_id).encode()
        self._cache.pop(key, None)
        self._dirty[key] = _DELETED
        self.changes += 1

    def account(self, account_id: str) -> AccountState | None:
        return self._load((self._account_prefix + account_id).encode())  # type: ignore[no-any-return]

    def put_account(self, account_id: str, state: AccountState) -> None:
        key = (self._account_prefix + account_id).encode()
        self._cache[key] = state
        self._dirty[key] = state
        self.changes += 1

    def subjects(self) -> Iterator[tuple[str, SubjectState]]:
        prefix = self._subject_prefix.encode()
        keys = {key for key in self._keys() if isinstance(key, bytes) and key.startswith(prefix)}
        keys.update(key for key, value in self._dirty.items()
                    if key.startswith(prefix) and value is not _DELETED)
        keys.difference_update(key for key, value in self._dirty.items() if value is _DELETED)
        for key in sorted(keys):
            state = self._load(key)
            if state is not None:
                yield key[len(prefix):].decode(), state

    def size(self) -> int:
        """Keys in this partition's state (RocksDB's own estimate; exact in memory)."""
        if self._estimate is not None:
            return int(self._estimate("rocksdb.estimate-num-keys") or 0)
        prefix = self._subject_prefix.encode()
        return sum(1 for key in self._keys() if key.startswith(prefix))

    def meta(self) -> bytes | None:
        """The partition's saved event-time progress (`put_meta`), or None."""
        value = self._dirty.get(self._meta_key)
        if isinstance(value, bytes):
            return value
        raw = self._get_raw(self._meta_key)
        return bytes(raw) if raw is not None else None

    def put_meta(self, value: bytes) -> None:
        """Written with the next flush, after every other key of it."""
        self._dirty[self._meta_key] = value

    # -- writing ---------------------------------------------------------------------

    def dirty_keys(self) -> int:
        """How many keys changed since the last flush."""
        return len(self._dirty)

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
        account_prefix = self._account_prefix.encode()
        meta_key = self._meta_key

        def order(item: tuple[bytes, Any]) -> int:
            key = item[0]
            return 0 if key.startswith(account_prefix) else 2 if key == meta_key else 1

        dirty = sorted(self._dirty.items(), key=order)
        for key, value in dirty:
            if value is _DELETED:
                self._delete_raw(key)
                records.append((key, None))
            elif key == meta_key:
                self._put_raw(key, value)
                records.append((key, value))
            else:
                raw = encode_state(value)
                self._put_raw(key, raw)
                records.append((key, raw))
        self._dirty.clear()
        if len(self._cache) > self._cache_size:
            self._evict()
        return records

    def persisted(self, offset: int) -> None:
        """The changelog holds everything up to `offset`: what Faust's recovery reads
        from, kept as Faust's own `set_persisted_offset` keeps it (but unlogged)."""
        self._put_offset(offset)

    def _load(self, key: bytes) -> Any:
        value = self._cache.get(key)
        if value is not None:
            return value
        if self._dirty.get(key) is _DELETED:
            return None
        raw = self._get_raw(key)
        if raw is None:
            return None
        value = decode_state(raw)
        self._cache[key] = value
        return value

    def _evict(self) -> None:
        """Drop the oldest tenth of the cache (it is only a cache: storage has it all)."""
        for key in list(self._cache)[: self._cache_size // 10]:
            if key not in self._dirty:
                del self._cache[key]
