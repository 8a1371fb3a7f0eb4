"""Times in a bundle's human-readable parts, for any epoch-millisecond value a ledger holds.

RFC 3339 covers the years 1 to 9999 only. A finding can sit at either end of that range
(and a window's exclusive end one past it), and the ledger stores whatever integer a
record carries, so every output formats times through here instead of failing.
"""

from __future__ import annotations

from streams.model.timestamps import MAX_MS, MIN_MS, format_ms

__all__ = ["clamp_ms", "describe_ms"]

#: The exclusive end of a window that includes 9999-12-31T23:59:59.999Z.
_END_OF_9999 = MAX_MS + 1


def clamp_ms(ms: int) -> int:
    """`ms` moved into the range RFC 3339 can write."""
    return min(max(ms, MIN_MS), MAX_MS)


def describe_ms(ms: int) -> str:
    """RFC 3339 in UTC where it can be written; else a plain, unambiguous statement."""
    if MIN_MS <= ms <= MAX_MS:
        return format_ms(ms)
    if ms == _END_OF_9999:
        return "10000-01-01T00:00:00.000Z"
    return f"{ms} ms since 1970-01-01T00:00:00Z (outside the years 1 to 9999)"
