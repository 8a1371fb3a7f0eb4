"""Event time: RFC 3339 text of epoch milliseconds, against the standard library."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.model.timestamps import MAX_MS, MIN_MS, format_ms, parse_rfc3339_ms

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@given(st.integers(MIN_MS, MAX_MS))
def test_format_ms_is_the_rfc3339_utc_time_and_reads_back(ms: int) -> None:
    expected = EPOCH + timedelta(milliseconds=ms)
    text = format_ms(ms)
    assert text == expected.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert parse_rfc3339_ms(text) == ms


@pytest.mark.parametrize("ms", [MIN_MS - 1, MAX_MS + 1])
def test_format_ms_refuses_times_outside_the_years_1_to_9999(ms: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        format_ms(ms)
