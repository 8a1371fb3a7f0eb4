"""The rule catalogue as data (`rules.toml`): ids, severities, texts, and the law they cite."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["SEVERITIES", "Catalogue", "Regulation", "Rule", "load_catalogue"]

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

    def explain(self, context: dict[str, Any]) -> str:
        return self.explanation.format_map(context)


@dataclass(frozen=True, slots=True)
class Catalogue:
    version: str
    rules: tuple[Rule, ...]

    def __getitem__(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)


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
