"""The engine's store over a Faust table partition (here its memory storage): changes
wait for `flush`, which writes them in a safe order and returns the changelog records."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from streams.engine.state import AccountState, SubjectState
from streams.state.faust_store import TableStore
from streams.state.state_codec import decode_state


def memory_table() -> SimpleNamespace:
    """What TableStore reads of a Faust table with the memory store: `table.data.data`."""
    return SimpleNamespace(data=SimpleNamespace(data={}))


def test_changes_wait_for_the_flush_then_reach_storage_and_changelog() -> None:
    table = memory_table()
    store = TableStore(table, partition=3)
    state = SubjectState()
    state.seen["e-1"] = 1
    store.put_subject("s-1", state)
    assert store.dirty_keys() == 1
    assert table.data.data == {}  # not written before the flush
    assert store.subject("s-1") is state  # but read back from the cache
    records = store.flush()
    assert store.dirty_keys() == 0
    assert [key for key, _ in records] == [b"s/3/s-1"]
    assert table.data.data[b"s/3/s-1"] == records[0][1]
    assert decode_state(records[0][1]).seen == {"e-1": 1}
    store.delete_subject("s-1")
    assert store.subject("s-1") is None
    assert store.flush() == [(b"s/3/s-1", None)]
    assert b"s/3/s-1" not in table.data.data


def test_a_flush_writes_accounts_before_subjects() -> None:
    # A flush can reach the changelog in part: a subject recovered from it must find
    # its account (the toggles its decisions cite) at least as recent.
    store = TableStore(memory_table(), partition=0)
    for n in range(5):
        store.put_subject(f"s-{n}", SubjectState())
        store.put_account(f"acct-{n}", AccountState())
    store.put_subject("s-0", SubjectState())  # changed again: keeps its first position
    keys = [key for key, _ in store.flush()]
    assert keys == [f"a/0/acct-{n}".encode() for n in range(5)] + [
        f"s/0/s-{n}".encode() for n in range(5)]


def test_a_key_changed_many_times_is_written_once_per_flush() -> None:
    table = memory_table()
    store = TableStore(table, partition=1)
    state = SubjectState()
    for n in range(100):
        state.seen[f"e-{n}"] = n
        store.put_subject("busy", state)
    records = store.flush()
    assert len(records) == 1
    assert len(decode_state(records[0][1]).seen) == 100


def test_an_evicted_state_is_read_back_from_storage_and_a_deleted_one_is_gone() -> None:
    table = memory_table()
    store = TableStore(table, partition=2, cache_size=10)
    for n in range(20):
        state = SubjectState()
        state.seen[f"e-{n}"] = n
        store.put_subject(f"s-{n}", state)
    store.put_account("acct", AccountState())
    store.put_meta(b"progress")
    keys = [key for key, _ in store.flush()]
    assert keys[0] == b"a/2/acct" and keys[-1] == b"m/2"  # the progress last
    assert len(store._subjects) < 20  # the oldest were evicted after the flush
    assert store.subject("s-0") is not None and store.subject("s-0").seen == {"e-0": 0}
    store.delete_subject("s-1")
    assert store.subject("s-1") is None  # deleted, not flushed yet: not read from storage
    assert [subject_id for subject_id, _ in store.subjects()] == sorted(
        f"s-{n}" for n in range(20) if n != 1)
    assert store.meta() == b"progress"
    fresh = TableStore(table, partition=2)
    assert fresh.subject("s-1") is not None  # the deletion was never flushed
    store.flush()
    assert TableStore(table, partition=2).subject("s-1") is None
    assert TableStore(table, partition=2).account("acct") is not None


def test_a_flush_that_fails_half_way_keeps_every_change() -> None:
    table = memory_table()
    store = TableStore(table, partition=0)
    store.put_account("acct", AccountState())
    store.put_subject("s-1", SubjectState())
    store.put_meta(b"progress")
    writes = table.data.data

    class Full(dict):  # storage that refuses subjects
        def __setitem__(self, key: bytes, value: bytes) -> None:
            if key.startswith(b"s/"):
                raise OSError("disk full")
            super().__setitem__(key, value)

    failing = TableStore(SimpleNamespace(data=SimpleNamespace(data=Full())), partition=0)
    failing.put_account("acct", AccountState())
    failing.put_subject("s-1", SubjectState())
    failing.put_meta(b"progress")
    with pytest.raises(OSError, match="disk full"):
        failing.flush()
    assert failing.dirty_keys() == 3  # the account's change is not lost with the failure
    assert [key for key, _ in store.flush()] == [b"a/0/acct", b"s/0/s-1", b"m/0"]
    assert set(writes) == {b"a/0/acct", b"s/0/s-1", b"m/0"}
