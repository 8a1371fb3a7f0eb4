"""Event time: epoch milliseconds (UTC), parsed from the forms the contract allows."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Final

__all__ = ["MAX_MS", "MIN_MS", "format_ms", "ms_from_datetime", "parse_rfc3339_ms"]

# Avro `long` bounds, and the range `datetime` can represent.
MIN_MS: Final = -62_135_596_800_000  # 0001-01-01T00:00:00Z
MAX_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DATE = date(1970, 1, 1)


def ms_from_datetime(value: datetime) -> int:
    """Epoch ms of an aware datetime; sub-millisecond digits are truncated."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


# RFC 3339 section 5.6 `date-time`: full-date "T" full-time, with a fraction of any
# length and a `Z` or `+hh:mm`/`-hh:mm` offset; its section 5.6 note allows lower-case
# `t` and `z`, and a space instead of `T`. Nothing else of ISO 8601 (week dates,
# ordinal dates, `+hhmm` or `+hh` offsets, commas, no seconds). ASCII digits only.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_rfc3339_ms(text: str) -> int:
    """Epoch ms of an RFC 3339 date-time, which always carries an offset (`Z` or `+hh:mm`).

    Raises ValueError for anything else, including a time without an offset and the
    other forms of ISO 8601. A leap second (`:60`) is refused: `datetime` has none.
    """
    if _RFC3339.fullmatch(text) is None:
        raise ValueError("not an RFC 3339 date-time with an offset")
    value = datetime.fromisoformat(f"{text[:10]}T{text[11:].upper()}")
    return ms_from_datetime(value)


@lru_cache(maxsize=4096)
def _day(days_since_epoch: int) -> str:
    return (_EPOCH_DATE + timedelta(days=days_since_epoch)).isoformat()


# The pieces of an RFC 3339 time of day, made once: explanations format many times.
_HOUR_MINUTE: Final = [f"T{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]
_SECOND: Final = [f"{s:02d}." for s in range(60)]
_MILLI: Final = [f"{ms:03d}Z" for ms in range(1000)]


def format_ms(ms: int) -> str:
    """RFC 3339 form of epoch ms in UTC, for humans (explanations, reports)."""
    if not MIN_MS <= ms <= MAX_MS:
        raise ValueError("timestamp outside the years 1 to 9999")
    seconds, millis = divmod(ms, 1000)
    days, rest = divmod(seconds, 86_400)
    minutes, second = divmod(rest, 60)
    return f"{_day(days)}{_HOUR_MINUTE[minutes]}{_SECOND[second]}{_MILLI[millis]}"
