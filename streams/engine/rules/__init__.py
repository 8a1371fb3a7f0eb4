"""The rules, one module each, and the registry the engine loops over.

Adding a rule: a module here with a `Rule` subclass and its `RULE`, an entry in
`REGISTRY`, its catalogue entry (streams/catalogue/rules.toml, with the law it cites),
its tests, and, if it alerts, its runbook (docs/runbooks/). The engine, the alert
rules, the metrics and the reference docs follow from the registry.
"""

from __future__ import annotations

from typing import Any, Final

from streams.engine.rules import (
    automatic_egress_feature_inactive,
    covert_profile_view,
    disclosure_without_consent,
    enrichment_exceeds_consent,
    enrichment_without_consent,
    enrichment_without_notice,
    pseudonym_deanonymized,
)
from streams.engine.rules.base import FindingAlert, Rule, Verdict

__all__ = ["REGISTRY", "RULE_IDS", "RULE_STAGE", "FindingAlert", "Rule", "Verdict", "rule"]

# In the order a trigger's findings are emitted within one stage.
REGISTRY: Final[tuple[Rule[Any], ...]] = (
    enrichment_without_consent.RULE,
    enrichment_exceeds_consent.RULE,
    automatic_egress_feature_inactive.RULE,
    disclosure_without_consent.RULE,
    pseudonym_deanonymized.RULE,
    enrichment_without_notice.RULE,
    covert_profile_view.RULE,
)
RULE_IDS: Final = tuple(r.id for r in REGISTRY)
RULE_STAGE: Final = {r.id: r.stage for r in REGISTRY}


def rule(rule_id: str) -> Rule[Any]:
    for candidate in REGISTRY:
        if candidate.id == rule_id:
            return candidate
    raise KeyError(rule_id)
