"""Coverage of dotted taxonomy keys (spec: "Identity, keys and time")."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["covered_by_any", "covers", "uncovered"]


def covers(general: str, specific: str) -> bool:
    """`user.contact` covers `user.contact.email`; `user.con` does not."""
    return specific == general or (
        specific.startswith(general) and specific[len(general)] == "."
    )


def covered_by_any(scope: Iterable[str], category: str) -> bool:
    return any(covers(item, category) for item in scope)


def uncovered(scope: tuple[str, ...], categories: tuple[str, ...]) -> tuple[str, ...]:
    """The categories that no key of `scope` covers, in their original order."""
    missing = [c for c in categories if c not in scope]  # exact matches are the common case
    if not missing:
        return ()
    return tuple(c for c in missing if not covered_by_any(scope, c))
