"""Grafana dashboards as code: builds dashboards/oncall.json and dashboards/compliance.json.

    .venv/bin/python dashboards/build.py           # write the JSON next to this file
    .venv/bin/python dashboards/build.py --check   # exit 1 if the committed JSON is stale

Built with Grafana Labs' grafana-foundation-sdk (typed builders generated from Grafana's
own schemas; the pinned flavour targets Grafana 11.6). Every Prometheus query reads only
the metrics of the contract (tests/promql_names.py) or Prometheus' `up`;
tests/deploy/test_dashboards.py checks that and that the committed JSON is what this
script writes. "Top accounts" is the one panel that reads the evidence ledger's
PostgreSQL instead (see TOP_ACCOUNTS_SQL).

Counters and their first sample: a counter series appears at its first increment, maybe
already at 1, and increase()/rate() need two samples, so they would miss a rare finding
entirely. The compliance panels count, per series, its whole value when it did not exist
at the start of the window, else its increase (the same pattern as the alert rules).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DashboardLink,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from streams.catalogue import load_catalogue
from streams.engine.rules import REGISTRY
from streams.metrics.finding_alerts import runbook_page

__all__ = ["DASHBOARDS", "TOP_ACCOUNTS_SQL", "compliance", "main", "oncall", "render"]

HERE = Path(__file__).resolve().parent
JOB = 'job="consentwatch"'
# The dashboards' template variables (multi-value, "All" matches everything).
INSTANCE = f'{JOB},instance=~"$instance"'
FINDINGS = f'{INSTANCE},rule=~"$rule",provider=~"$provider"'
# The review desk (`consentwatch desk serve`): its gauges, read from the ledger at scrape time.
DESK = 'job="consentwatch-desk",rule=~"$rule"'
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# The uid of the datasource in deploy/grafana/provisioning/datasources/prometheus.yml.
PROVISIONED_DATASOURCE_UID = "consentwatch-prometheus"
# The evidence ledger's PostgreSQL, in deploy/grafana/provisioning/datasources/ledger.yml.
LEDGER_DATASOURCE_UID = "consentwatch-ledger"
LEDGER_DATASOURCE = DataSourceRef(type_val="grafana-postgresql-datasource",
                                  uid=LEDGER_DATASOURCE_UID)
TAGS = ["consentwatch", "generated"]
ONCALL_UID = "consentwatch-oncall"
COMPLIANCE_UID = "consentwatch-compliance"


# -- small helpers --------------------------------------------------------------------------


def query(expr: str, legend: str = "__auto", ref: str = "A") -> Dataquery:
    return (Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE))


def instant_table_query(expr: str, ref: str = "A") -> Dataquery:
    return query(expr, ref=ref).instant().format(PromQueryFormat.TABLE)


def counted(metric: str, window: str, matchers: str = INSTANCE) -> str:
    """Per series: its whole value if it was born within `window`, else its increase."""
    selector = f"{metric}{{{matchers}}}"
    return (f"(({selector} unless {selector} offset {window}) "
            f"or increase({selector}[{window}]))")


def rule(name: str) -> str:
    """The label matchers of one rule's findings (of the providers selected)."""
    return f'{INSTANCE},rule="{name}",provider=~"$provider"'


class SqlQuery(cogvariants.Dataquery):
    """A raw SQL query of Grafana's PostgreSQL datasource (the SDK has no builder for it)."""

    def __init__(self, ref_id: str, sql: str, datasource: DataSourceRef) -> None:
        self.ref_id, self.sql, self.datasource = ref_id, sql, datasource

    def to_json(self) -> dict[str, Any]:
        return {"refId": self.ref_id, "datasource": self.datasource.to_json(),
                "editorMode": "code", "format": "table", "rawQuery": True,
                "rawSql": self.sql}


class SqlQueryBuilder(Builder[cogvariants.Dataquery]):
    def __init__(self, sql: str, datasource: DataSourceRef, ref_id: str = "A") -> None:
        self._query = SqlQuery(ref_id, sql, datasource)

    def build(self) -> SqlQuery:
        return self._query


def thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    return (ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=value, color=color) for value, color in steps]))


def graph(title: str, description: str, *targets: Dataquery, unit: str = "short",
          span: int = 12, bars: bool = False) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).datasource(DATASOURCE)
             .unit(unit).span(span).height(8).min(0)
             .legend(common_builders.VizLegendOptions().show_legend(True)
                     .display_mode(common.LegendDisplayMode.TABLE)
                     .placement(common.LegendPlacement.BOTTOM)
                     .calcs(["lastNotNull", "max"])))
    if bars:
        panel = (panel.draw_style(common.GraphDrawStyle.BARS).fill_opacity(80)
                 .stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
                 .interval("1m"))
    for target in targets:
        panel = panel.with_target(target)
    return panel


def single(title: str, description: str, expr: str, unit: str = "short",
           steps: tuple[tuple[float | None, str], ...] = ((None, "green"),),
           span: int = 6) -> stat.Panel:
    return (stat.Panel().title(title).description(description).datasource(DATASOURCE)
            .with_target(query(expr).instant()).unit(unit).span(span).height(4)
            .thresholds(thresholds(*steps))
            .color_mode(common.BigValueColorMode.BACKGROUND)
            .graph_mode(common.BigValueGraphMode.NONE)
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"])))


def datasource_variable() -> DatasourceVariable:
    return (DatasourceVariable("datasource").label("Prometheus").type("prometheus")
            .current(VariableOption(selected=True, text="Prometheus",
                                    value=PROVISIONED_DATASOURCE_UID)))


def label_variable(name: str, label: str, metric: str) -> QueryVariable:
    """A multi-value variable over the values `metric` has for `label`; All is `.*`."""
    return (QueryVariable(name).label(label).datasource(DATASOURCE)
            .query(f"label_values({metric}{{{JOB}}}, {name})")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*")
            .current(VariableOption(selected=True, text="All", value="$__all")))


def runbook(base_url: str, page: str, title: str = "Runbook") -> DashboardLink:
    """A link to a runbook of docs/runbooks/, published under `base_url` (may be empty)."""
    return (DashboardLink(title).type(DashboardLinkType.LINK).icon("doc")
            .url(f"{base_url}docs/runbooks/{page}").target_blank(True))


def to_dashboard(uid: str, title: str) -> DashboardLink:
    """A link to the other dashboard, keeping the time range and the variables."""
    return (DashboardLink(title).type(DashboardLinkType.LINK).icon("dashboard")
            .url(f"/d/{uid}").keep_time(True).include_vars(True).target_blank(False))


def base(title: str, uid: str, description: str, *variables: QueryVariable) -> Dashboard:
    board = (Dashboard(title).uid(uid).description(description).tags(TAGS)
             .refresh("30s").time("now-6h", "now").timezone("utc")
             .tooltip(DashboardCursorSync.CROSSHAIR).with_variable(datasource_variable()))
    for variable in variables:
        board = board.with_variable(variable)
    return board


# -- the on-call overview ---------------------------------------------------------------------


def oncall(runbook_base: str = "") -> Dashboard:
    """`runbook_base`: where the repository's files are published (empty: its paths)."""
    rate = "$__rate_interval"
    return (
        base("consentwatch on call", ONCALL_UID,
             "Is the pipeline healthy and keeping up? Throughput, consumer lag, watermark "
             "delay, dead letters, worker health. Runbooks: docs/runbooks/.",
             label_variable("instance", "Worker", "up"))
        .link(to_dashboard(COMPLIANCE_UID, "consentwatch compliance"))
        .link(runbook(runbook_base, "README.md", "Runbooks"))
        .with_row(Row("Health"))
        .with_panel(single(
            "Workers up", "Targets of job consentwatch that answered their last scrape.",
            f"sum(up{{{INSTANCE}}})", steps=((None, "red"), (1, "green"))))
        .with_panel(single(
            "Workers down", "Targets of job consentwatch that did not answer (alert "
            "ConsentwatchWorkerDown after 5 minutes).",
            f"count(up{{{INSTANCE}}} == 0) or vector(0)", steps=((None, "green"), (1, "red")))
            .links([runbook(runbook_base, "consentwatch-worker-down.md")]))
        .with_panel(single(
            "Consumer lag", "Records not yet consumed, all topics and partitions.",
            f"sum(consentwatch_consumer_lag_records{{{INSTANCE}}}) or vector(0)",
            steps=((None, "green"), (10_000, "orange"), (100_000, "red"))))
        .with_panel(single(
            "Worst watermark delay", "The partition furthest behind the wall clock (alert "
            "ConsentwatchWatermarkBehind above 15 minutes).",
            f"max(consentwatch_watermark_lag_seconds{{{INSTANCE}}})", unit="s",
            steps=((None, "green"), (300, "orange"), (900, "red"))))
        .with_panel(graph(
            "Worker up", "1 when Prometheus could scrape the worker, 0 when not.",
            query(f"up{{{INSTANCE}}}", "{{instance}}"), span=12)
            .links([runbook(runbook_base, "consentwatch-worker-down.md"),
                    runbook(runbook_base, "consentwatch-no-workers-up.md",
                            "Runbook: no workers up")]))
        .with_panel(
            table.Panel().title("Build").description("Version and rule catalogue of each "
                                                     "worker.")
            .datasource(DATASOURCE).span(12).height(8)
            .with_target(instant_table_query(f"consentwatch_build_info{{{INSTANCE}}}")))
        .with_row(Row("Throughput"))
        .with_panel(graph(
            "Events consumed", "Events read and decoded per second, by event type.",
            query(f"sum by (type) (rate(consentwatch_events_consumed_total{{{INSTANCE}}}[{rate}]))",
                  "{{type}}"), unit="ops"))
        .with_panel(graph(
            "Duplicates and late events", "Events ignored as duplicates (an event id seen "
            "before), events that arrived after the watermark (applied, may amend), and "
            "late facts beyond the amendment horizon (applied; decisions older than the "
            "horizon are no longer kept to amend: see the dead-letters runbook).",
            query(f"sum(rate(consentwatch_duplicate_events_total{{{INSTANCE}}}[{rate}]))",
                  "duplicates", "A"),
            query(f"sum(rate(consentwatch_late_events_total{{{INSTANCE}}}[{rate}]))", "late", "B"),
            query(f"sum(rate(consentwatch_late_events_beyond_horizon_total{{{INSTANCE}}}"
                  f"[{rate}]))", "beyond horizon", "C"),
            unit="ops"))
        .with_panel(graph(
            "Findings raised", "Findings per second by rule (the compliance dashboard has "
            "the detail).",
            query(f"sum by (rule) (rate(consentwatch_findings_total{{{INSTANCE}}}[{rate}]))",
                  "{{rule}}"), unit="ops"))
        .with_panel(graph(
            "Decision latency p99", "99th percentile of the time from a trigger to its "
            "finding: since its event time (includes the allowed lateness and notice grace) "
            "and since it was ingested.",
            query("histogram_quantile(0.99, sum by (le, since) (rate("
                  f"consentwatch_finding_latency_seconds_bucket{{{INSTANCE}}}[{rate}])))",
                  "p99 since {{since}}"), unit="s"))
        .with_row(Row("Lag"))
        .with_panel(graph(
            "Consumer lag by topic", "Records behind the end of each topic (read at scrape "
            "time). Growing while nothing is consumed: ConsentwatchPipelineStalled.",
            query(f"sum by (topic) (consentwatch_consumer_lag_records{{{INSTANCE}}})", "{{topic}}"))
            .links([runbook(runbook_base, "consentwatch-pipeline-stalled.md")]))
        .with_panel(graph(
            "Watermark delay by partition", "Wall clock minus each partition's watermark. "
            "With live traffic, healthy is about allowed lateness + idle timeout (a minute); "
            "after events with old timestamps (a back-fill, a replayed file) it stays as far "
            "behind as they were.",
            query("max by (instance, partition) "
                  f"(consentwatch_watermark_lag_seconds{{{INSTANCE}}})",
                  "{{instance}} p{{partition}}"), unit="s")
            .links([runbook(runbook_base, "consentwatch-watermark-behind.md")]))
        .with_row(Row("Dead letters and state"))
        .with_panel(graph(
            "Dead letters", "Records sent to the dead-letter topic per second, by reason.",
            query(f"sum by (reason) (rate(consentwatch_dead_letters_total{{{INSTANCE}}}[{rate}]))",
                  "{{reason}}"), unit="ops", span=8)
            .links([runbook(runbook_base, "consentwatch-dead-letters.md"),
                    runbook(runbook_base, "consentwatch-dead-letter-rate-high.md",
                            "Runbook: dead-letter rate")]))
        .with_panel(graph(
            "Pending decisions", "Triggers waiting for the watermark (open notice deadlines).",
            query(f"sum by (instance) (consentwatch_pending_decisions{{{INSTANCE}}})",
                  "{{instance}}"), span=8)
            .links([runbook(runbook_base, "consentwatch-decisions-stuck.md")]))
        .with_panel(graph(
            "State size", "Subjects held in the engine's state.",
            query(f"sum by (instance) (consentwatch_state_subjects{{{INSTANCE}}})", "{{instance}}"),
            span=8))
    )


# -- the compliance view ------------------------------------------------------------------


# Account ids are never metric labels (they identify customers and are unbounded), so
# the ranking by account reads the evidence ledger's `entries` (streams/evidence/ledger/
# postgres.py): findings whose trigger occurred in the time range (occurred_at, epoch ms),
# less those a RETRACTED amendment names. Severity and an amendment's kind and finding_id
# are not columns: they are read from the leaf's JSON. Grafana writes the time macros as
# plain integers (int4 in PostgreSQL): seconds * 1000 overflows it unless cast to bigint.
TOP_ACCOUNTS_SQL = """\
WITH retracted AS (
  SELECT convert_from(leaf, 'UTF8')::jsonb ->> 'finding_id' AS finding_id
  FROM entries
  WHERE kind = 'amendment' AND convert_from(leaf, 'UTF8')::jsonb ->> 'kind' = 'RETRACTED'
), open_findings AS (
  SELECT f.account_id, f.rule, f.occurred_at,
         coalesce(convert_from(f.leaf, 'UTF8')::jsonb ->> 'severity', 'unknown') AS severity
  FROM entries f
  WHERE f.kind = 'finding'
    AND f.occurred_at >= $__unixEpochFrom()::bigint * 1000
    AND f.occurred_at < $__unixEpochTo()::bigint * 1000
    AND NOT EXISTS (SELECT 1 FROM retracted r WHERE r.finding_id = f.entry_id)
), by_rule AS (
  SELECT account_id, rule, severity, count(*) AS findings, min(occurred_at) AS oldest
  FROM open_findings
  GROUP BY account_id, rule, severity
)
SELECT account_id AS "Account",
       sum(findings)::bigint AS "Open findings",
       string_agg(rule || ' ' || severity || ': ' || findings, ', '
                  ORDER BY findings DESC, rule, severity) AS "By rule and severity",
       floor(extract(epoch FROM now()) - min(oldest) / 1000.0)::bigint AS "Oldest open finding"
FROM by_rule
GROUP BY account_id
ORDER BY "Open findings" DESC, "Account"
LIMIT 10
"""


def top_accounts() -> table.Panel:
    return (
        table.Panel().title("Top accounts").description(
            "The ten accounts with the most open findings (not retracted by an amendment) "
            "whose trigger occurred in the time range, all rules and providers, from the "
            "evidence ledger: account ids are never Prometheus labels. Oldest open finding: "
            "how long ago its trigger occurred.")
        .datasource(LEDGER_DATASOURCE).span(12).height(10)
        .with_target(SqlQueryBuilder(TOP_ACCOUNTS_SQL, LEDGER_DATASOURCE))
        .override_by_name("Oldest open finding", [DynamicConfigValue(id_val="unit",
                                                                     value="dtdurations")]))


def _alert_steps(threshold: int) -> tuple[tuple[float | None, str], ...]:
    """Red where the rule's alert fires (more than `threshold` findings); orange below,
    from the first finding, for a rule that alerts only on a rate."""
    if threshold == 0:
        return ((None, "green"), (1, "red"))
    return ((None, "green"), (1, "orange"), (threshold + 1, "red"))


def alerting_rule_stats(runbook_base: str) -> list[stat.Panel]:
    """One stat per rule that alerts (the rule registry, streams/engine/rules/), red where
    its alert's threshold is passed in the time range, linked to its alert's runbook."""
    catalogue = load_catalogue()
    panels = []
    for rule_ in REGISTRY:
        if rule_.alert is None:
            continue
        page = runbook_page(rule_.alert.name).rsplit("/", 1)[1]
        panels.append(single(
            catalogue[rule_.id].title, f"New {rule_.id} findings (alert: {rule_.alert.name}).",
            f"sum({counted('consentwatch_findings_total', '$__range', rule(rule_.id))})"
            " or vector(0)", span=6, steps=_alert_steps(rule_.alert.threshold))
            .links([runbook(runbook_base, page)]))
    return panels


def review_desk(runbook_base: str) -> list[Any]:
    """The review desk's row: what is still open, by rule, severity and triage status, and
    the age of the oldest open critical finding (its alert pages past 24 hours)."""
    open_ = f"consentwatch_desk_open_findings{{{DESK}}}"
    oldest = "consentwatch_desk_oldest_open_finding_age_seconds"
    return [
        Row("Review desk"),
        single("Open findings", "Findings not resolved by a review and not inside an "
               "exception in force (the review desk), rules as selected.",
               f"sum({open_}) or vector(0)", span=6, steps=((None, "green"), (1, "orange"))),
        single("Oldest open critical finding", "How long ago the oldest open CRITICAL "
               "finding was detected; its alert (ConsentwatchCriticalFindingOpen24h) pages "
               "past 24 hours.",
               f'max({oldest}{{job="consentwatch-desk",severity="CRITICAL"}}) or vector(0)',
               unit="dtdurations", span=6,
               steps=((None, "green"), (1, "orange"), (86400, "red")))
        .links([runbook(runbook_base, "consentwatch-critical-finding-open24h.md")]),
        graph("Open findings by severity", "Open findings over time, by the rule's severity.",
              query(f"sum by (severity) ({open_})", "{{severity}}"), span=12),
        graph("Open findings by rule and status", "Open findings over time, by rule and "
              "triage status (open, acknowledged, assigned).",
              query(f"sum by (rule, status) ({open_})", "{{rule}} {{status}}"), span=12),
    ]


def compliance(runbook_base: str = "") -> Dashboard:
    findings = "consentwatch_findings_total"
    board = (
        base("consentwatch compliance", COMPLIANCE_UID,
             "What consentwatch found: findings by rule, severity and provider over time, "
             "top providers, amendments. Findings are evidence; the numbers of record are in "
             "the evidence ledger.",
             label_variable("instance", "Worker", "up"),
             label_variable("rule", "Rule", "consentwatch_findings_total"),
             label_variable("provider", "Provider", "consentwatch_findings_total"))
        .link(to_dashboard(ONCALL_UID, "consentwatch on call"))
        .link(runbook(runbook_base, "README.md", "Runbooks"))
        .with_row(Row("In the selected time range"))
        .with_panel(single(
            "Findings", "New findings in the time range, all rules.",
            f"sum({counted(findings, '$__range', FINDINGS)}) or vector(0)", span=6,
            steps=((None, "green"), (1, "orange"))))
        .with_panel(single(
            "Amendments", "Decisions changed by late events (retracted, evidence changed, "
            "would raise).",
            f"sum({counted('consentwatch_amendments_total', '$__range')}) or vector(0)",
            span=6, steps=((None, "green"), (1, "orange")))))
    for panel in alerting_rule_stats(runbook_base):
        board = board.with_panel(panel)
    board = (
        board
        .with_row(Row("Over time"))
        .with_panel(graph(
            "Findings by rule", "New findings per interval, by rule.",
            query(f"sum by (rule) ({counted(findings, '$__interval', FINDINGS)})", "{{rule}}"),
            bars=True))
        .with_panel(graph(
            "Findings by severity", "New findings per interval, by the rule's severity.",
            query(f"sum by (severity) ({counted(findings, '$__interval', FINDINGS)})",
                  "{{severity}}"),
            bars=True))
        .with_panel(graph(
            "Findings by provider", "New findings per interval, by enrichment provider "
            "(the first 32 providers by name, the rest as other).",
            query(f"sum by (provider) ({counted(findings, '$__interval', FINDINGS)})",
                  "{{provider}}"),
            bars=True))
        .with_panel(graph(
            "Amendments by kind", "Amendments per interval: RETRACTED, EVIDENCE_CHANGED, "
            "WOULD_RAISE.",
            query(f"sum by (kind) ({counted('consentwatch_amendments_total', '$__interval')})",
                  "{{kind}}"), bars=True))
        .with_row(Row("Top"))
        .with_panel(
            bargauge.Panel().title("Top providers").description(
                "The ten providers with the most findings in the time range.")
            .datasource(DATASOURCE).span(12).height(10).unit("short").min(0)
            .with_target(query(
                f"topk(10, sum by (provider) ({counted(findings, '$__range', FINDINGS)}))",
                "{{provider}}").instant())
            .orientation(common.VizOrientation.HORIZONTAL)
            .display_mode(common.BarGaugeDisplayMode.BASIC)
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"])))
        .with_panel(top_accounts())
    )
    for panel in review_desk(runbook_base):
        board = board.with_row(panel) if isinstance(panel, Row) else board.with_panel(panel)
    return board


# -- output -------------------------------------------------------------------------------


DASHBOARDS = {"oncall.json": oncall, "compliance.json": compliance}


def render(name: str, runbook_base: str = "") -> str:
    """The dashboard's JSON as committed: sorted keys, two spaces, a final newline."""
    base_url = runbook_base.rstrip("/") + "/" if runbook_base else ""
    built: Any = DASHBOARDS[name](base_url).build()
    for number, panel in enumerate(built.panels, 1):  # stable ids, in layout order
        panel.id_val = number
    return JSONEncoder(sort_keys=True, indent=2).encode(built) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if a committed file differs")
    parser.add_argument("--out", type=Path, default=HERE, help="where to write the JSON")
    parser.add_argument("--runbook-base", default="",
                        help="URL the repository's files are published at, before each "
                             "runbook link's docs/runbooks/ path (default: none)")
    args = parser.parse_args(argv)
    if args.runbook_base and args.check:
        parser.error("--check compares the committed files, built without a runbook base")
    stale = []
    for name in DASHBOARDS:
        path = args.out / name
        content = render(name, args.runbook_base)
        if args.check:
            if not path.exists() or path.read_text() != content:
                stale.append(name)
        else:
            path.write_text(content)
    if stale:
        print(f"stale: {', '.join(stale)}; run .venv/bin/python dashboards/build.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
