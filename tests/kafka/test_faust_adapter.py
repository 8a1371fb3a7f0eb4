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
from faust import tables as faust_tables
from faust.stores import rocksdb as faust_rocksdb
from faust.tables import recovery as faust_recovery
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
    (faust_tables.TableManager, "_update_channels"),
    (faust_recovery.Recovery, "_slurp_changelogs"),
    (faust_recovery.Recovery, "_set_recovery_ended"),
    (faust_aiokafka.Producer, "_ensure_producer"),
    (faust_aiokafka.Producer, "_settings_extra"),
    (faust_aiokafka.AIOKafkaConsumerThread, "_ensure_consumer"),
    (faust_aiokafka.AIOKafkaConsumerThread, "_fetch_records"),
    (faust_aiokafka.Consumer, "_new_consumer_thread"),
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
    (aiokafka.AIOKafkaConsumer, "_fetcher"),
    (aiokafka.consumer.fetcher.Fetcher, "_subscriptions"),
    (faust.Worker, "_shutdown_immediately"),
    (faust_tables.TableManager, "_recovery"),
    (faust_recovery.Recovery, "_active_events_received_at"),
    (faust_recovery.Recovery, "_standby_events_received_at"),
    (faust_recovery.Recovery, "_processing_times"),
    (faust_recovery.Recovery, "_last_flush_at"),
    (faust_recovery.Recovery, "_last_active_event_processed_at"),
    (faust_recovery.Recovery, "_actives_span"),
    (faust_recovery.Recovery, "_standbys_span"),
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
    # PositionedConsumerThread: Faust builds its thread so, and fetches through the
    # method it overrides; aiokafka's subscription state as it reads it.
    assert "AIOKafkaConsumerThread(self, loop=self.loop, beacon=self.beacon)" in (
        inspect.getsource(faust_aiokafka.Consumer._new_consumer_thread))
    assert "self._fetch_records," in inspect.getsource(
        faust_aiokafka.AIOKafkaConsumerThread.getmany)
    from aiokafka.consumer import subscription_state

    assert isinstance(subscription_state.SubscriptionState.subscription, property)
    assert isinstance(subscription_state.Subscription.assignment, property)
    assert callable(subscription_state.Assignment.state_value)
    state = subscription_state.TopicPartitionState
    assert isinstance(state.has_valid_position, property)
    assert isinstance(state.position, property)
    # prompt_table_manager's on_start is Faust's without its pause: Faust's still does
    # only these once the pause is over.
    upstream = [line.strip() for line in
                inspect.getsource(faust_tables.TableManager.on_start).splitlines()[2:]]
    assert [line for line in upstream if line and not line.startswith('"""')] == [
        "await self.sleep(1.0)", "if not self.should_stop:",
        "await self._update_channels()", "await self.recovery.start()"]


def test_the_batch_recovery_mirrors_the_pinned_recovery_loop() -> None:
    """batch_recovery's loop keeps Faust's per-record bookkeeping and its end of
    recovery: the pinned version's loop still does each of these, in these terms."""
    task = faust_recovery.Recovery._slurp_changelogs
    assert isinstance(task, mode.services.ServiceTask)  # started by its name, by mode
    upstream = inspect.getsource(task.fun)
    for line in ("changelog_queue.get(), timeout=5.0", "tp_to_table[tp]",
                 "bufsize = buffer_sizes[tp] = table.recovery_buffer_size",
                 "bufsize = buffer_sizes[tp] = table.standby_buffer_size",
                 "if seen_offset is None or offset > seen_offset:",
                 "await table.on_changelog_event(event)",
                 "table.apply_changelog_batch(buf)",
                 "if self.in_recovery and not self.need_recovery():",
                 "self.flush_buffers()", "self._set_recovery_ended()",
                 "self.signal_recovery_end.set()", "self.tables.on_standbys_ready()",
                 "if timeout and self.app.in_transaction and timeout_count > 1:"):
        assert line in upstream, line
    # BatchingConsumer._one_by_one races a batch's delivery once, where Faust's loop
    # races each record's callback against the same events.
    assert "callback(message), self.suspend_flow.wait()" in inspect.getsource(
        faust_consumer.Consumer._drain_messages)
    from streams.kafka.faust_adapter import batch_recovery, prompt_table_manager

    ours = batch_recovery()
    assert isinstance(ours._slurp_changelogs, mode.services.ServiceTask)
    assert "_slurp_changelogs" in ours._tasks[ours._get_class_id()]
    assert ours.logger.name == "faust.tables.recovery"  # its progress lines are kept

    manager = inspect.getsource(faust_tables.TableManager)
    assert "self._recovery = Recovery(" in manager
    assert prompt_table_manager().recovery.fget is not faust_tables.TableManager.recovery.fget


def test_every_private_name_the_adapter_uses_is_listed_here() -> None:
    used = re.findall(r"(?:\.|def |\")(_[a-z][a-z_]*)\b", ADAPTER.read_text())
    names = set(used)
    own = {"_batch_last", "_in_flight", "_last_commit", "_drain_batch", "_commit_in_order",
           "_commit_if_due", "_one_by_one", "_offsets_of", "_ack", "_pass_over", "_seeks",
           "_commit_later", "_apply_changelog_event", "_end_if_recovered", "_deliver"}
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


def test_the_apps_tables_are_registered_as_it_starts_with_no_pause() -> None:
    """Faust's TableManager sleeps a second before it registers the tables' changelogs;
    the worker's declares its table first, so its manager registers them at once."""
    import asyncio
    from types import SimpleNamespace

    from streams.kafka.faust_adapter import app_class, batching_transport

    async def scenario() -> None:
        app = app_class(faust.App, batching_transport({}))(
            "t-prompt", broker="kafka://localhost:9", autodiscover=False, store="memory://")
        table = app.Table("state", default=None, partitions=2)
        manager = app.tables
        slept: list[float] = []
        recovered: list[bool] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)

        async def start() -> None:
            recovered.append(True)

        async def started() -> None:  # the table's own service: no broker here
            pass

        manager.sleep = sleep
        manager._recovery = SimpleNamespace(start=start)
        table.maybe_start = started
        app._consumer = SimpleNamespace(assignment=set, pause_partitions=lambda tps: None)
        await manager.on_start()
        assert manager._tables_registered.is_set()
        assert recovered == [True] and slept == []

    asyncio.run(scenario())
