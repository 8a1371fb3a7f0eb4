"""The worker's partitioner agrees with the Kafka client's (aiokafka's copy of Java's)."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.pipeline.murmur2 import murmur2, partition_for
from tests.hypothesis_profiles import examples


@settings(max_examples=examples(1000), deadline=None)
@given(st.binary(max_size=80))
def test_the_same_hash_as_the_kafka_client(key: bytes) -> None:
    assert murmur2(key) == reference(key)


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(min_size=1, max_size=80), st.integers(min_value=1, max_value=64))
def test_the_same_partition_as_the_default_partitioner(key: bytes, partitions: int) -> None:
    every = list(range(partitions))
    assert partition_for(key, partitions) == DefaultPartitioner()(key, every, every)


def test_known_values_of_the_java_client() -> None:
    # org.apache.kafka.common.utils.Utils.murmur2 on these keys (Kafka's own test vectors)
    assert murmur2(b"21") == -973932308 & 0xFFFFFFFF
    assert murmur2(b"foobar") == -790332482 & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") == -985981536 & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-longer-string") == -1486304829 & 0xFFFFFFFF
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971 & 0xFFFFFFFF
    assert murmur2(b"abc") == 479470107
