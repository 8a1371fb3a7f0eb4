"""What streams/kafka/faust_adapter.py uses of Faust's, mode's and aiokafka's
private names: the pinned versions still have each one, and no other module uses one.

An upgrade that renames or reshapes one fails here, before a worker silently stops
committing.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import aiokafka
import faust
import mode
from faust.stores import rocksdb as faust_rocksdb
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka

import streams

ADAPTER = Path(streams.__file__).parent / "kafka" / "faust_adapter.py"

# (owner, name, how it is used): methods are looked up on the class, attributes are
# looked for as `self.<name>` in the class's source (they are set in __init__).
METHODS = [
    (faust_consumer.Consumer, "_drain_messages"),
    (faust_consumer.Consumer, "_wait_next_records"),
    (faust_aiokafka.Consumer, "_to_message"),
    (faust.App, "_new_transport"),
    (faust_aiokafka.Producer, "_ensure_producer"),
    (faust_aiokafka.Producer, "_settings_extra"),
    (faust_aiokafka.AIOKafkaConsumerThread, "_ensure_consumer"),
    (faust_rocksdb.Store, "_db_for_partition"),
    (mode.Worker, "_on_sigterm"),
    (mode.Worker, "_on_sigint"),
]
ATTRIBUTES = [
    (faust_consumer.Consumer, "_read_offset"),
    (faust_consumer.Consumer, "_committed_offset"),
    (faust_consumer.Consumer, "_acked"),
    (faust_consumer.Consumer, "_acked_index"),
    (faust_consumer.Consumer, "_buffered_partitions"),
    (faust_consumer.Consumer, "_n_acked"),
    (faust_consumer.Consumer, "_commit_every"),
    (faust_consumer.ThreadDelegateConsumer, "_thread"),
    (mode.Service, "_stopped"),  # the consumer's and its fetcher's
    (faust.App, "_consumer"),
    (aiokafka.AIOKafkaConsumer, "_client"),
    (faust.Worker, "_shutdown_immediately"),
]
PRIVATE_NAMES = sorted({name for _, name in METHODS + ATTRIBUTES})


def _source(owner: type) -> str:
    return "".join(inspect.getsource(cls) for cls in owner.__mro__
                   if cls.__module__.split(".")[0] in ("faust", "mode", "aiokafka"))


def test_the_pinned_libraries_still_have_every_private_name_the_adapter_uses() -> None:
    for owner, name in METHODS:
        assert callable(getattr(owner, name, None)), f"{owner.__qualname__}.{name}"
    for owner, name in ATTRIBUTES:
        assert f"self.{name}" in _source(owner), f"{owner.__qualname__}.{name}"
    assert "fetcher" in inspect.signature(faust_consumer.Consumer._drain_messages).parameters
    # _new_offset reads the acked offsets of a partition as a sorted run from the
    # committed one: the contract BatchingConsumer._ack fills.
    new_offset = inspect.getsource(faust_consumer.Consumer._new_offset)
    assert "consecutive_numbers(acked)" in new_offset
    # the public ones the adapter reaches through them
    assert callable(getattr(aiokafka.AIOKafkaClient, "force_metadata_update", None))
    assert "self.cluster" in inspect.getsource(aiokafka.AIOKafkaClient)
    assert "self.offset_key" in inspect.getsource(faust_rocksdb.Store)


def test_every_private_name_the_adapter_uses_is_listed_here() -> None:
    used = re.findall(r"(?:\.|def |\")(_[a-z][a-z_]*)\b", ADAPTER.read_text())
    names = set(used)
    own = {"_batch_last", "_in_flight", "_last_commit", "_drain_batch", "_commit_in_order",
           "_commit_if_due", "_one_by_one", "_offsets_of", "_ack"}
    assert names - own == set(PRIVATE_NAMES)


def test_no_other_module_uses_a_private_name_of_the_libraries() -> None:
    names = "|".join(PRIVATE_NAMES)
    pattern = re.compile(rf"\.({names})\b|\"({names})\"")
    package = Path(streams.__file__).parent
    offenders = [f"{path.relative_to(package)}:{number}: {line.strip()}"
                 for path in sorted(package.rglob("*.py")) if path != ADAPTER
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if pattern.search(line)]
    assert offenders == []


def test_no_other_module_imports_the_internals_of_faust() -> None:
    package = Path(streams.__file__).parent
    internal = re.compile(r"^\s*(from|import) (faust|mode)\.(?!types\b)", re.MULTILINE)
    offenders = [str(path.relative_to(package)) for path in sorted(package.rglob("*.py"))
                 if path != ADAPTER and internal.search(path.read_text())]
    assert offenders == []
