"""ScrapeHistogram exposes what prometheus_client's own Histogram would."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streams.metrics.histogram import ScrapeHistogram
from streams.metrics.pipeline import LATENCY_BUCKETS

_VALUES = st.floats(min_value=-10.0, max_value=10_000.0, allow_nan=False)


@given(event_time=st.lists(_VALUES, max_size=40), ingestion=st.lists(_VALUES, max_size=40))
def test_the_exposition_is_a_prometheus_client_histograms(event_time: list[float],
                                                          ingestion: list[float]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    scrape = ScrapeHistogram("latency_seconds", "A latency.", "since",
                             ("event_time", "ingestion"), LATENCY_BUCKETS, ours)
    reference = Histogram("latency_seconds", "A latency.", ["since"], buckets=LATENCY_BUCKETS,
                          registry=theirs)
    for since in ("event_time", "ingestion"):
        reference.labels(since=since)  # both series exist before any value, as ours
    for since, values in (("event_time", event_time), ("ingestion", ingestion)):
        for value in values:
            scrape.series(since).observe(value)
            reference.labels(since=since).observe(value)
    ours_text = generate_latest(ours).decode()
    theirs_text = "\n".join(line for line in generate_latest(theirs).decode().splitlines()
                            if "_created" not in line) + "\n"
    assert ours_text == theirs_text


def test_a_value_on_a_bound_counts_in_that_bucket() -> None:
    registry = CollectorRegistry()
    histogram = ScrapeHistogram("h", "h.", "k", ("a",), (1.0, 2.0), registry)
    histogram.series("a").observe(1.0)
    histogram.series("a").observe(2.5)
    assert registry.get_sample_value("h_bucket", {"k": "a", "le": "1.0"}) == 1
    assert registry.get_sample_value("h_bucket", {"k": "a", "le": "2.0"}) == 1
    assert registry.get_sample_value("h_bucket", {"k": "a", "le": "+Inf"}) == 2
    assert registry.get_sample_value("h_count", {"k": "a"}) == 2
    assert registry.get_sample_value("h_sum", {"k": "a"}) == 3.5


def test_buckets_must_be_distinct() -> None:
    with pytest.raises(ValueError, match="distinct, in order"):
        ScrapeHistogram("h", "h.", "k", ("a",), (1.0, 1.0), CollectorRegistry())


def test_buckets_out_of_order_are_refused_and_a_last_inf_is_the_inf_bucket() -> None:
    with pytest.raises(ValueError, match="in order"):
        ScrapeHistogram("h", "h.", "k", ("a",), (2.0, 1.0), CollectorRegistry())
    registry = CollectorRegistry()
    ScrapeHistogram("h", "h.", "k", ("a",), (1.0, float("inf")), registry).series("a").observe(5)
    assert registry.get_sample_value("h_bucket", {"k": "a", "le": "1.0"}) == 0
    assert registry.get_sample_value("h_bucket", {"k": "a", "le": "+Inf"}) == 1
