"""The Grafana dashboards as code (issue 4, part 4) and their provisioning.

The committed JSON must be what dashboards/build.py writes, every query must read only
metrics of the contract (or `up`) and group by labels they have, and every expression
must parse: Debian's promtool checks them as recording rules.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.promql_names import ALLOWED_SERIES, metric_names

DASHBOARDS_DIR = ROOT / "dashboards"
BUILD = DASHBOARDS_DIR / "build.py"
GRAFANA = ROOT / "deploy" / "grafana" / "provisioning"
PROMTOOL = Path("/usr/bin/promtool")
NAMES = ("oncall.json", "compliance.json")
# Every label of the contract's metrics, plus the target labels Prometheus adds and `le`.
LABELS = {"type", "reason", "rule", "severity", "provider", "kind", "since", "partition",
          "topic", "version", "rules_version", "job", "instance", "le"}
# Grafana's built-in interval variables, as a value promtool accepts.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "6h",
                     "$instance": ".*", "$rule": ".*", "$provider": ".*"}
# The template variables of each dashboard, and which of them every query must use.
VARIABLES = {"oncall.json": ("instance",), "compliance.json": ("instance", "rule", "provider")}


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboards_build", BUILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD_MODULE = load_build()


def dashboard(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DASHBOARDS_DIR / name).read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def expressions(board: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in panels(board) for target in panel.get("targets", [])]


# -- generated and up to date ---------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_committed_json_is_what_build_py_writes(name: str) -> None:
    assert (DASHBOARDS_DIR / name).read_text() == BUILD_MODULE.render(name), (
        f"dashboards/{name} is stale: run .venv/bin/python dashboards/build.py and commit it")


def test_build_py_check_flags_a_stale_file(tmp_path: Path) -> None:
    check = [sys.executable, str(BUILD), "--check", "--out", str(tmp_path)]
    done = subprocess.run([sys.executable, str(BUILD), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert subprocess.run(check, capture_output=True, timeout=60, check=False).returncode == 0
    (tmp_path / "oncall.json").write_text("{}\n")
    stale = subprocess.run(check, capture_output=True, text=True, timeout=60, check=False)
    assert stale.returncode == 1
    assert "stale: oncall.json" in stale.stderr


# -- the queries ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_queries_read_only_metrics_of_the_contract(name: str) -> None:
    exprs = expressions(dashboard(name))
    assert exprs
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        assert names <= ALLOWED_SERIES, f"{sorted(names - ALLOWED_SERIES)} in {expr}"


@pytest.mark.parametrize("name", NAMES)
def test_queries_use_only_labels_that_exist(name: str) -> None:
    """By, without, matchers and legends name only labels of the contract: none of them
    an account, a subject or any other personal data."""
    board = dashboard(name)
    for panel in panels(board):
        for target in panel.get("targets", []):
            for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", target["expr"]):
                used = {label.strip() for label in group.split(",") if label.strip()}
                assert used <= LABELS, f"{used - LABELS} in {target['expr']}"
            for matchers in re.findall(r"\{([^{}]*)\}", target["expr"]):
                used = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
                assert used <= LABELS, f"{used - LABELS} in {target['expr']}"
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert legend <= LABELS, f"{legend - LABELS} in {panel['title']}"


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    if not PROMTOOL.exists():
        pytest.fail(f"{PROMTOOL} is missing: install Debian's packages with "
                    "deploy/packages.sh", pytrace=False)
    rules = []
    for name in NAMES:
        for number, expr in enumerate(expressions(dashboard(name))):
            concrete = expr
            for variable, value in GRAFANA_VARIABLES.items():
                concrete = concrete.replace(variable, value)
            assert "$" not in concrete, concrete
            rules.append({"record": f"dashboard:{name.removesuffix('.json')}:{number}",
                          "expr": concrete})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = subprocess.run([str(PROMTOOL), "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


# -- what the dashboards show -------------------------------------------------------------------


def titles(name: str) -> set[str]:
    return {panel["title"] for panel in panels(dashboard(name))}


def test_oncall_shows_what_the_issue_asks() -> None:
    assert {"Events consumed", "Consumer lag by topic", "Watermark delay by partition",
            "Dead letters", "Worker up", "Decision latency p99"} <= titles("oncall.json")


def test_compliance_shows_what_the_issue_asks() -> None:
    assert {"Findings by rule", "Findings by severity", "Findings by provider",
            "Amendments by kind", "Top providers", "Top accounts"} <= titles("compliance.json")


@pytest.mark.parametrize("name", NAMES)
def test_layout_ids_and_datasource(name: str) -> None:
    board = dashboard(name)
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & area, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] not in ("row", "text"):
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    variable, *_ = board["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    assert variable["current"]["value"] == BUILD_MODULE.PROVISIONED_DATASOURCE_UID


# -- variables and links --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_label_variables_list_the_values_of_a_contract_label(name: str) -> None:
    variables = {v["name"]: v for v in dashboard(name)["templating"]["list"][1:]}
    assert tuple(variables) == VARIABLES[name]
    for label, variable in variables.items():
        assert variable["type"] == "query" and label in LABELS
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        metric, by = re.fullmatch(r"label_values\((\w+)\{[^}]*\}, (\w+)\)",
                                  variable["query"]).groups()
        assert metric in ALLOWED_SERIES and by == label
        assert variable["multi"] and variable["includeAll"] and variable["allValue"] == ".*"


def _selectors(expr: str, metric: str) -> list[str]:
    return re.findall(rf"\b{metric}(?:_bucket)?\{{([^{{}}]*)\}}", expr)


@pytest.mark.parametrize("name", NAMES)
def test_every_query_is_filtered_by_the_variables(name: str) -> None:
    """Choosing a worker (a rule, a provider) narrows every panel, not some of them."""
    for expr in expressions(dashboard(name)):
        for metric in metric_names(expr):
            for matchers in _selectors(expr, metric.removesuffix("_bucket")):
                assert 'instance=~"$instance"' in matchers, expr
                if metric == "consentwatch_findings_total" and "rule" in VARIABLES[name]:
                    assert re.search(r'rule(?:=~"\$rule"|="[a-z-]+")', matchers), expr
                    assert 'provider=~"$provider"' in matchers, expr


def test_the_dashboards_link_to_each_other_keeping_time_and_variables() -> None:
    uids = {name: dashboard(name)["uid"] for name in NAMES}
    for name in NAMES:
        (other,) = set(NAMES) - {name}
        links = [link for link in dashboard(name)["links"]
                 if link["url"] == f"/d/{uids[other]}"]
        assert len(links) == 1, name
        assert links[0]["keepTime"] and links[0]["includeVars"]


def _runbook_links(board: dict[str, Any]) -> list[str]:
    links = [*board["links"], *(link for panel in panels(board)
                                for link in panel.get("links", []))]
    return [link["url"] for link in links if "/runbooks/" in link["url"]]


@pytest.mark.parametrize("name", NAMES)
def test_runbook_links_point_at_runbooks_that_exist(name: str) -> None:
    urls = _runbook_links(dashboard(name))
    assert len(urls) >= 3
    assert [url for url in urls if not (ROOT / url).is_file()] == []


def test_panels_of_alerted_series_link_their_runbook() -> None:
    linked = {panel["title"]: {link["url"].rsplit("/", 1)[1] for link in panel.get("links", [])}
              for name in NAMES for panel in panels(dashboard(name))}
    assert "consentwatch-worker-down.md" in linked["Workers down"]
    assert "consentwatch-watermark-behind.md" in linked["Watermark delay by partition"]
    assert "consentwatch-dead-letters.md" in linked["Dead letters"]
    assert "consentwatch-pseudonym-deanonymized.md" in linked["Pseudonyms de-anonymised"]


def test_build_py_takes_the_runbook_base_as_a_setting(tmp_path: Path) -> None:
    base = "https://git.example.com/org/consentwatch/blob/main/"
    done = subprocess.run([sys.executable, str(BUILD), "--out", str(tmp_path),
                           "--runbook-base", base],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    for name in NAMES:
        published = _runbook_links(json.loads((tmp_path / name).read_text()))
        assert published == [base + url for url in _runbook_links(dashboard(name))]


# -- provisioning ---------------------------------------------------------------------------------


def test_grafana_datasource_provisioning() -> None:
    config = yaml.safe_load((GRAFANA / "datasources" / "prometheus.yml").read_text())
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert source["type"] == "prometheus"
    assert source["uid"] == BUILD_MODULE.PROVISIONED_DATASOURCE_UID
    assert source["url"].startswith("http")
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert source["jsonData"]["timeInterval"] == prometheus["global"]["scrape_interval"]


def test_grafana_dashboard_provisioning() -> None:
    config = yaml.safe_load((GRAFANA / "dashboards" / "consentwatch.yml").read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    assert provider["allowUiUpdates"] is False
