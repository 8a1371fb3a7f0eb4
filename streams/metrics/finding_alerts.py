"""The findings group of deploy/prometheus/alerts.yml, generated from the rule registry.

Each rule that declares a `FindingAlert` (streams/engine/rules/) gets one alert on
`consentwatch_findings_total`; `python -m streams.cli.docs_cmd` writes the group between
its markers and `--check` fails when the committed file differs. The rest of alerts.yml
(the pipeline's alerts) is written by hand.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterable
from typing import Any

from streams.engine.rules import REGISTRY, Rule

__all__ = ["BEGIN", "END", "render_group", "replace_group", "runbook_page"]

BEGIN = "  # BEGIN GENERATED findings alerts"
END = "  # END GENERATED findings alerts"
_WIDTH = 88


def runbook_page(alert_name: str) -> str:
    """docs/runbooks/<the alert's name in kebab case>.md"""
    return "docs/runbooks/" + re.sub(r"(?<!^)(?=[A-Z])", "-", alert_name).lower() + ".md"


def _wrap(text: str, indent: str) -> list[str]:
    return [indent + line for line in textwrap.wrap(text, _WIDTH - len(indent),
                                                    break_on_hyphens=False)]


def _alert(rule: Rule[Any]) -> list[str]:
    alert = rule.alert
    assert alert is not None
    if not alert.by_provider and "$labels.provider" in alert.summary + alert.description:
        raise ValueError(f"{alert.name}: one alert for all providers has no provider label")
    counter = f'consentwatch_findings_total{{rule="{rule.id}"}}'
    by = "sum by (rule, provider) (" if alert.by_provider else "sum ("
    return [
        f"      - alert: {alert.name}",
        *_wrap(alert.why, "        # "),
        "        expr: |",
        f"          {by}",
        "            (",
        f"              {counter}",
        f"              unless {counter} offset {alert.window}",
        "            )",
        f"            or increase({counter}[{alert.window}])",
        f"          ) > {alert.threshold}",
        "        for: 0s",
        "        labels:",
        f"          severity: {alert.severity}",
        "          category: compliance",
        "        annotations:",
        f"          summary: {json.dumps(alert.summary)}",  # a JSON string is YAML too
        "          description: >-",
        *_wrap(alert.description, "            "),
        f'          runbook_url: "{runbook_page(alert.name)}"',
    ]


def render_group(rules: Iterable[Rule[Any]] = REGISTRY) -> str:
    """The group's text, markers included."""
    lines = [BEGIN + " (from streams/engine/rules/: run python -m streams.cli.docs_cmd)",
             "  - name: consentwatch-findings",
             "    rules:"]
    alerts = [_alert(rule) for rule in rules if rule.alert is not None]
    for index, alert in enumerate(alerts):
        if index:
            lines.append("")
        lines += alert
    lines.append(END)
    return "\n".join(lines) + "\n"


def replace_group(text: str, group: str) -> str:
    """`text` (alerts.yml) with the lines from BEGIN to END replaced by `group`."""
    start = text.index(BEGIN)
    end = text.index("\n", text.index(END)) + 1
    return text[:start] + group + text[end:]
