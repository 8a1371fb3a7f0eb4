"""The rule catalogue as data (`rules.toml`): ids, severities, texts, and the law they cite."""

from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["SEVERITIES", "Catalogue", "Regulation", "Rule", "load_catalogue", "template_pieces"]

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW")


@dataclass(frozen=True, slots=True)
class Regulation:
    law: str
    article: str
    title: str

    def cite(self) -> str:
        return f"{self.law} {self.article}"


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    severity: str
    title: str
    explanation: str
    regulations: tuple[Regulation, ...]
    # The rule's definition, as the contract's rule table states it (docs/rules.md).
    trigger: str = ""
    fires_when: str = ""
    evidence: str = ""
    # `explanation` cut once into (literal, placeholder) pairs: filled for every finding,
    # and a join of the pieces is about three times cheaper than `str.format_map`, which
    # parses the template on each call. None when the template uses more than plain
    # `{name}` placeholders (a conversion, a format spec, an index): then format_map.
    pieces: tuple[tuple[str, str], ...] | None = field(init=False, compare=False,
                                                       repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pieces", template_pieces(self.explanation))

    def explain(self, context: dict[str, Any]) -> str:
        pieces = self.pieces
        if pieces is None:
            return self.explanation.format_map(context)
        out: list[str] = []
        for literal, name in pieces:
            out.append(literal)
            if name:
                out.append(str(context[name]))
        return "".join(out)


@dataclass(frozen=True, slots=True)
class Catalogue:
    version: str
    rules: tuple[Rule, ...]

    def __getitem__(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)


def template_pieces(template: str) -> tuple[tuple[str, str], ...] | None:
    """`template` as (literal, placeholder name or "") pairs, or None unless every
    placeholder is a plain `{name}`."""
    pieces: list[tuple[str, str]] = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        if name is not None and (spec or conversion or not name.isidentifier()):
            return None
        pieces.append((literal, name or ""))
    return tuple(pieces)


@cache
def load_catalogue() -> Catalogue:
    text = resources.files(__package__).joinpath("rules.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    rules = tuple(
        Rule(
            id=item["id"],
            severity=item["severity"],
            title=item["title"],
            explanation=item["explanation"],
            regulations=tuple(Regulation(**reg) for reg in item["regulations"]),
            trigger=item["trigger"],
            fires_when=item["fires_when"],
            evidence=item["evidence"],
        )
        for item in data["rule"]
    )
    for rule in rules:
        if rule.severity not in SEVERITIES:
            raise ValueError(f"rule {rule.id}: unknown severity {rule.severity}")
    return Catalogue(version=data["version"], rules=rules)
