"""The rule registry: one module a rule, the catalogue, the alerts and the engine in step,
and a rule added without touching the engine."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.catalogue import Catalogue, load_catalogue
from streams.engine import core
from streams.engine.core import Engine
from streams.engine.params import EngineParams
from streams.engine.rules import REGISTRY, RULE_IDS, Rule, Verdict
from streams.engine.rules.base import STAGES
from streams.engine.state import STAGE_PAST, AccountState, DictStore, SubjectState
from streams.metrics.finding_alerts import render_group, replace_group, runbook_page
from streams.model.events import Event, ProfileViewed
from streams.model.validate import event_from_record
from tests.builders import MEETING, T0, consent, viewed
from tests.conftest import ROOT

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "alerts_test.yml"


def test_every_rule_is_a_module_named_after_its_id() -> None:
    assert len(set(RULE_IDS)) == len(RULE_IDS)
    for rule in REGISTRY:
        module = importlib.import_module(
            f"streams.engine.rules.{rule.id.replace('-', '_')}")
        assert module.RULE is rule
        assert rule.id == module.ID
        assert rule.stage in STAGES


def test_the_registry_and_the_catalogue_name_the_same_rules() -> None:
    assert sorted(RULE_IDS) == sorted(entry.id for entry in load_catalogue().rules)
    for entry in load_catalogue().rules:
        assert entry.regulations, f"{entry.id} cites no law"


def test_the_engine_names_no_rule() -> None:
    source = Path(core.__file__.split(".cpython")[0].removesuffix(".py") + ".py").read_text()
    for rule_id in RULE_IDS:
        assert rule_id not in source


def test_the_findings_alerts_are_generated_from_the_registry() -> None:
    text = ALERTS.read_text(encoding="utf-8")
    assert replace_group(text, render_group()) == text, (
        "alerts.yml is stale: run python -m streams.cli.docs_cmd")
    group = next(g for g in yaml.safe_load(text)["groups"]
                 if g["name"] == "consentwatch-findings")
    alerting = [rule for rule in REGISTRY if rule.alert is not None]
    assert [a["alert"] for a in group["rules"]] == [
        rule.alert.name for rule in alerting if rule.alert is not None]
    tests = ALERT_TESTS.read_text(encoding="utf-8")
    for rule in alerting:
        assert rule.alert is not None
        assert (ROOT / runbook_page(rule.alert.name)).is_file()
        assert f"alertname: {rule.alert.name}" in tests, f"no promtool test of {rule.id}"


def test_a_changed_alert_makes_the_committed_file_stale() -> None:
    rule = next(r for r in REGISTRY if r.alert is not None)
    assert rule.alert is not None
    changed = dataclasses.replace(rule.alert, threshold=rule.alert.threshold + 5)
    other = Rule(rule.id, rule.stage, rule.trigger, alert=changed)
    text = ALERTS.read_text(encoding="utf-8")
    assert replace_group(text, render_group([other])) != text


class _ViewWithoutGuestNotice(Rule[ProfileViewed]):
    """A toy rule: fires on every view by someone else that shows the email."""

    def decide(self, trigger: ProfileViewed, state: SubjectState,
               account: AccountState | None, params: EngineParams) -> Verdict:
        if "user.contact.email" not in trigger.data_disclosed:
            return None
        return (trigger.event_id,), {"meeting_id": trigger.meeting_id}

    def affected_by(self, trigger: ProfileViewed, late: Event) -> bool:
        return False


def test_a_new_rule_needs_no_change_of_the_engine() -> None:
    toy = _ViewWithoutGuestNotice("toy-email-shown", STAGE_PAST, ProfileViewed)
    base = load_catalogue()
    entry = dataclasses.replace(base["covert-profile-view"], id=toy.id, severity="LOW",
                                explanation="Email shown in meeting {meeting_id}.")
    catalogue = Catalogue(version="test", rules=(*base.rules, entry))
    rules: tuple[Rule[Any], ...] = (*REGISTRY, toy)
    engine = Engine(DictStore(), catalogue=catalogue, rules=rules)
    shown = viewed(0, data_disclosed=["user.contact.email"])
    outputs = []
    for record in (consent(-1000), shown,
                   viewed(10, event_id="v-name", data_disclosed=["user.name"])):
        outputs += engine.process(event_from_record(record))
    outputs += engine.flush()
    toy_findings = [o for o in outputs if getattr(o, "rule", None) == toy.id]
    assert [(f.trigger_event_id, f.severity, f.explanation, f.occurred_at)
            for f in toy_findings] == [
        (shown["event_id"], "LOW", f"Email shown in meeting {MEETING}.", T0)]
    # the registry's own rules still run beside it
    assert {o.rule for o in outputs if hasattr(o, "rule")} > {toy.id}


def test_a_rule_missing_from_the_catalogue_is_refused() -> None:
    toy = _ViewWithoutGuestNotice("not-in-the-catalogue", STAGE_PAST, ProfileViewed)
    try:
        Engine(DictStore(), rules=(*REGISTRY, toy))
    except ValueError as exc:
        assert "not-in-the-catalogue" in str(exc)
    else:
        raise AssertionError("an unknown rule was accepted")


def test_a_rule_triggered_by_a_fact_is_refused() -> None:
    """Consents, joins, matches, notices and toggles are facts the rules read: one made a
    trigger would no longer be kept for the others."""
    from streams.model.events import ConsentChanged

    class _OnConsent(Rule[Any]):
        pass

    rule = _OnConsent("enrichment-without-consent", STAGE_PAST, ConsentChanged)
    with pytest.raises(ValueError, match="facts"):
        Engine(DictStore(), rules=(rule,))


def test_an_alert_for_all_providers_cannot_name_one() -> None:
    rule = next(r for r in REGISTRY if r.alert is not None and not r.alert.by_provider)
    assert rule.alert is not None
    wrong = dataclasses.replace(rule.alert, summary="Findings for {{ $labels.provider }}")
    with pytest.raises(ValueError, match="provider"):
        render_group([Rule(rule.id, rule.stage, rule.trigger, alert=wrong)])


def test_an_alert_summary_with_quotes_stays_yaml() -> None:
    rule = next(r for r in REGISTRY if r.alert is not None)
    assert rule.alert is not None
    quoted = dataclasses.replace(rule.alert, summary='Findings of "the rule": \\ too')
    text = render_group([Rule(rule.id, rule.stage, rule.trigger, alert=quoted)])
    (alert,) = yaml.safe_load(text)[0]["rules"]
    assert alert["annotations"]["summary"] == 'Findings of "the rule": \\ too'
