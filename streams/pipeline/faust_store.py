"""The engine's state store over a Faust table, for one partition of the correlation stage.

Keys carry the partition (`s/<p>/<subject>`, `a/<p>/<account>`): Faust's
RocksDB store looks a key up across every partition a worker holds, and account
state (feature toggles) exists once per partition. Values are pickled state objects.

Reads go through an in-process cache of live objects; writes are collected and
flushed to the table once per message (`flush`), so a message that touches a
subject three times writes one changelog record, not three.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

from streams.engine.state import AccountState, SubjectState

__all__ = ["FaustStore"]

_DELETED = object()


class FaustStore:
    """StateStore for one partition. Must be flushed inside the agent's event context."""

    def __init__(self, table: Any, partition: int, cache_size: int = 200_000) -> None:
        self._table = table
        self.partition = partition
        self._subject_prefix = f"s/{partition}/"
        self._account_prefix = f"a/{partition}/"
        self._cache: dict[bytes, Any] = {}
        self._dirty: dict[bytes, Any] = {}
        self._cache_size = cache_size

    # -- StateStore ------------------------------------------------------------------

    def subject(self, subject_id: str) -> SubjectState | None:
        return self._load((self._subject_prefix + subject_id).encode())  # type: ignore[no-any-return]

    def put_subject(self, subject_id: str, state: SubjectState) -> None:
        self._store((self._subject_prefix + subject_id).encode(), state)

    def delete_subject(self, subject_id: str) -> None:
        key = (self._subject_prefix + subject_id).encode()
        self._cache.pop(key, None)
        self._dirty[key] = _DELETED

    def account(self, account_id: str) -> AccountState | None:
        return self._load((self._account_prefix + account_id).encode())  # type: ignore[no-any-return]

    def put_account(self, account_id: str, state: AccountState) -> None:
        self._store((self._account_prefix + account_id).encode(), state)

    def subjects(self) -> Iterator[tuple[str, SubjectState]]:
        prefix = self._subject_prefix.encode()
        keys = {key for key in self._table if key.startswith(prefix)}
        keys.update(key for key in self._cache if key.startswith(prefix))
        for key in sorted(keys):
            state = self._load(key)
            if state is not None:
                yield key[len(prefix):].decode(), state

    # -- writing -------------------------------------------------------------------

    def flush(self) -> int:
        """Write every changed value to the table (one changelog record per key)."""
        written = len(self._dirty)
        for key, value in self._dirty.items():
            if value is _DELETED:
                if key in self._table:
                    del self._table[key]
            else:
                self._table[key] = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        self._dirty.clear()
        if len(self._cache) > self._cache_size:
            self._evict()
        return written

    def _load(self, key: bytes) -> Any:
        value = self._cache.get(key)
        if value is not None:
            return value
        raw = self._table.get(key)
        if raw is None:
            return None
        value = pickle.loads(raw)
        self._cache[key] = value
        return value

    def _store(self, key: bytes, value: Any) -> None:
        self._cache[key] = value
        self._dirty[key] = value

    def _evict(self) -> None:
        """Drop the oldest tenth of the cache (it is only a cache: the table has it all)."""
        for key in list(self._cache)[: self._cache_size // 10]:
            if key not in self._dirty:
                del self._cache[key]
