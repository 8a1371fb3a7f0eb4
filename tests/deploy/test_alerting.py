"""The alerting rules, their unit tests, runbooks and Alertmanager's routes (issue 4).

The real tools do the checking: Debian's promtool (`check rules`, `test rules`, `check
config`) and amtool (`check-config`, `config routes test`). CI installs them with
deploy/packages.sh; a missing tool fails the test, it does not skip it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.promql_names import ALLOWED_SERIES, metric_names

PROMTOOL = Path("/usr/bin/promtool")
AMTOOL = Path("/usr/bin/amtool")
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "tests" / "alerts_test.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOKS = ROOT / "docs" / "runbooks"
# Each runbook_url is the runbook's path in the repository; the URL they are published at
# is a setting of deploy/k8s/prometheusrule.py (docs/runbooks/README.md).
RUNBOOK_DIR = "docs/runbooks/"
# severity label -> Alertmanager receiver
RECEIVERS = {"critical": "pager", "warning": "ticket"}
# The alerts issue 4 asks for must exist (others may be added).
REQUIRED_ALERTS = {
    "ConsentwatchPseudonymDeanonymized", "ConsentwatchEnrichmentWithoutConsentRateHigh",
    "ConsentwatchAutomaticEgressFeatureInactive", "ConsentwatchDeadLetters",
    "ConsentwatchPipelineStalled", "ConsentwatchWatermarkBehind", "ConsentwatchWorkerDown",
}
PAGING_FINDINGS = {"ConsentwatchPseudonymDeanonymized",
                   "ConsentwatchEnrichmentWithoutConsentRateHigh",
                   "ConsentwatchAutomaticEgressFeatureInactive"}


def tool(path: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    if not path.exists():
        pytest.fail(f"{path} is missing: install Debian's packages with deploy/packages.sh",
                    pytrace=False)
    return subprocess.run([str(path), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60, check=False)


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


# -- the real tools ---------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    done = tool(PROMTOOL, "check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = tool(PROMTOOL, "test", "rules", ALERTS_TEST.name, cwd=ALERTS_TEST.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_check_config() -> None:
    done = tool(PROMTOOL, "check", "config", PROMETHEUS_CONFIG.name, cwd=PROMETHEUS_DIR)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout


def test_amtool_check_config() -> None:
    done = tool(AMTOOL, "check-config", str(ALERTMANAGER_CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize("severity", sorted(RECEIVERS))
def test_alertmanager_routes_by_severity(severity: str) -> None:
    done = tool(AMTOOL, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
                f"severity={severity}", "alertname=Any")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == [RECEIVERS[severity]]


# -- the rules themselves -----------------------------------------------------------------


def test_scrape_config_is_the_contracts() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"consentwatch", "consentwatch-desk"}
    targets = [t for sc in jobs["consentwatch"]["static_configs"] for t in sc["targets"]]
    assert targets and all(t.endswith(":6066") for t in targets), targets
    desk = [t for sc in jobs["consentwatch-desk"]["static_configs"] for t in sc["targets"]]
    assert desk and jobs["consentwatch-desk"]["metrics_path"] == "/metrics", desk
    assert config["rule_files"] == ["alerts.yml"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]


def test_the_required_alerts_exist() -> None:
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names)), names
    assert set(names) >= REQUIRED_ALERTS


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_each_alert_has_severity_annotations_and_a_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in RECEIVERS
    if rule["alert"] in PAGING_FINDINGS | {"ConsentwatchNoWorkersUp",
                                           "ConsentwatchCriticalFindingOpen24h"}:
        assert rule["labels"]["severity"] == "critical"
    annotations = rule["annotations"]
    assert annotations["summary"].strip() and annotations["description"].strip()
    page = f"{kebab(rule['alert'])}.md"
    assert annotations["runbook_url"] == RUNBOOK_DIR + page
    assert (ROOT / annotations["runbook_url"]).is_file()
    runbook = (RUNBOOKS / page).read_text()
    assert runbook.startswith(f"# {rule['alert']}\n")
    for section in ("## What it means", "## Confirm it", "## What to do"):
        assert section in runbook, f"{page} has no '{section}'"
    assert page in (RUNBOOKS / "README.md").read_text()


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_each_alert_reads_only_metrics_of_the_contract(rule: dict[str, Any]) -> None:
    names = metric_names(rule["expr"])
    assert names, rule["expr"]
    assert names <= ALLOWED_SERIES, names - ALLOWED_SERIES


def test_every_runbook_url_of_the_rules_and_their_unit_tests_is_a_runbook_file() -> None:
    """Links in the alerts and in the annotations the unit tests expect: no placeholder
    host, no page that does not exist."""
    urls = [rule["annotations"]["runbook_url"] for rule in alerts()]
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    urls += [alert["exp_annotations"]["runbook_url"] for case in tests["tests"]
             for check in case.get("alert_rule_test", [])
             for alert in check.get("exp_alerts", [])
             if "runbook_url" in alert.get("exp_annotations", {})]
    assert urls
    dead = [url for url in urls if not url.startswith(RUNBOOK_DIR)
            or not (ROOT / url).is_file()]
    assert dead == []


def test_the_critical_findings_alert_fires_at_once() -> None:
    """`for: 0s`: one finding is enough, and the real-scrape test relies on it."""
    by_name = {rule["alert"]: rule for rule in alerts()}
    assert by_name["ConsentwatchPseudonymDeanonymized"]["for"] == "0s"
    assert by_name["ConsentwatchAutomaticEgressFeatureInactive"]["for"] == "0s"


def test_each_alert_is_unit_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    assert tests["rule_files"] == ["../alerts.yml"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "never tested firing"
    assert names - silent == set(), "never tested silent"


def test_metric_name_extraction() -> None:
    """The checker above must see through PromQL's syntax, or it would prove nothing."""
    assert metric_names('sum by (le) (rate(a_bucket{x="y",z=~"p|q"}[5m])) > 0 '
                        "unless b offset 10m") == {"a_bucket", "b"}
    assert metric_names("(sum(rate(c[1m])) or vector(0)) / on (i) group_left (j) d > bool 1e3"
                        ) == {"c", "d"}
    assert metric_names('increase(e{v="$var"}[$__rate_interval]) and topk(5, f)') == {"e", "f"}
    assert metric_names("vector(1) + time()") == set()
    assert "nope_total" not in ALLOWED_SERIES
    assert metric_names("nope_total") - ALLOWED_SERIES == {"nope_total"}
