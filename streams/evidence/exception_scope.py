"""Exceptions: which findings a recorded exception covers. Pure: no ledger, no I/O.

An exception is a ledger record of kind `exception` ("this account has a processing
agreement with this provider until 2027-06-30"), RFC 8785 JSON with exactly:

    exception_id   SHA-256 hex of the record's other fields (see review.record_id)
    account_id     the account it is for (required)
    provider       the provider it is limited to, or null (any provider)
    rule           the rule it is limited to, or null (any rule)
    from_ms, to_ms the findings it covers occurred in [from_ms, to_ms) (epoch ms)
    reason         why (free text)
    expires_at_ms  when it stops being in force (epoch ms, after at_ms)
    author         who recorded it
    at_ms          when it was recorded

A finding inside an exception is still recorded, exported and reviewed: being excepted
is a fact derived when asked (`covering`), never a change to the finding. `covers` is
the scope alone (what `verify` checks: an exported exception covers an exported
finding); an exception is *in force* at a time before its expiry.

Imported by `streams.evidence.verify`: it ships in the offline verifier.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from streams.evidence.review import MAX_MS, MAX_TEXT, TrailError, record_id

__all__ = ["FIELDS", "check_exception", "covering", "covers", "in_force", "new_exception"]

FIELDS = ("exception_id", "account_id", "provider", "rule", "from_ms", "to_ms", "reason",
          "expires_at_ms", "author", "at_ms")
_WHAT = "exception"


def new_exception(*, account_id: str, reason: str, author: str, from_ms: int, to_ms: int,
                  expires_at_ms: int, at_ms: int, provider: str | None = None,
                  rule: str | None = None) -> dict[str, Any]:
    """An exception record with its exception_id, checked (TrailError names the field)."""
    record: dict[str, Any] = {"account_id": account_id, "provider": provider, "rule": rule,
                              "from_ms": from_ms, "to_ms": to_ms, "reason": reason,
                              "expires_at_ms": expires_at_ms, "author": author,
                              "at_ms": at_ms}
    record["exception_id"] = record_id(record, "exception_id")
    check_exception(record)
    return record


def _text(record: Mapping[str, Any], name: str, *, optional: bool = False) -> None:
    value = record.get(name)
    if optional and value is None:
        return
    if not isinstance(value, str) or not value.strip():
        more = " or null" if optional else ""
        raise TrailError(f"the {_WHAT} has no {name} (a non-empty string{more})")
    if len(value) > MAX_TEXT:
        raise TrailError(f"the {_WHAT}'s {name} is longer than {MAX_TEXT} characters")


def _ms(record: Mapping[str, Any], name: str) -> int:
    value = record.get(name)
    if type(value) is not int or not 0 <= value <= MAX_MS:
        raise TrailError(f"the {_WHAT} has no {name} (epoch milliseconds, 1970 to 9999)")
    return value


def check_exception(record: Any) -> None:
    """Refuse (TrailError, naming the field) an exception that is not well formed."""
    if not isinstance(record, Mapping):
        raise TrailError("an exception must be a JSON object")
    if not set(record) <= set(FIELDS):
        raise TrailError(f"the {_WHAT} has a field it does not take (it takes "
                         f"{', '.join(FIELDS)})")
    for name in ("exception_id", "account_id", "reason", "author"):
        _text(record, name)
    for name in ("provider", "rule"):
        _text(record, name, optional=True)
    start, end = _ms(record, "from_ms"), _ms(record, "to_ms")
    if start >= end:
        raise TrailError(f"the {_WHAT}'s from_ms is not earlier than its to_ms")
    if _ms(record, "expires_at_ms") <= _ms(record, "at_ms"):
        raise TrailError(f"the {_WHAT}'s expires_at_ms is not later than its at_ms")
    if record["exception_id"] != record_id(record, "exception_id"):
        raise TrailError(f"the {_WHAT}'s exception_id is not the SHA-256 of its other "
                         "fields (was it changed?)")


def covers(exception: Mapping[str, Any], finding: Mapping[str, Any]) -> bool:
    """Whether the finding is inside the exception's scope: its account, its provider and
    rule when the exception names them, and occurred_at in [from_ms, to_ms)."""
    occurred = finding.get("occurred_at")
    return (type(occurred) is int
            and exception.get("account_id") == (finding.get("account_id") or "")
            and exception.get("provider") in (None, finding.get("provider"))
            and exception.get("rule") in (None, finding.get("rule"))
            and exception["from_ms"] <= occurred < exception["to_ms"])


def in_force(exception: Mapping[str, Any], at_ms: int) -> bool:
    """Whether the exception is in force at `at_ms`: recorded by then, not yet expired."""
    return bool(exception["at_ms"] <= at_ms < exception["expires_at_ms"])


def covering(exceptions: Iterable[Mapping[str, Any]], finding: Mapping[str, Any],
             at_ms: int) -> list[Mapping[str, Any]]:
    """The exceptions in force at `at_ms` whose scope covers the finding, in the order
    given: the finding is excepted at `at_ms` when this is not empty."""
    return [e for e in exceptions if covers(e, finding) and in_force(e, at_ms)]
