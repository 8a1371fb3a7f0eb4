"""Name tokens and the pseudonym test (spec: "Pseudonym")."""

from __future__ import annotations

import unicodedata
from functools import lru_cache

__all__ = ["is_pseudonym", "name_tokens"]


@lru_cache(maxsize=65_536)
def name_tokens(name: str) -> frozenset[str]:
    """NFKD, drop combining marks, casefold, split on non-alphanumerics, keep len >= 2.

    Combining marks are every character of Unicode category M (Mn, Mc, Me): the
    vowel signs of Indic scripts are marks too, not separators.
    """
    decomposed = unicodedata.normalize("NFKD", name)
    category = unicodedata.category
    folded = "".join(c for c in decomposed if category(c)[0] != "M").casefold()
    tokens: set[str] = set()
    current: list[str] = []
    for char in folded:
        if char.isalnum():
            current.append(char)
        elif current:
            tokens.add("".join(current))
            current = []
    if current:
        tokens.add("".join(current))
    return frozenset(t for t in tokens if len(t) >= 2)


def is_pseudonym(display_name: str, profile_name: str) -> bool:
    """True when the two names share no token (an empty token set shares nothing)."""
    return name_tokens(display_name).isdisjoint(name_tokens(profile_name))
