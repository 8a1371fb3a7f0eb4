"""The Grafana dashboards as code (issue 4, part 4) and their provisioning.

The committed JSON must be what dashboards/build.py writes, every query must read only
metrics of the contract (or `up`) and group by labels they have, and every expression
must parse: Debian's promtool checks them as recording rules. "Top accounts" is the one
panel of the evidence ledger's PostgreSQL: its SQL runs here on a real ledger.
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
from tests.promql_names import ALLOWED_SERIES, DESK_METRICS, metric_names

DASHBOARDS_DIR = ROOT / "dashboards"
BUILD = DASHBOARDS_DIR / "build.py"
GRAFANA = ROOT / "deploy" / "grafana" / "provisioning"
PROMTOOL = Path("/usr/bin/promtool")
NAMES = ("oncall.json", "compliance.json")
# Every label of the contract's metrics, plus the target labels Prometheus adds and `le`.
LABELS = {"type", "reason", "rule", "severity", "provider", "kind", "since", "partition",
          "topic", "version", "rules_version", "status", "job", "instance", "le"}
# Grafana's built-in interval variables, as a value promtool accepts.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "6h",
                     "$instance": ".*", "$rule": ".*", "$provider": ".*"}
# The template variables of each dashboard, and which of them every query must use.
VARIABLES = {"oncall.json": ("instance",), "compliance.json": ("instance", "rule", "provider")}
# The only panels that do not read Prometheus: they query the evidence ledger's PostgreSQL.
LEDGER_PANELS = {"Top accounts"}


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboards_build", BUILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD_MODULE = load_build()
LEDGER_DATASOURCE = {"type": "grafana-postgresql-datasource", "uid": "consentwatch-ledger"}


def dashboard(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DASHBOARDS_DIR / name).read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def prometheus_targets(board: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) of every Prometheus query: all but the ledger's SQL."""
    for panel in panels(board):
        if panel["title"] not in LEDGER_PANELS:
            for target in panel.get("targets", []):
                yield panel, target


def expressions(board: dict[str, Any]) -> list[str]:
    return [target["expr"] for _, target in prometheus_targets(board)]


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
    for panel, target in prometheus_targets(board):
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
            "Amendments by kind", "Top providers", "Top accounts", "Open findings",
            "Oldest open critical finding", "Open findings by rule and status",
            "Open findings by severity"} <= titles("compliance.json")


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
        if panel["title"] in LEDGER_PANELS:
            assert panel["datasource"] == LEDGER_DATASOURCE
        elif panel["type"] not in ("row", "text"):
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
    """Choosing a worker (a rule, a provider) narrows every panel, not some of them. The
    review desk's gauges are not a worker's: they are narrowed by rule where they have one."""
    for expr in expressions(dashboard(name)):
        for metric in metric_names(expr):
            for matchers in _selectors(expr, metric.removesuffix("_bucket")):
                if metric in DESK_METRICS:
                    assert 'job="consentwatch-desk"' in matchers, expr
                    if metric == "consentwatch_desk_open_findings":
                        assert 'rule=~"$rule"' in matchers, expr
                    continue
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
    assert "consentwatch-pseudonym-deanonymized.md" in linked[
        "Pseudonym overridden by an enriched profile"]
    assert "consentwatch-disclosure-without-consent-rate-high.md" in linked[
        "Profile disclosed without consent"]


def test_build_py_takes_the_runbook_base_as_a_setting(tmp_path: Path) -> None:
    base = "https://git.example.com/org/consentwatch/blob/main/"
    done = subprocess.run([sys.executable, str(BUILD), "--out", str(tmp_path),
                           "--runbook-base", base],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    for name in NAMES:
        published = _runbook_links(json.loads((tmp_path / name).read_text()))
        assert published == [base + url for url in _runbook_links(dashboard(name))]


# -- top accounts, from the evidence ledger ------------------------------------------------------

HOUR_MS = 3_600_000
T0 = 1_772_445_600_000  # 2026-03-02T10:00:00Z, the start of the time range of the SQL tests
RANGE_MS = (T0, T0 + 10 * HOUR_MS)


def top_accounts_panel() -> dict[str, Any]:
    (panel,) = (p for p in panels(dashboard("compliance.json")) if p["title"] == "Top accounts")
    return panel


def test_top_accounts_is_a_table_of_the_ledger() -> None:
    panel = top_accounts_panel()
    assert panel["type"] == "table"
    assert panel["datasource"] == LEDGER_DATASOURCE
    (target,) = panel["targets"]
    assert target["datasource"] == LEDGER_DATASOURCE
    assert target["format"] == "table" and target["rawQuery"] is True
    assert target["rawSql"] == BUILD_MODULE.TOP_ACCOUNTS_SQL
    sql = target["rawSql"]
    assert "$__unixEpochFrom()" in sql and "$__unixEpochTo()" in sql
    assert "'RETRACTED'" in sql and sql.rstrip().endswith("LIMIT 10")


def test_the_ledger_datasource_is_provisioned() -> None:
    config = yaml.safe_load((GRAFANA / "datasources" / "ledger.yml").read_text())
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert {"type": source["type"], "uid": source["uid"]} == LEDGER_DATASOURCE
    assert source["uid"] == BUILD_MODULE.LEDGER_DATASOURCE_UID
    assert source["isDefault"] is False  # Prometheus stays the default
    # Where and as whom: settings, never a literal password in the repository.
    settings = {"url": source["url"], "user": source["user"],
                "database": source["jsonData"]["database"],
                "sslmode": source["jsonData"]["sslmode"],
                "password": source["secureJsonData"]["password"]}
    for name, value in settings.items():
        assert re.fullmatch(r"\$\{CONSENTWATCH_LEDGER_DB_[A-Z]+\}", value), name


def concrete_sql(from_ms: int, to_ms: int) -> str:
    """The panel's SQL as Grafana sends it: its time macros replaced by the range's."""
    sql = str(top_accounts_panel()["targets"][0]["rawSql"])
    for macro, value in (("$__unixEpochFrom()", from_ms // 1000),
                         ("$__unixEpochTo()", to_ms // 1000)):
        sql = sql.replace(macro, str(value))
    assert "$" not in sql, sql
    return sql


def ledger_finding(n: int, account: str, *, rule: str = "enrichment-without-consent",
                   severity: str = "HIGH", at: int | None = None) -> dict[str, Any]:
    from streams.model.findings import finding_id

    trigger = f"e{n:05d}"
    return {"finding_id": finding_id(rule, trigger), "rule": rule, "severity": severity,
            "subject_id": f"u-{n}", "account_id": account, "meeting_id": "m1",
            "provider": "linkedin_sales_navigator", "trigger_event_id": trigger,
            "evidence_event_ids": [trigger], "occurred_at": T0 + n * 60_000 if at is None
            else at, "detected_at": T0 + 11 * HOUR_MS, "explanation": f"Finding {n}."}


def retraction(of: dict[str, Any]) -> dict[str, Any]:
    from streams.model.findings import amendment_id

    late = "e99999"
    return {"amendment_id": amendment_id(of["finding_id"], late, "RETRACTED"),
            "kind": "RETRACTED", "finding_id": of["finding_id"], "rule": of["rule"],
            "subject_id": of["subject_id"], "trigger_event_id": of["trigger_event_id"],
            "late_event_id": late, "evidence_event_ids": [late],
            "occurred_at": of["occurred_at"], "detected_at": of["detected_at"] + 1,
            "explanation": "Retracted."}


def ledger_items() -> list[tuple[str, dict[str, Any]]]:
    """acct-a: 3 open findings (one more retracted); acct-b: 2 in the range, one before it
    and one at its (exclusive) end; acct-c..acct-m: one each, so LIMIT 10 cuts."""
    retracted = ledger_finding(4, "acct-a")
    findings = [
        ledger_finding(1, "acct-a"), ledger_finding(2, "acct-a"),
        ledger_finding(3, "acct-a", rule="pseudonym-deanonymized", severity="CRITICAL"),
        retracted,
        ledger_finding(5, "acct-b", rule="notice-missing", severity="MEDIUM"),
        ledger_finding(6, "acct-b", rule="notice-missing", severity="MEDIUM"),
        ledger_finding(7, "acct-b", at=RANGE_MS[0] - 1),
        ledger_finding(8, "acct-b", at=RANGE_MS[1]),
        *(ledger_finding(10 + i, f"acct-{letter}") for i, letter in enumerate("mlkjihgfedc")),
    ]
    return [*(("finding", f) for f in findings), ("amendment", retraction(retracted))]


def test_top_accounts_sql_ranks_open_findings_in_the_ledger(postgres_url: str) -> None:
    import time

    import psycopg

    from streams.evidence.ledger import open_ledger
    from tests.postgres_fixture import fresh_database

    with fresh_database(postgres_url) as url:
        with open_ledger(url) as ledger:
            assert ledger.append_mixed(ledger_items()) == 20
        before = time.time()
        with psycopg.connect(url) as conn:
            cursor = conn.execute(concrete_sql(*RANGE_MS))
            columns = [column.name for column in cursor.description or []]
            rows = cursor.fetchall()
        after = time.time()
    assert columns == ["Account", "Open findings", "By rule and severity",
                       "Oldest open finding"]
    assert [(account, count) for account, count, _, _ in rows] == [
        ("acct-a", 3), ("acct-b", 2),
        *((f"acct-{letter}", 1) for letter in "cdefghij")]
    assert rows[0][2] == ("enrichment-without-consent HIGH: 2, "
                          "pseudonym-deanonymized CRITICAL: 1")
    assert rows[1][2] == "notice-missing MEDIUM: 2"
    oldest_a = ledger_finding(1, "acct-a")["occurred_at"] / 1000
    assert before - oldest_a - 1 <= rows[0][3] <= after - oldest_a + 1


def test_top_accounts_sql_is_empty_for_a_range_without_findings(postgres_url: str) -> None:
    import psycopg

    from streams.evidence.ledger import open_ledger
    from tests.postgres_fixture import fresh_database

    with fresh_database(postgres_url) as url:
        with open_ledger(url) as ledger:
            ledger.append_mixed(ledger_items())
        with psycopg.connect(url) as conn:
            rows = conn.execute(concrete_sql(T0 - 2 * HOUR_MS, T0 - HOUR_MS)).fetchall()
    assert rows == []


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


def test_a_rule_stat_turns_red_where_its_alert_fires() -> None:
    """A rule that pages on any finding is red from one; a rate alert's rule is orange
    from one and red past its threshold (the alert's own `FindingAlert`)."""
    from streams.catalogue import load_catalogue
    from streams.engine.rules import REGISTRY

    stats = {panel["title"]: panel for panel in panels(dashboard("compliance.json"))}
    catalogue = load_catalogue()
    for rule in REGISTRY:
        if rule.alert is None:
            continue
        steps = stats[catalogue[rule.id].title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        red = [step["value"] for step in steps if step["color"] == "red"]
        assert red == [rule.alert.threshold + 1], rule.id
