"""Reading the small files the evidence commands take (keys, notes, proofs, state):
never more than a bound, so a wrong path (a log, a disk image) fails at once instead of
being read whole."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["TooLarge", "read_small"]


class TooLarge(Exception):
    """The file holds more than the bound."""


def read_small(path: Path | str, limit: int, dash_is_stdin: bool = False) -> bytes:
    """The bytes of `path` (with `dash_is_stdin`, `-` is standard input); TooLarge beyond
    `limit` bytes, OSError when it cannot be read."""
    if dash_is_stdin and str(path) == "-":
        raw = sys.stdin.buffer.read(limit + 1)
    else:
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)
    if len(raw) > limit:
        raise TooLarge(str(path))
    return raw
