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


@pytest.mark.parametrize(("text", "ms"), [
    ("2026-03-01T10:00:00Z", 1_772_359_200_000),
    ("2026-03-01t10:00:00z", 1_772_359_200_000),  # RFC 3339 5.6 note: lower case
    ("2026-03-01 10:00:00Z", 1_772_359_200_000),  # RFC 3339 5.6 note: a space
    ("2026-03-01T10:00:00.5Z", 1_772_359_200_500),
    ("2026-03-01T10:00:00.123456789Z", 1_772_359_200_123),
    ("2026-03-01T11:30:00+01:30", 1_772_359_200_000),
    ("2026-03-01T10:00:00-00:00", 1_772_359_200_000),
    ("2026-03-01T05:00:00-05:00", 1_772_359_200_000),
])
def test_rfc3339_date_times_are_read(text: str, ms: int) -> None:
    assert parse_rfc3339_ms(text) == ms


@pytest.mark.parametrize("text", [
    "2026-W09-1T00:00:00Z",       # ISO 8601 week date
    "2026-060T00:00:00Z",         # ISO 8601 ordinal date
    "20260301T100000Z",           # ISO 8601 basic format
    "2026-03-01T10:00:00+0000",   # offset without a colon
    "2026-03-01T10:00:00+05",     # offset without minutes
    "2026-03-01T10:00:00",        # no offset
    "2026-03-01T10:00Z",          # no seconds
    "2026-03-01T10:00:00,5Z",     # comma fraction
    "2026-03-01T10:00:00.Z",      # empty fraction
    "2026-03-01",                 # a date
    "2026-03-01X10:00:00Z",       # another separator
    "2026-02-30T10:00:00Z",       # no such day
    "2026-03-01T24:00:00Z",       # no such hour
    "2026-03-01T10:00:00+24:00",  # no such offset
    "2026-03-01T10:00:00Z ",      # trailing space
    "\u0662026-03-01T10:00:00Z",  # a non-ASCII digit
])
def test_other_forms_are_not_rfc3339(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339_ms(text)
