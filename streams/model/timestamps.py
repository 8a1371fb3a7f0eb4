"""Event time: epoch milliseconds (UTC), parsed from the forms the contract allows."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

__all__ = ["MAX_MS", "MIN_MS", "format_ms", "ms_from_datetime", "parse_rfc3339_ms"]

# Avro `long` bounds, and the range `datetime` can represent.
MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms_from_datetime(value: datetime) -> int:
    """Epoch ms of an aware datetime; sub-millisecond digits are truncated."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def parse_rfc3339_ms(text: str) -> int:
    """Epoch ms of an RFC 3339 timestamp that carries an offset (`Z` or `+hh:mm`).

    Raises ValueError for anything else, including a time without an offset.
    """
    if len(text) < 20 or text[10] not in "Tt ":
        raise ValueError("not an RFC 3339 date-time")
    value = datetime.fromisoformat(text.upper().replace(" ", "T", 1))
    if value.tzinfo is None:
        raise ValueError("RFC 3339 time has no offset")
    return ms_from_datetime(value)


def format_ms(ms: int) -> str:
    """RFC 3339 form of epoch ms in UTC, for humans (explanations, reports)."""
    seconds, millis = divmod(ms, 1000)
    if 0 <= seconds < 253_402_300_800:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
    value = _EPOCH + timedelta(milliseconds=ms)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
