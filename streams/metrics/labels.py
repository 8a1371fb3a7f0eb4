"""Label values that stay bounded and free of personal data, whatever the input holds.

A label value comes from a field of the input (a provider, a dead-letter reason),
so a broken or hostile producer could otherwise put a name or an email in it, or
mint a new series per record. Values must look like the keys the contract allows
(lower-case, no `@`, short), and only the first `limit` distinct ones keep their
name; everything else is reported as `other`.
"""

from __future__ import annotations

import re

__all__ = ["OTHER", "BoundedLabel"]

OTHER = "other"
# The spec's keys: `linkedin_sales_navigator`, `not_json`, `EnrichmentRequested`.
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


class BoundedLabel:
    """Maps raw values to at most `limit` distinct label values plus `other`."""

    __slots__ = ("_kept", "limit", "lower_case")

    def __init__(self, limit: int, *, lower_case: bool = True) -> None:
        self.limit = limit
        # Providers and reason codes are lower-case keys; an upper-case letter in one
        # is a sign of free text (a name), so it is not kept.
        self.lower_case = lower_case
        self._kept: dict[str, str] = {}

    def __call__(self, value: str | None) -> str:
        kept = self._kept.get(value) if value is not None else None
        if kept is not None:
            return kept
        if (value is None or len(self._kept) >= self.limit or not _SAFE.fullmatch(value)
                or (self.lower_case and not value.islower() and not value.isdigit())):
            return OTHER
        self._kept[value] = value
        return value
